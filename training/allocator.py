"""The allocator policy of training processes, set by the process itself.

glibc hands big freed blocks back to the OS (munmap, trim) and takes them again on the next
step; first-touch memory is slow on these VMs, so torch training stalled for seconds per step.
Keeping freed memory in the process (no mmap for big blocks, no trimming) removes the stalls.
That is right for a training loop that reuses the same sizes every step and wrong for a
long-running service, which would keep the peak of its largest request for ever; so it is set
here, by mallopt at start-up, instead of by MALLOC_* variables that every process started from
the same shell (the services too) would inherit.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
TRIM_THRESHOLD = 2**31 - 1  # the largest an int takes: never trim in practice


def hold_freed_memory() -> bool:
    """Set this process's glibc allocator as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2 GiB would;
    False where the C library is not glibc (nothing to do there)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_MAX, 0))

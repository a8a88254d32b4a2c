"""The training processes' allocator policy (training/allocator.py) and who gets it."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys, numpy as np, psutil
if sys.argv[1] == "hold":
    from training.allocator import hold_freed_memory
    assert hold_freed_memory()
elif sys.argv[1].startswith("cli:"):
    from training.cli import main
    try:
        main(["inspect", sys.argv[1][4:]], standalone_mode=False)
    except Exception:
        pass  # an empty folder is no dataset; the command ran
before = psutil.Process().memory_info().rss
a = np.ones(300 * 2**20, np.uint8)  # touched: 300 MiB resident
del a
print((psutil.Process().memory_info().rss - before) / 2**20)
"""


def _kept_mib(mode: str) -> float:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* from the caller's shell
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60, env=env,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_keeps_freed_memory_and_everything_else_returns_it():
    assert _kept_mib("hold") > 250  # training: the block stays for the next step
    assert _kept_mib("default") < 50  # a service (glibc's defaults): a large request's memory goes back


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_training_cli_sets_the_policy_itself(tmp_path):
    """Any `facegen-train` command (here `inspect` of an empty folder) leaves its process keeping
    freed memory, with no MALLOC_* in its environment."""
    assert _kept_mib(f"cli:{tmp_path}") > 250

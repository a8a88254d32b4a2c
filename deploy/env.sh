# Sourced by the README's commands and CI: creates/updates the project's virtual environment
# (.venv in the repository root) and sets the process environment every torch process needs.
# Usage: source deploy/env.sh [EXTRAS]   (default extras: train,serve,cpu,dev)
set -euo pipefail
FACEGEN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-train,serve,cpu,dev}"
venv="$FACEGEN_ROOT/.venv"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[facegen] creating $venv"
  "$py" -m venv "$venv"
fi
# Reinstall only when pyproject.toml or the extras changed (a stamp holds their hash).
stamp="$venv/.facegen-installed"
want="$(cat "$FACEGEN_ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[facegen] installing facegen[$extras] into $venv"
  # torch==2.13.0 is pinned in the train extra: pip takes the local CPU wheel, never a CUDA build
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$FACEGEN_ROOT[$extras]"
  echo "$want" > "$stamp"
fi
# gRPC stubs from protos/ (regenerated only when a .proto is newer than its stub)
case "$extras" in *serve*) "$venv/bin/python" -m services.core.proto >/dev/null ;; esac
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
# glibc returns big freed tensors to the OS every step and taking memory back is very slow on
# these VMs: without these, torch training stalls 4–67 s per step (see the developers' guide).
export MALLOC_MMAP_MAX_=0
export MALLOC_TRIM_THRESHOLD_=100000000000
export PYTHONUNBUFFERED=1
cd "$FACEGEN_ROOT"

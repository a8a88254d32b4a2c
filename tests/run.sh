#!/usr/bin/env bash
# The test command of the README: sets up .venv and runs the default test suite.
# Extra arguments go to pytest (e.g. bash tests/run.sh -k layouts).
source "$(dirname "$0")/../deploy/env.sh"
python -m pytest -q "$@"

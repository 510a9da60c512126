#!/usr/bin/env bash
# The test suite on a fresh machine: install, then run every test (offline, CPU).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/venv.sh test
exec "${VENV:-.venv}/bin/python" -m pytest "$@"

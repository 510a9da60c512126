#!/usr/bin/env bash
# The CPU demo on a fresh machine: install, then preprocess the bundled clips, train, decode a row.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/venv.sh demo
exec "${VENV:-.venv}/bin/axolotl-orpheus" demo "$@"

#!/usr/bin/env bash
# Create or update the project's virtualenv (.venv, or $VENV) with axolotl-orpheus and the extra "$1".
# torch goes in first and alone, so that axolotl's torch requirement is already met and pip never
# swaps in another build: set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu on a CPU machine
# whose pip would otherwise fetch the CUDA build (GBs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=${VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"$venv/bin/python" -m pip install -q -e ".[$1]"
"$venv/bin/python" -c 'import torch; print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")'

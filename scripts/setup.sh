#!/usr/bin/env bash
# Create .venv and install principlelab into it (torch's CPU build first). `setup.sh test` adds test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# The CPU build of torch must come first: a plain `torch` requirement would pull the CUDA wheels.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install --disable-pip-version-check -q torch==2.13.0
fi
extras=""
if [ "${1:-}" = "test" ]; then extras="[test]"; fi
.venv/bin/pip install --disable-pip-version-check -q -e ".${extras}" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import principlelab, torch; print(f'principlelab {principlelab.__version__}, torch {torch.__version__}')"

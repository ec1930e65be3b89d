#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite (CPU only; GPU and large-data tests are
# behind the `gpu` and `large` markers). pytest's exit code 5 (no tests ran) fails this script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The web page's end-to-end test drives a headless Chromium. Install Debian's chromium and
# chromium-driver when they are missing and apt-get can (root); otherwise that one test skips.
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing chromium and chromium-driver for the browser test (apt-get)..." >&2
    # bounded: an unreachable mirror must not stall the test run
    (timeout 300 apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
        || (timeout 120 apt-get update -q >/dev/null 2>&1 && timeout 300 apt-get install -y -q chromium chromium-driver >/dev/null 2>&1)) \
        || echo "could not install chromium; the browser test will be skipped" >&2
fi
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"

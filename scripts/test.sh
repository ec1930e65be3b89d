#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite (CPU only; GPU and large-data tests are
# behind the `gpu` and `large` markers). Arguments go to pytest; when they select no test (pytest's
# exit code 5, e.g. `-m gpu` with no gpu tests) this script fails and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The web page's end-to-end test drives a headless Chromium. Install Debian's chromium and
# chromium-driver when they are missing and apt-get can (root). With CI=true a browser that cannot
# be had fails the run (here, and again in the test itself) instead of skipping the test.
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing chromium and chromium-driver for the browser test (apt-get)..." >&2
    # bounded: an unreachable mirror must not stall the test run
    (timeout 300 apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
        || (timeout 120 apt-get update -q >/dev/null 2>&1 && timeout 300 apt-get install -y -q chromium chromium-driver >/dev/null 2>&1)) \
        || echo "could not install chromium and chromium-driver" >&2
fi
if ! command -v chromedriver >/dev/null 2>&1 || ! { command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null 2>&1; then
    case "${CI:-}" in
        true|1|yes) echo "scripts/test.sh: FAILED: CI=true and no chromium + chromedriver: the browser test of embed serve cannot run" >&2
                    exit 1 ;;
        *) echo "no chromium + chromedriver: the browser test of embed serve will be skipped (CI=true makes this an error)" >&2 ;;
    esac
fi
export HF_HUB_OFFLINE=1
# The whole suite (no arguments) runs in two pytest workers (pytest-xdist) on machines with two or more
# cores: 1.3x the one-process run on 2 cores (532 s against 685 s, measured), since much of the suite
# waits on subprocesses, sockets and files. With arguments it runs in one process, as pytest alone
# would (xdist ends a run whose -m or -k selects nothing with an internal error instead of exit 5).
# EMBEDSTORE_TEST_WORKERS=N sets the workers of the whole-suite run (0: one process).
workers=0
if [ "$#" -eq 0 ]; then
    workers="${EMBEDSTORE_TEST_WORKERS:-$([ "$(nproc)" -ge 2 ] && echo 2 || echo 0)}"
fi
rc=0
# --dist loadgroup: the files marked xdist_group (Ray's cluster, stores built by a real encoder) run
# on one worker each, so their module fixtures are built once, not once per worker; the rest as load.
dist=()
[ "$workers" != 0 ] && dist=(--dist loadgroup)
.venv/bin/python -m pytest -n "$workers" ${dist[@]+"${dist[@]}"} "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    args=""
    for a in "$@"; do case "$a" in *[[:space:]]*) args+=" '$a'" ;; *) args+=" $a" ;; esac; done
    # pytest exits 5 both when nothing is collected and when a -m/-k expression deselects everything
    echo "scripts/test.sh: FAILED: no test was selected by: pytest${args} (pytest exit 5). A marker or path that selects" \
         "nothing is an error, not a pass: check its spelling (markers: gpu, large, slow) and that those tests exist." >&2
fi
exit "$rc"

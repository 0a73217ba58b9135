#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one short script (the numbers go into the README with the card's name).
#
#   bash benchmarks/gpu_checks.sh OUT_DIR
#
# Runs on a machine whose Python already has torch (CUDA), timm, transformers, accelerate, pillow, pyarrow
# and pandas, and no network: the remaining dependencies come as wheels in .whl/ (pip download ... -d .whl),
# and mmrec is put on the path as its three source folders laid out as one package.
#  1. the CUDA tests (the nvJPEG decoding path against the CPU path, bf16 tower);
#  2. benchmarks/stream_targets.py with the towers trained end to end in bf16 on the GPU (the space and the
#     report come back in OUT_DIR);
#  3. benchmarks/align_throughput.py on the GPU, fp32 against bf16, a ViT-S/16 image tower at 224 px.
set -u -o pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
pkg=/tmp/mmrec_src
rm -rf "$pkg" && mkdir -p "$pkg" && cp -r mmrec "$pkg/" && for d in encoders fusion datasets; do cp -r "$d" "$pkg/mmrec/$d"; done
export PYTHONPATH="$pkg:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L; python3 -c "import torch, timm, transformers; print('torch', torch.__version__, 'timm', timm.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"

echo "== 1. CUDA tests"
repo=$PWD  # run from elsewhere: the checkout's own mmrec/ folder must not shadow the laid-out package
(cd /tmp && timeout 120 python3 -m pytest -q -p no:cacheprovider "$repo/tests/test_encoders_images.py" -k cuda 2>&1 | tail -n 5)

echo "== 2. stream targets, towers trained on the GPU (bf16)"
timeout 400 python3 benchmarks/stream_targets.py --out /tmp/stream_targets --items 300 --train-towers \
  --renderings 16 --epochs 60 --lr 3e-4 --eval-every 5 --mixed-precision bf16 --skip-memory > "$out/stream_targets.log" 2>&1
echo "exit $?"; tail -n 60 "$out/stream_targets.log" | grep -v "^ *\"video\"" | tail -n 45
mkdir -p "$out/space" && cp /tmp/stream_targets/space/* "$out/space/" 2>/dev/null
cp /tmp/stream_targets/report.json "$out/" 2>/dev/null

echo "== 3. alignment throughput, fp32 vs bf16"
for mp in no bf16; do
  timeout 90 python3 benchmarks/align_throughput.py --devices cuda --image-size 224 --patch-size 16 --depth 12 \
    --embed-dim 384 --heads 6 --global-batch 256 --items 4096 --epochs 3 --mixed-precision $mp \
    --out "$out/align_$mp.json" 2>&1 | grep -E "cuda|Error|error" | tail -n 5
done
ls -la "$out" "$out/space"

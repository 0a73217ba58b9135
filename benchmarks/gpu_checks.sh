#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one short script (the numbers go into the README with the card's name).
#
#   bash benchmarks/gpu_checks.sh OUT_DIR [SECTION ...]      (default sections: tests stream-tower align)
#
# Runs on a machine whose Python already has torch (CUDA), timm, transformers, accelerate, pillow, pyarrow
# and pandas, and no network: the remaining dependencies come as wheels in .whl/ (pip download ... -d .whl),
# and mmrec is put on the path as its three source folders laid out as one package. Sections:
#   tests         the CUDA tests (the nvJPEG decoding path against the CPU path, bf16 tower);
#   stream-tower  benchmarks/stream_targets.py with whole-screen towers trained end to end in bf16 on the GPU
#                 (synthetic world; the space and the report come back in OUT_DIR);
#   align         benchmarks/align_throughput.py on the GPU, fp32 against bf16, a ViT-S/16 image tower at 224 px;
#   stream-hm     (issue 18 part 6) 1,000 H&M articles packed into .gpu/ by
#                 `benchmarks/device_pack.py pack --stream-items 1000`: the README's windowed recipe (towers
#                 trained end to end, photo check) trained in bf16 at the CPU recipe's input, 24x16, and at four
#                 times its pixels, 48x32, side by side; grounding on the GPU, and each run's throughput against
#                 bare decord decoding of the same file in the same run (stream_targets' measurement). Drawing
#                 the training pages is the CPU's work: each run draws its renderings in 7 processes.
set -u -o pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR [SECTION ...]}
shift
sections=${*:-tests stream-tower align}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
pkg=/tmp/mmrec_src
rm -rf "$pkg" && mkdir -p "$pkg" && cp -r mmrec "$pkg/" && for d in encoders fusion datasets; do cp -r "$d" "$pkg/mmrec/$d"; done
export PYTHONPATH="$pkg:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L; python3 -c "import torch, timm, transformers; print('torch', torch.__version__, 'timm', timm.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
nproc; free -g | head -n 2

for section in $sections; do case $section in
tests)
  echo "== CUDA tests"
  repo=$PWD  # run from elsewhere: the checkout's own mmrec/ folder must not shadow the laid-out package
  (cd /tmp && timeout 120 python3 -m pytest -q -p no:cacheprovider "$repo/tests/test_encoders_images.py" -k cuda 2>&1 | tail -n 5)
  ;;
stream-tower)
  echo "== stream targets, whole-screen towers trained on the GPU (bf16)"
  timeout 400 python3 benchmarks/stream_targets.py --out /tmp/stream_targets --items 300 --train-towers \
    --renderings 16 --epochs 60 --lr 3e-4 --eval-every 5 --mixed-precision bf16 --skip-memory > "$out/stream_targets.log" 2>&1
  echo "exit $?"; tail -n 60 "$out/stream_targets.log" | grep -v "^ *\"video\"" | tail -n 45
  mkdir -p "$out/space" && cp /tmp/stream_targets/space/* "$out/space/" 2>/dev/null
  cp /tmp/stream_targets/report.json "$out/" 2>/dev/null
  ;;
align)
  echo "== alignment throughput, fp32 vs bf16"
  for mp in no bf16; do
    timeout 90 python3 benchmarks/align_throughput.py --devices cuda --image-size 224 --patch-size 16 --depth 12 \
      --embed-dim 384 --heads 6 --global-batch 256 --items 4096 --epochs 3 --mixed-precision $mp \
      --out "$out/align_$mp.json" 2>&1 | grep -E "cuda|Error|error" | tail -n 5
  done
  ;;
stream-hm)
  echo "== H&M windowed towers trained on the GPU (bf16) at 24x16 and 48x32, side by side"
  python3 benchmarks/device_pack.py unpack --packed .gpu --out /tmp/hm || exit 1
  recipe="--catalog hm --hm /tmp/hm --items 1000 --windows fit --train-towers --lr 3e-4 --renderings 16
    --window-crops 3 --negative-crops 2 --negative-screens 3000 --overlays 0.3 --augment --jpeg-share 0.5 --patch 4
    --epochs 16 --eval-every 4 --photo-check --mixed-precision bf16 --skip-memory --render-workers 7"
  for input in 24x16 48x32; do
    (timeout "${STREAM_HM_TIMEOUT:-420}" python3 benchmarks/stream_targets.py $recipe --window-input $input \
       --out /tmp/stream_hm_$input --checkpoint-dir /tmp/stream_hm_$input/ckpt > "$out/stream_hm_$input.log" 2>&1
     echo "$input exit $?"; cp /tmp/stream_hm_$input/report.json "$out/stream_hm_$input.json" 2>/dev/null) &
  done
  wait
  for input in 24x16 48x32; do
    echo "-- $input"; grep -v "^ *\"video\"" "$out/stream_hm_$input.log" | grep -E "train_seconds|device|frame_precision|frame_recall|segment_recall|pages_found|\"pages\"|ratio|fps|Error|error" | head -n 40
  done
  ;;
*) echo "unknown section $section"; exit 2 ;;
esac; done
ls -la "$out"

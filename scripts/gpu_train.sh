#!/usr/bin/env bash
# One GPU session (about 8 minutes of an H100): train glandseg-unet-gpu, glandseg-maskrcnn-gpu and the poster's
# recipe side by side on the one GPU, each tuned on val; score the poster's run on the packed Test A/B copies;
# put back through $OUT what fits (scripts/gpu_collect.py).
#
# Here:  python -m glandseg_core pack --out cache/glas-device --split train val
#        python -m glandseg_core pack --out cache/glas-device --split testA testB --lossless --quality 90
# There: bash scripts/gpu_train.sh cache/glas-device 5.5
# A dry run on CPU: DEVICE=cpu EXTRA="--set train_max_images=4 train_steps_per_epoch=2" bash scripts/gpu_train.sh DIR 0.2
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:-cache/glas-device}
minutes=${2:-5.5}
out=${OUT:-runs/gpu-out}
runs=${RUNS:-runs/gpu}
device=${DEVICE:-cuda}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
mkdir -p "$runs" "$out"
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true

train() {
  local name=$1; shift
  # shellcheck disable=SC2086
  # Each run its own training lock: these three share the GPU on purpose.
  GLANDSEG_LOCK_DIR="$runs/lock-$name" $PY -m glandseg_core train --data "$data" --out "$runs/$name" --device "$device" --no-bar \
      --time-limit "$minutes" "$@" ${EXTRA:-} >"$runs/$name.out" 2>&1
  echo "$name: exit $? after $SECONDS s"
}
poster() {  # the poster's recipe, then its test scores: they travel back, its weights (R50-FPN, 84 MiB) cannot
  # pretrained=none: the device cannot download the COCO weights (carry them in $TORCH_HOME to start from COCO)
  train poster --preset poster-maskrcnn --epochs 30 --set train_val_every=3 pretrained=none --workers 1
  [ -f "$runs/poster/tuning.json" ] || return
  $PY -m glandseg_core export "$runs/poster" "$runs/poster-model" --overwrite --fp16
  $PY -m glandseg_core evaluate --model "$runs/poster-model" --data "$data" --split testA testB \
      --out "$runs/poster-eval" --device "$device" --save-predictions >"$runs/poster-eval.out" 2>&1
  echo "poster evaluation: exit $? after $SECONDS s"
  rm -f "$runs/poster-model/weights.pt"
}
SECONDS=0
train unet --preset glandseg-unet-gpu --workers 7 &
train maskrcnn --preset glandseg-maskrcnn-gpu --workers 5 &
poster &
wait
for name in unet maskrcnn poster poster-eval; do tail -n 4 "$runs/$name.out"; done
$PY -m scripts.gpu_collect "$runs" "$out"
ls -la "$out"
echo "all done after $SECONDS s"

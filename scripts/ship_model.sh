#!/usr/bin/env bash
# Ship a finished training run as trained_models/<name>: fp16 weights, config, post-processing tuned on val,
# the evaluation on val, Test A and Test B (with and without test-time augmentation) and the model card.
# Usage: scripts/ship_model.sh RUN_DIR NAME "the exact train command" [NOTES_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
run=$1; name=$2; cmd=$3; notes=${4:-}
dest=trained_models/$name
PY=.venv/bin/python
$PY -m glandseg_core export "$run" "$dest" --overwrite
$PY -m glandseg_core evaluate --model "$dest" --split val --out "$dest/val"
$PY -m glandseg_core evaluate --model "$dest" --split testA testB --out "$dest" --save-predictions --relabel-gt
mv "$dest/summary.json" "$dest/metrics.json"
$PY -m glandseg_core evaluate --model "$dest" --split val testA testB --tta --out "$dest/tta"
rm -f "$dest/val/per_image.csv" "$dest/tta/per_image.csv"
$PY -m glandseg_core card "$dest" --run "$run" --command "$cmd" ${notes:+--notes "$notes"}
echo "shipped $dest"

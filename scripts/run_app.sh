#!/usr/bin/env bash
# Install everything, then open the dashboard (http://localhost:8501).
set -euo pipefail
cd "$(dirname "$0")/.."
GLANDSEG_NO_BROWSER=1 bash scripts/setup.sh
# Export the shipped models for the CPU engine once (cached), so their first use in the dashboard takes seconds.
.venv/bin/python -m scripts.prepare_engines trained_models/unet trained_models/maskrcnn >/dev/null 2>&1 ||
  echo "note: the engine cache is built at the models' first use (or PyTorch runs them)"
exec .venv/bin/streamlit run app.py "$@"

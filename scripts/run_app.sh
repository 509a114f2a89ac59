#!/usr/bin/env bash
# Install everything, then open the dashboard (http://localhost:8501).
set -euo pipefail
cd "$(dirname "$0")/.."
GLANDSEG_NO_BROWSER=1 bash scripts/setup.sh
exec .venv/bin/streamlit run app.py "$@"

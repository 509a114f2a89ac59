#!/usr/bin/env bash
# Install everything, then run the whole test suite (CPU, well under 15 minutes on 2 cores). Arguments go to
# pytest: `-m "not slow"` is the fast lane (under 3 minutes), `--runbrowser` adds the Chromium flows.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export GLANDSEG_DATA="${GLANDSEG_DATA:-$(cd .. && pwd)/shared/glas}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=10 tests "$@"

#!/usr/bin/env bash
# Create .venv and install glandseg with its dashboard, engine and test extras (idempotent): the pinned versions
# of requirements-app.txt, requirements-engine.txt (OpenVINO and ONNX Runtime for faster CPU inference; skipped
# with GLANDSEG_NO_ENGINE=1) and requirements-dev.txt (all include requirements.txt), then the package itself in
# editable mode, which adds the `glandseg` command. Debian's chromium is installed for the browser test when we
# are root and it is missing (the test skips itself without it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
ENGINE=(-r requirements-engine.txt)
[ "${GLANDSEG_NO_ENGINE:-0}" = 1 ] && ENGINE=()
"${PIP[@]}" -r requirements-app.txt "${ENGINE[@]}" -r requirements-dev.txt
"${PIP[@]}" --no-deps -e .
# the bundled samples' results for the dashboard's first visit: shipped ones still matching the models are kept,
# others computed now (idempotent; python -m glandseg_dashboard.precompute)
.venv/bin/python -m glandseg_dashboard.precompute >/dev/null || echo "note: the samples' results will be computed at the dashboard's first visit"
if [ "${GLANDSEG_NO_BROWSER:-0}" != 1 ] && [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "note: chromium could not be installed; the browser test will be skipped"
fi

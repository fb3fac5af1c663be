#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): every figure only a GPU can measure, in one run of ~6 min on one H200,
# appended to bench/RESULTS.md. `bash bench/gpu.sh --dry-run` runs it CPU-sized and only prints (CI runs it).
#
# On a GPU machine that cannot reach the package registries (a lent device), carry the wheels this project
# needs beyond the machine's own PyTorch: `bash bench/gpu_wheels.sh` here downloads them into .whl/; this
# script installs them into /tmp/site when .whl/ is present and runs the package from src/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != "--dry-run" ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:src${PYTHONPATH:+:$PYTHONPATH}
fi
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONUNBUFFERED=1 TRL_EXPERIMENTAL_SILENCE=1 HF_HUB_OFFLINE=1
if [ "${1:-}" = "--dry-run" ]; then
  exec "$PY" bench/gpu_check.py "$@"
fi
exec "$PY" bench/gpu_check.py --append "$@"

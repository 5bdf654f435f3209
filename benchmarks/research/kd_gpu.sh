#!/usr/bin/env bash
# The KD experiment of issue 21 on one H200 (docs/RECEIVER.md, "A scenario for the KD question (issue 21)").
#
# Here first: bash benchmarks/research/kd_gpu_wheels.sh   (fills .whl/, ~15 MB)
# Then the device tool: run(command="bash benchmarks/research/kd_gpu.sh", carry=[".whl"], timeout_s=600)
# On a CPU, under a minute: bash benchmarks/research/kd_gpu.sh --smoke   (writes runs/kd-gpu unless OUT is set)
# Extra arguments go to benchmarks/research/kd_gpu.py (--teacher-steps, --student-steps, --workers, --coded,
# --kd T:ALPHA to skip the sweep, --teacher-from FILE to skip the teacher's training).
# Everything lands in $OUT: results.json, report.md, ber.png, models.tar.gz (checkpoints and students), log.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/kd-gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then  # the device: no network, wheels carried from the session's machine
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
CODED=()
"$PY" -c "import ldpc" 2>/dev/null && CODED=(--coded ldpc-r1/2)
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
"$PY" benchmarks/research/kd_gpu.py --out "$OUT" "${CODED[@]}" "$@" 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# Run HERE (not on the device), before `bash benchmarks/research/kd_gpu.sh` goes to the H200 with carry [".whl"]:
# puts into .whl/ the edgejoule wheel (built from this tree, so its entry points name the plugins) and the
# Python 3.12 wheels of what the device image lacks (pydantic, pydantic-settings and their own needs; ldpc and its
# needs for --coded). The device image has torch (CUDA), numpy, scipy, matplotlib, typer, rich, httpx, pluggy.
# Versions are those of constraints/all.txt. About 15 MB; .whl/ is excluded from git in this checkout only.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl .
pin() { grep -i "^$1==" constraints/all.txt | head -1; }
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "$(pin pydantic)" "$(pin pydantic_core)" "$(pin annotated-types)" "$(pin typing-inspection)" \
  "$(pin pydantic-settings)" "$(pin python-dotenv)" ldpc==2.4.1 stim==1.16.0 pymatching==2.4.0
"$PY" -m pip wheel -q --no-deps -w .whl sinter==1.16.0  # pure Python, published as a source archive only
ls -la .whl

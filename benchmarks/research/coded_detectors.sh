#!/usr/bin/env bash
# Issue 21 item 5: coded BLER of the final detectors over seeds, on Rayleigh 8x4 and the site urban-nlos 16x4, in
# the coded region (below 0 dB; at the default SNRs every detector decodes every block). PGD-Net and ADMM-Net,
# FP and KAQ/LSQ at BITS (2, then 3: the bit widths of the KAQ study), the KAQ study's budget (the detect
# defaults), seeds 0-3; the ldpc-r1/2 code of core/tasks/coded.py.
# Each run writes runs/coded21/<site>-b<bits>-s<seed>/results.json; a run whose results exist is skipped (the
# script resumes). Summary with the max-log ML reference on the same blocks and intervals over seeds:
#   .venv/bin/python benchmarks/research/coded_summary.py runs/coded21
set -euo pipefail
cd "$(dirname "$0")/../.."
EDGEJOULE=${EDGEJOULE:-.venv/bin/edgejoule}
OUT=${OUT:-runs/coded21}
SEEDS=${SEEDS:-0 1 2 3}
BITS=${BITS:-2}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
declare -A SITES=([rayleigh]="--site rayleigh --snr=-8,-6,-4,-2" [urban-nlos]="--site urban-nlos --n-r 16 --n-u 4 --snr=-10,-8,-6,-4")
mkdir -p "$OUT"
for seed in $SEEDS; do
  for tag in ${ONLY:-rayleigh urban-nlos}; do
    name=$tag-b$BITS-s$seed
    if [[ -f "$OUT/$name/results.json" ]]; then echo "have $name"; continue; fi
    echo "$(date -u +%H:%M:%S) $name"
    # shellcheck disable=SC2086
    $EDGEJOULE detect ${SITES[$tag]} --model pgd --model admm --quantizer kaq --quantizer lsq --bits "$BITS" \
      --coded ldpc-r1/2 --seed "$seed" --out "$OUT/$name" > "$OUT/$name.log" 2>&1 \
      || { echo "failed: $name (see $OUT/$name.log)"; exit 1; }
  done
done

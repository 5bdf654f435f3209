#!/usr/bin/env bash
# Issue 21 item 3: KAQ against LSQ and PTQ at 3 and 2 bits, PGD-Net and ADMM-Net, Rayleigh 8x4 and urban-nlos
# 16x4, four seeds, the same QAT budget for KAQ and LSQ (30 FP epochs, 30 QAT epochs of 10,000 draws).
#   stage "sweep": seed 0, the KAQ variants the earlier sweep on Rayleigh PGD-Net left open (MMD teacher trained
#                  along; MMD off, the step policy alone) on all four net/channel pairs (VARIANTS="along nommd");
#                  the variant chosen then runs on the other seeds too: SEEDS="1 2 3" VARIANTS=along ... sweep
#   stage "final": seeds 0-3, KAQ (the shipped default, or the variant given as KAQ_FLAGS), LSQ and PTQ
# Each run writes runs/kaq21/<stage>-<site>-<variant>-s<seed>/results.json; a run whose results exist is skipped,
# so the script resumes; ONLY=rayleigh (or urban-nlos) runs one channel. One thread per run
# (OMP_NUM_THREADS=1): the numbers do not depend on it.
# Summary with intervals over seeds: python benchmarks/research/kaq_summary.py runs/kaq21
set -euo pipefail
cd "$(dirname "$0")/../.."
EDGEJOULE=${EDGEJOULE:-.venv/bin/edgejoule}
OUT=${OUT:-runs/kaq21}
STAGE=${1:-final}
SEEDS=${SEEDS:-0 1 2 3}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

run() {  # run NAME ARGS...
  local name=$1; shift
  if [[ -f "$OUT/$name/results.json" ]]; then echo "have $name"; return; fi
  echo "$(date -u +%H:%M:%S) $name: $*"
  "$EDGEJOULE" detect --model pgd --model admm --bits 3 --bits 2 --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1 \
    || { echo "failed: $name (see $OUT/$name.log)"; return 1; }
}

declare -A FLAGS=([along]="--mmd-teacher along" [nommd]="--mmd-weight 0")
mkdir -p "$OUT"
sites=("rayleigh" "urban-nlos --n-r 16 --n-u 4")
for seed in $SEEDS; do
  for site in "${sites[@]}"; do
    tag=${site%% *}
    [[ " ${ONLY:-rayleigh urban-nlos} " == *" $tag "* ]] || continue
    if [[ $STAGE == sweep ]]; then
      for variant in ${VARIANTS:-along nommd}; do
        # shellcheck disable=SC2086
        run "sweep-$tag-$variant-s$seed" --site $site --quantizer kaq ${FLAGS[$variant]} --seed "$seed"
      done
    else
      # shellcheck disable=SC2086
      run "final-$tag-${KAQ_NAME:-default}-s$seed" --site $site --quantizer kaq --quantizer lsq --quantizer ptq \
        ${KAQ_FLAGS:-} --seed "$seed"
    fi
  done
done

#!/bin/bash
# The long runs on a lent GPU machine, after bench/gpu_check.sh in the same command (its set-up
# installs glasskit there), within DEADLINE seconds (default 300). What comes back under $OUT:
# gpu_runs.log and runs.tgz (every run's run.json, config.yaml, metrics.json and ranks.npz, no
# checkpoints, and each sweep's table), to unpack into a run store here:
#   bash bench/gpu_check.sh; DEADLINE=300 bash bench/gpu_runs.sh
#   mkdir -p runs/gpu && tar xzf FILES_AT/runs.tgz -C runs/gpu   # then GLASSKIT_RUNS=runs/gpu/runs
# In priority order, what the CPU has not run: TIGER and SASRec on Toys_and_Games at the CPU size,
# seeds 1-2, GLASS sidtier+shs and sidtier+shs+cr on Toys (seed 0), TIGER and SASRec on Sports
# (seed 0), the converge comparison on ml-100k, and last TIGER and SASRec at the papers' sizes
# on Toys (run once on an H200, 2026-11-30). A machine starts bare, so a sweep already brought
# back runs again: SWEEPS=s3rec-toys-glass,s3rec-sports (say) runs only those.
# The deadline interrupts a sweep as Ctrl-C would: finished runs stay, an unfinished one comes
# back with its history so far and, in test-at-interrupt.json, its best checkpoint so far
# evaluated on the test split (the last EVAL_S seconds, default 60, are kept for that); its
# metrics.json is left as an unfinished run's, so no table counts it.
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-bench/results/gpu-runs}
WORK=$PWD/.gpu-runs
AMAZON=$PWD/.gpu-prep/data/amazon-s3rec
export GLASSKIT_CACHE="$PWD/.gpu-prep/cache" GLASSKIT_RUNS="$WORK/runs" PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK/runs" "$WORK/tables"
eval_s=${EVAL_S:-60}
end=$((SECONDS + ${DEADLINE:-300} - eval_s))

sweep() {  # NAME, then glasskit sweep's arguments
  local name=$1 left=$((end - SECONDS))
  shift
  if [ -n "${SWEEPS:-}" ] && [[ ",$SWEEPS," != *",$name,"* ]]; then echo "== $name: not in SWEEPS"; return; fi
  if [ "$left" -lt 60 ]; then echo "== $name: skipped (deadline)"; return; fi
  echo "== $name ($left s left)"
  timeout -s INT -k 30 "$left" "$PY" -m glasskit sweep --out "$WORK/tables/$name.md" "$@"
  echo "== $name: rc $?"
}

{
  toys=(--profile s3rec --data-dir "$AMAZON" --set data.name=Toys_and_Games)
  # seed 0 of TIGER and SASRec came from the CPU (2026-11-30); their runs pair with these
  sweep s3rec-toys-seeds --seeds 1,2 --rows tiger,sasrec --against sasrec "${toys[@]}"
  sweep s3rec-toys-glass --seeds 0 --rows glass:sidtier+shs,glass:sidtier+shs+cr --against "" "${toys[@]}"
  sweep s3rec-sports --profile s3rec --data-dir "$AMAZON" --set data.name=Sports_and_Outdoors \
    --against sasrec --rows tiger,sasrec --seeds 0
  sweep converge-ml100k --profile converge --datasets ml-100k --seeds 0,1,2
  sweep paper-toys --preset paper --rows tiger,sasrec --seeds 0 --against sasrec "${toys[@]}"
  for run in "$WORK"/runs/*/; do
    if [ -f "$run/best.pt" ] && [ ! -f "$run/ranks.npz" ]; then
      echo "== $(basename "$run"): unfinished, its best checkpoint on test"
      timeout -k 10 "$eval_s" "$PY" -m glasskit evaluate --run "$run" --split test \
        > "$run/test-at-interrupt.json" && cat "$run/test-at-interrupt.json"
    fi
  done
  for t in "$WORK"/tables/*.md; do [ -f "$t" ] && { echo "== $(basename "$t")"; cat "$t"; }; done
} 2>&1 | tee "$OUT/gpu_runs.log"
tar czf "$OUT/runs.tgz" -C "$WORK" --exclude='*.pt' --exclude='.*.lock' runs tables
ls -l "$OUT"

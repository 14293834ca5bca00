#!/usr/bin/env bash
# Peer check against cornac==3.0.1's TIGER or SASRec (see bench/peer_cornac.py).
# usage: [MODEL=tiger|sasrec] [EPOCHS=8] [WIDE_BEAM=60] [THREADS=2] bench/peer_cornac.sh RUN_DIR...
#   RUN_DIR: glasskit runs on ml-100k, quick profile, one per seed. TIGER trained like cornac:
#     for s in 0 1 2; do .venv/bin/python -m glasskit train --model tiger --seed $s \
#       --codebooks 128,128,128 --set data.train_targets_per_user=null \
#       --set train.threads=2 --out runs/peer/tiger-s$s; done
#   SASRec: .venv/bin/python -m glasskit train --model sasrec --seed $s --out runs/peer/sasrec-s$s
# Run it with nothing else on the machine: its last phase times one epoch of each side.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-tiger}
EPOCHS=${EPOCHS:-8}
THREADS=${THREADS:-2}
OUT=.cache/peer_cornac
CVENV=.cache/cornac-venv
test -x $CVENV/bin/python || { python3.11 -m venv $CVENV &&
  $CVENV/bin/pip install --quiet cornac==3.0.1 torch==2.13.0 transformers==4.57.1; }
test -f $OUT/peer.npz || .venv/bin/python bench/peer_cornac.py export $OUT
test -f $OUT/cornac_${MODEL}_${EPOCHS}_time.json ||
  $CVENV/bin/python bench/peer_cornac.py fit $OUT "$EPOCHS" "$THREADS" "$MODEL"
# speed: one epoch on each side, same samples, sizes and threads
extra=()
[ "$MODEL" = tiger ] && extra=(--codebooks 128,128,128 --set data.train_targets_per_user=null)
.venv/bin/python -m glasskit train --model "$MODEL" "${extra[@]}" --set train.threads="$THREADS" \
  --epochs 1 --fresh --quiet --out $OUT/speed-glasskit-$MODEL > /dev/null
$CVENV/bin/python bench/peer_cornac.py fit $OUT 1 "$THREADS" "$MODEL" --no-rank
.venv/bin/python bench/peer_cornac.py report $OUT "$MODEL" "$EPOCHS" "${WIDE_BEAM:-60}" "$@"

#!/usr/bin/env bash
# Peer check against cornac==3.0.1's TIGER (see bench/peer_cornac.py).
# usage: [EPOCHS=8] [WIDE_BEAM=60] [THREADS=2] bench/peer_cornac.sh RUN_DIR [RUN_DIR ...]
#        (glasskit TIGER runs on ml-100k, quick profile, one per seed, trained like cornac:
#         for s in 0 1 2; do .venv/bin/python -m glasskit train --model tiger --seed $s \
#           --codebooks 128,128,128 --set data.train_targets_per_user=null \
#           --set train.threads=2 --out runs/peer/tiger-s$s; done)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.cache/peer_cornac
CVENV=.cache/cornac-venv
test -x $CVENV/bin/python || { python3.11 -m venv $CVENV &&
  $CVENV/bin/pip install --quiet cornac==3.0.1 torch==2.13.0 transformers==4.57.1; }
.venv/bin/python bench/peer_cornac.py export $OUT
$CVENV/bin/python bench/peer_cornac.py fit $OUT "${EPOCHS:-8}" "${THREADS:-2}"
.venv/bin/python bench/peer_cornac.py report $OUT "${WIDE_BEAM:-60}" "$@"

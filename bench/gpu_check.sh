#!/bin/bash
# On the GPU machine (its own Python 3.12 and CUDA torch, no network), from the checkout's root,
# with .gpu-prep/ carried beside the working tree (make gpu-prep made it):
#   bash bench/gpu_check.sh            # writes gpu_check.json and gpu_check.md under $OUT
set -euo pipefail
PY=${PYTHON:-python3}
export GLASSKIT_CACHE="$PWD/.gpu-prep/cache" PYTHONUNBUFFERED=1
# what glasskit imports beside torch, from the carried wheels; packages already there are kept
$PY -m pip install --quiet --no-index --find-links .gpu-prep/wheels pandas pyyaml tqdm pytest
# glasskit itself without dependencies over the machine's torch (PYTHONPATH if pip cannot)
$PY -m pip install --quiet --no-deps --no-build-isolation -e . || export PYTHONPATH="$PWD"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
$PY bench/gpu_check.py --out "${OUT:-bench/results/gpu-check}" "$@"

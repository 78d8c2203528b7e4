#!/usr/bin/env bash
# Guidance-scale x steps sweep of a frozen stage-2 checkpoint's own sampler (its solver and guidance method):
#   scripts/sweep_guidance.sh outputs/train/runs/<run>/checkpoints/diffusion.ckpt [dataset=mnist]
# Writes summary.csv and summary.png (FID vs conditional accuracy) in the sweep directory.
set -euo pipefail
export PYTHON="${PYTHON:-python3}"  # every step runs with the caller's interpreter (e.g. PYTHON=.venv/bin/python)
cd "$(dirname "$0")/.."
ckpt="${1:?usage: $0 PATH/TO/diffusion.ckpt [extra overrides]}"
shift
"$PYTHON" evaluate.py -m ckpt="$ckpt" guidance.scale=0,1,2,3,5 sampler.steps=20,50 "$@"

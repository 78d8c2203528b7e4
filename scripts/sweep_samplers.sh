#!/usr/bin/env bash
# Sampler x steps sweep on a frozen stage-2 checkpoint: DDIM vs DPM-Solver++(2M) at 10, 20, 50 steps, each with
# the checkpoint's own guidance (add guidance.scale=S, or guidance=cfg, to compare them at another one).
#   scripts/sweep_samplers.sh outputs/train/runs/<run>/checkpoints/diffusion.ckpt [dataset=mnist] [guidance.scale=3]
# Writes summary.csv and summary.png (FID vs conditional accuracy) in the sweep directory.
set -euo pipefail
export PYTHON="${PYTHON:-python3}"  # every step runs with the caller's interpreter (e.g. PYTHON=.venv/bin/python)
cd "$(dirname "$0")/.."
ckpt="${1:?usage: $0 PATH/TO/diffusion.ckpt [extra overrides]}"
shift
"$PYTHON" evaluate.py -m ckpt="$ckpt" sampler=ddim,dpmpp_2m sampler.steps=10,20,50 "$@"

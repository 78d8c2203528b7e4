#!/usr/bin/env bash
# Autoencoder type x cross-attention depth ablation (9 jobs). Each stage-1 config is trained once
# and reused from the cache by the other depths; summary.csv lands in the sweep directory.
set -euo pipefail
export PYTHON="${PYTHON:-python3}"  # every step runs with the caller's interpreter (e.g. PYTHON=.venv/bin/python)
cd "$(dirname "$0")/.."
"$PYTHON" train.py -m model=ae,vae,vqvae unet.transformer_depth=0,1,2 +experiment=mnist_cond "$@"

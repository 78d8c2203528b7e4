#!/usr/bin/env bash
# Latent downsampling-factor ablation: f = 1 (pixels, 32x32), f = 2 (16x16), f = 4 (8x8), same UNet.
# f is set by the number of autoencoder levels: f = 2 ** (len(model.net.channels) - 1).
set -euo pipefail
export PYTHON="${PYTHON:-python3}"  # every step runs with the caller's interpreter (e.g. PYTHON=.venv/bin/python)
cd "$(dirname "$0")/.."
"$PYTHON" train.py -m +experiment=mnist_cond model=identity "$@"
"$PYTHON" train.py -m +experiment=mnist_cond model=vqvae 'model.net.channels=[32,64],[16,32,64]' "$@"

"""How much of a stage-1 latent's energy sits in high spatial frequencies, beside the images'.

    python scripts/latent_spectrum.py LABEL=AUTOENCODER_CKPT [LABEL=CKPT ...] [--dataset mnist_5k] [--seed 0]

Why: a diffusion model generates coarse to fine, so a latent whose content sits in high spatial
frequencies is harder to diffuse than its reconstruction quality suggests (Skorokhodov et al. 2025,
"Improving the Diffusability of Autoencoders", https://arxiv.org/abs/2502.14831). This is their
diagnostic: the 2-D DCT power of each latent channel over the held-out split, in radial frequency
bands, next to the same for the images average-pooled to the latent grid and for the full images.
Each row is normalised to the energy outside the DC term (the per-image mean), so rows compare
shapes of spectra, not scales. ``high`` is the share in the upper half of frequencies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import dctn

from tinyldm.data import DigitsDataModule
from tinyldm.lit.autoencoder_module import AutoencoderModule
from tinyldm.utils.checkpoints import require_stage, restore_module

BANDS = 4


def band_shares(x: np.ndarray) -> np.ndarray:
    """``(N, C, h, w)`` -> the share of non-DC DCT power in each of ``BANDS`` radial bands (sums to 1)."""
    power = dctn(x, axes=(-2, -1), norm="ortho") ** 2  # (N, C, h, w)
    power = power.mean(axis=(0, 1))  # (h, w)
    h, w = power.shape
    radius = np.hypot(*np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")) / np.sqrt(2)  # 0 .. <1
    band = np.minimum((radius * BANDS).astype(int), BANDS - 1)
    power[0, 0] = 0.0  # the DC term: each map's mean, not its structure
    shares = np.array([power[band == k].sum() for k in range(BANDS)])
    return shares / shares.sum()


def row(label: str, shares: np.ndarray) -> str:
    high = shares[BANDS // 2 :].sum()
    return f"| {label} | " + " | ".join(f"{100 * s:.1f} %" for s in shares) + f" | **{100 * high:.1f} %** |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="LABEL=AUTOENCODER_CKPT")
    parser.add_argument("--dataset", default="mnist_5k", help="dataset name (DigitsDataModule), default mnist_5k")
    parser.add_argument("--seed", type=int, default=0, help="the split seed the autoencoders were trained with")
    args = parser.parse_args()
    pairs = []
    for item in args.checkpoints:
        label, sep, path = item.partition("=")
        if not sep or not label or not Path(path).is_file():
            parser.error(f"{item!r}: expected LABEL=PATH to an existing autoencoder checkpoint")
        pairs.append((label, Path(path)))

    datamodule = DigitsDataModule(name=args.dataset, seed=args.seed)
    datamodule.setup("fit")
    images = datamodule.val_dataset.tensors[0]  # (N, 1, 32, 32) in [-1, 1]
    header = "| | " + " | ".join(f"band {k + 1}" for k in range(BANDS)) + " | high (bands 3-4) |"
    lines = [header, "|---" * (BANDS + 2) + "|", row(f"images {tuple(images.shape[-2:])}", band_shares(images.numpy()))]
    pooled_sizes = set()
    for label, path in pairs:
        autoencoder = restore_module(AutoencoderModule, require_stage(path, "autoencoder"), path).autoencoder.eval()
        with torch.no_grad():
            latents = torch.cat([autoencoder.encode(chunk) for chunk in images.split(250)])  # (N, C, h, w)
        size = tuple(latents.shape[-2:])
        if size not in pooled_sizes:
            pooled = F.avg_pool2d(images, images.shape[-1] // size[-1])  # the images on the latent's grid
            lines.append(row(f"images pooled to {size}", band_shares(pooled.numpy())))
            pooled_sizes.add(size)
        lines.append(row(f"latent: {label}", band_shares(latents.numpy())))
    print(f"DCT power outside the DC term, held-out split of {args.dataset} (seed {args.seed}), {BANDS} radial bands\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

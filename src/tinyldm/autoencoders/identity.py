"""No compression: "latents" are the pixels themselves.

The pixel-space baseline (``model=identity``) runs the same UNet directly on images, which is
what shows how much the latent space buys in speed and quality.
"""

from __future__ import annotations

import torch

from tinyldm.autoencoders.base import Autoencoder


class IdentityAutoencoder(Autoencoder):
    """encode = decode = identity; has no weights, so stage 1 has nothing to train."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.latent_channels = in_channels
        self.downsample_factor = 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

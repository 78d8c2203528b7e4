"""Plain deterministic autoencoder: the simplest stage 1 and the reference for the others."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tinyldm.autoencoders.base import Autoencoder
from tinyldm.autoencoders.blocks import Decoder, Encoder


class ConvAutoencoder(Autoencoder):
    """Encoder -> latent grid -> Decoder with no regularisation of the latent.

    Also the base of the VAE and VQ-VAE, which share its conv stacks and differ only in what
    happens between encoder and decoder.
    """

    #: encoder output channels per latent channel (the VAE predicts mean and log-variance: 2)
    encoder_channel_factor = 1

    def __init__(
        self,
        in_channels: int = 1,
        latent_channels: int = 4,
        channels: Sequence[int] = (32, 64, 128),
        num_res_blocks: int = 1,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.downsample_factor = 2 ** (len(channels) - 1)
        self.encoder = Encoder(
            in_channels, self.encoder_channel_factor * latent_channels, channels, num_res_blocks, norm_groups
        )
        self.decoder = Decoder(latent_channels, in_channels, channels, num_res_blocks, norm_groups)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, 1, H, W) -> (B, C, H/f, W/f)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, C, h, w) -> (B, 1, h*f, w*f)

"""Convolutional Encoder/Decoder shared by every stage-1 autoencoder.

The variants (AE, VAE, VQ-VAE) differ only in what happens *between* encoder and decoder
(nothing, a Gaussian posterior, a codebook), so the conv stacks live here once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _check_channels(channels: Sequence[int], norm_groups: int) -> list[int]:
    channels = [int(c) for c in channels]
    if len(channels) == 0:
        raise ValueError("channels must list at least one level, e.g. [32, 64, 128]")
    bad = [c for c in channels if c <= 0 or c % norm_groups != 0]
    if bad:
        raise ValueError(
            f"channels={channels}: every entry must be a positive multiple of norm_groups={norm_groups} (bad: {bad})"
        )
    return channels


class ResBlock(nn.Module):
    """Pre-activation residual block (GroupNorm, SiLU, conv) x 2 with a 1x1 skip when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int = 8) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(norm_groups, in_channels),
            nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.GroupNorm(norm_groups, out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block(x)


class Encoder(nn.Module):
    """Image -> latent grid. One level per entry of ``channels``; a stride-2 conv between levels.

    So ``len(channels) - 1`` downsamplings give a downsampling factor f = 2**(len(channels) - 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (32, 64, 128),
        num_res_blocks: int = 1,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        channels = _check_channels(channels, norm_groups)
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks={num_res_blocks} must be >= 1")
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        layers: list[nn.Module] = []
        width = channels[0]
        for level, level_width in enumerate(channels):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(width, level_width, norm_groups))
                width = level_width
            if level < len(channels) - 1:
                layers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))  # halve H, W
        layers.append(ResBlock(width, width, norm_groups))
        self.body = nn.Sequential(*layers)
        self.conv_out = nn.Sequential(
            nn.GroupNorm(norm_groups, width), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, in, H, W) -> (B, out, H/f, W/f)
        return self.conv_out(self.body(self.conv_in(x)))


class Decoder(nn.Module):
    """Latent grid -> image; mirrors :class:`Encoder` (nearest upsampling + conv between levels)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (32, 64, 128),
        num_res_blocks: int = 1,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        channels = _check_channels(channels, norm_groups)[::-1]  # deepest level first
        width = channels[0]
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        layers: list[nn.Module] = [ResBlock(width, width, norm_groups)]
        for level, level_width in enumerate(channels):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(width, level_width, norm_groups))
                width = level_width
            if level < len(channels) - 1:
                # narrow to the next (shallower) level's width while upsampling: the conv then runs
                # at high resolution with the smaller channel count, the decoder's cost hot spot
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))  # double H, W
                layers.append(nn.Conv2d(width, channels[level + 1], 3, padding=1))
                width = channels[level + 1]
        self.body = nn.Sequential(*layers)
        self.conv_out = nn.Sequential(
            nn.GroupNorm(norm_groups, width), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (B, in, h, w) -> (B, out, h*f, w*f)
        return self.conv_out(self.body(self.conv_in(z)))

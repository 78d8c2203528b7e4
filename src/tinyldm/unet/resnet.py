"""Convolutional building blocks of the UNet: ResNet block, down- and upsampling.

These carry the spatial, local computation; global mixing and class
conditioning are left to the transformer blocks in :mod:`.attention`.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class ResnetBlock(nn.Module):
    """Pre-activation ResNet block with an additive timestep embedding (DDPM style).

    ``GroupNorm -> SiLU -> conv3x3``, add the projected timestep embedding as a
    per-channel bias, ``GroupNorm -> SiLU -> dropout -> conv3x3``, then add the
    (1x1-projected if the width changes) input. Injecting the timestep in the
    middle of every block lets each block adapt its behaviour to the noise level.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        time_emb_dim: size of the timestep embedding vector.
        dropout: dropout probability before the second convolution.
        groups: number of GroupNorm groups; must divide ``in_ch`` and ``out_ch``.
    """

    def __init__(self, in_ch: int, out_ch: int, time_emb_dim: int, dropout: float = 0.0, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, out_ch))
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, kernel_size=1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, in_ch, H, W) -> (B, out_ch, H, W)
        h = h + self.time_proj(temb)[:, :, None, None]  # (B, T) -> (B, out_ch, 1, 1), broadcast over H, W
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (B, out_ch, H, W)
        return self.skip(x) + h  # (B, out_ch, H, W)


class Downsample(nn.Module):
    """Halve the resolution with a learned stride-2 3x3 convolution (keeps channels)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)  # (B, C, H, W) -> (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling, then a 3x3 convolution.

    Nearest + conv avoids the checkerboard artefacts of transposed convolutions.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(x)  # (B, C, 2H, 2W)

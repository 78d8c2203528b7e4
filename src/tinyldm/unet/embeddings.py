"""Timestep embeddings for the denoising UNet.

The UNet must know *how noisy* its input is. The integer (or continuous)
diffusion timestep is turned into a vector in two steps, as in DDPM and
Stable Diffusion:

1. a fixed sinusoidal code (the Transformer positional encoding), which gives
   every timestep a distinct, smoothly varying signature at many frequencies;
2. a small learned MLP, so the network can reshape that code into whatever
   features the ResNet blocks find useful.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(timesteps: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Encode timesteps as ``[cos(t * f_i), sin(t * f_i)]`` over geometric frequencies.

    Args:
        timesteps: ``(B,)`` integer or float timesteps.
        dim: size of the code. An odd ``dim`` gets one zero column of padding.
        max_period: the slowest frequency is ``1 / max_period``; 10_000 covers
            the usual 1000 DDPM steps with room to spare.

    Returns:
        ``(B, dim)`` float32 tensor.
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must have shape (B,), got {tuple(timesteps.shape)}")
    half = dim // 2
    exponents = torch.arange(half, device=timesteps.device, dtype=torch.float32) / half
    freqs = torch.exp(-math.log(max_period) * exponents)  # (half,)
    angles = timesteps.float()[:, None] * freqs[None, :]  # (B, 1) * (1, half) -> (B, half)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, 2 * half)
    if dim % 2 == 1:
        emb = nn.functional.pad(emb, (0, 1))  # (B, 2 * half) -> (B, dim)
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal code followed by ``Linear -> SiLU -> Linear``.

    Args:
        frequency_dim: size of the sinusoidal code (the UNet uses its base width).
        embed_dim: size of the output vector that every ResNet block receives
            (the UNet uses ``4 * base_channels``, following DDPM).
    """

    def __init__(self, frequency_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, embed_dim),
            nn.SiLU(),
            nn.Linear(embed_dim, embed_dim),
        )

    def forward(self, timesteps: Tensor) -> Tensor:
        code = sinusoidal_embedding(timesteps, self.frequency_dim)  # (B,) -> (B, frequency_dim)
        code = code.to(self.mlp[0].weight.dtype)
        return self.mlp(code)  # (B, frequency_dim) -> (B, embed_dim)

"""Vector quantiser with EMA codebook updates and dead-code restarts (VQ-VAE-2 style).

Why EMA instead of a codebook loss: the codebook follows the running mean of the encoder outputs
assigned to each code, which converges faster and more stably than gradient descent on the codes.
Why restarts: codes that stop receiving assignments never move again; re-seeding them from live
encoder outputs keeps the codebook in use (the usage figure stage 1 reports).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor  # (B, D, h, w), straight-through: gradients flow to the encoder
    commitment_loss: torch.Tensor  # scalar, already multiplied by beta
    indices: torch.Tensor  # (B, h, w) long, the code chosen at each position


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation of each latent vector onto ``num_embeddings`` codes."""

    def __init__(
        self,
        num_embeddings: int = 256,
        embedding_dim: int = 4,
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: float = 1.0,
    ) -> None:
        super().__init__()
        if num_embeddings < 2:
            raise ValueError(f"num_embeddings={num_embeddings} must be >= 2")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay={decay} must be in (0, 1)")
        if beta < 0:
            raise ValueError(f"beta={beta} must be >= 0")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.beta = beta
        self.decay = decay
        self.eps = eps
        self.dead_code_threshold = dead_code_threshold
        # EMA state lives in buffers: it is updated by averaging, not by the optimiser
        self.register_buffer("embedding", torch.randn(num_embeddings, embedding_dim))
        self.register_buffer("cluster_size", torch.zeros(num_embeddings))
        self.register_buffer("embedding_sum", self.embedding.clone())
        self.register_buffer("initialized", torch.tensor(False))

    def codes_for(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, D) vectors -> (N,) index of the nearest code (squared Euclidean distance)."""
        distances = (
            flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ self.embedding.t() + self.embedding.pow(2).sum(1)[None, :]
        )  # (N, K)
        return distances.argmin(dim=1)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        batch, _, height, width = z.shape
        z = z.float()  # distances and EMA statistics stay fp32 under autocast
        flat = rearrange(z, "b d h w -> (b h w) d")  # (N, D)
        if self.training and not bool(self.initialized):
            self._initialise_from(flat.detach())
        indices = self.codes_for(flat.detach())  # (N,)
        # look the codes up in the codebook the indices were chosen from: the EMA update and the
        # restarts below change it, and a restarted code would return an unrelated vector
        quantized = F.embedding(indices, self.embedding)  # (N, D), a copy
        if self.training:
            self._ema_update(flat.detach(), indices)
            self._restart_dead_codes(flat.detach())
        quantized = rearrange(quantized, "(b h w) d -> b d h w", b=batch, h=height, w=width)
        commitment = self.beta * F.mse_loss(z, quantized.detach())
        quantized = z + (quantized - z).detach()  # straight-through estimator
        return QuantizerOutput(quantized, commitment, indices.view(batch, height, width))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Snap (B, D, h, w) latents onto the codebook (no statistics update, no gradient trick)."""
        batch, _, height, width = z.shape
        flat = rearrange(z.float(), "b d h w -> (b h w) d")
        quantized = F.embedding(self.codes_for(flat), self.embedding)
        return rearrange(quantized, "(b h w) d -> b d h w", b=batch, h=height, w=width)

    @torch.no_grad()
    def _initialise_from(self, flat: torch.Tensor) -> None:
        """Seed the codebook with random encoder outputs so every code starts near the data."""
        picks = flat[torch.randint(0, flat.shape[0], (self.num_embeddings,), device=flat.device)]
        self._broadcast_(picks)
        self.embedding.copy_(picks)
        self.embedding_sum.copy_(picks)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        counts = torch.bincount(indices, minlength=self.num_embeddings).to(flat.dtype)  # (K,)
        sums = torch.zeros_like(self.embedding).index_add_(0, indices, flat)  # (K, D)
        if _distributed():  # every rank must hold the same codebook
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        # Laplace smoothing keeps empty clusters from dividing by zero
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_embeddings * self.eps) * total
        self.embedding.copy_(self.embedding_sum / smoothed[:, None])

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        dead = self.cluster_size < self.dead_code_threshold  # (K,)
        if not bool(dead.any()):
            return
        num_dead = int(dead.sum())
        picks = flat[torch.randint(0, flat.shape[0], (num_dead,), device=flat.device)]
        self._broadcast_(picks)
        self.embedding[dead] = picks
        self.embedding_sum[dead] = picks * self.dead_code_threshold
        self.cluster_size[dead] = self.dead_code_threshold

    @staticmethod
    def _broadcast_(tensor: torch.Tensor) -> None:
        if _distributed():
            dist.broadcast(tensor, src=0)

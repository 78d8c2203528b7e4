"""The trainable half of stage 2: UNet + conditioner, kept together so one EMA covers both."""

from __future__ import annotations

import torch
from torch import nn


class ConditionalDenoiser(nn.Module):
    """Predicts the scheduler's target (noise, velocity or x0) from (x_t, t, labels).

    The conditioner turns labels into context tokens; the UNet sees them only through
    cross-attention.
    """

    def __init__(self, unet: nn.Module, conditioner: nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.unet = unet
        self.conditioner = conditioner
        # NHWC activations and weights: oneDNN's and cuDNN's convolutions run faster in that layout
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.unet.to(memory_format=self.memory_format)

    def context(
        self,
        labels: torch.Tensor | None,
        batch_size: int,
        drop_labels: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B,) labels -> (B, K, D) context; unconditional models ignore labels. ``generator`` draws label drops."""
        if not self.conditioner.is_conditional:
            return self.conditioner.unconditional(batch_size, device=self._device())
        return self.conditioner(labels, drop_labels=drop_labels, generator=generator)

    def unconditional_context(self, batch_size: int) -> torch.Tensor:
        return self.conditioner.unconditional(batch_size, device=self._device())

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t.contiguous(memory_format=self.memory_format), timesteps, context)  # (B, C, h, w)

    def _device(self) -> torch.device:
        return next(self.unet.parameters()).device

"""The trainable half of stage 2: UNet + conditioner, kept together so one EMA covers both."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: a context ``(B, L, D)`` and its key padding mask ``(B, L)`` (True = a real token; None = all real)
Context = tuple[torch.Tensor, torch.Tensor | None]


def with_mask(output: torch.Tensor | Context) -> Context:
    """A conditioner's output as (context, mask): label conditioners return the context alone."""
    return output if isinstance(output, tuple) else (output, None)


class ConditionalDenoiser(nn.Module):
    """Predicts the scheduler's target (noise, velocity or x0) from (x_t, t, labels).

    The conditioner turns labels (or prompts) into context tokens; the UNet sees them only through
    cross-attention, which skips the padding of a text prompt.
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
        labels: Any,
        batch_size: int,
        drop_labels: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> Context:
        """Conditions -> ``(B, L, D)`` context and its ``(B, L)`` padding mask (None: no padding).

        ``labels`` are whatever the conditioner reads: ``(B,)`` labels, the data's ``(B, 1 + A)``
        rows or prompts for the text conditioner. Unconditional models ignore them. ``generator``
        draws label drops (and the text conditioner's phrasings).
        """
        if not self.conditioner.is_conditional:
            return with_mask(self.conditioner.unconditional(batch_size, device=self._device()))
        return with_mask(self.conditioner(labels, drop_labels=drop_labels, generator=generator))

    def unconditional_context(self, batch_size: int) -> Context:
        return with_mask(self.conditioner.unconditional(batch_size, device=self._device()))

    def forward(
        self,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x_t = x_t.contiguous(memory_format=self.memory_format)
        return self.unet(x_t, timesteps, context, context_mask)  # (B, C, h, w)

    def _device(self) -> torch.device:
        return next(self.unet.parameters()).device

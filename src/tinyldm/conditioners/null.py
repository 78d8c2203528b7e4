"""A conditioner for unconditional diffusion models.

The UNet and the diffusion pipeline always pass a context tensor around; an
unconditional model simply gets the same constant context for every sample.
Keeping the interface identical to :class:`~tinyldm.conditioners.ClassConditioner`
means one training and sampling code path serves both kinds of model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class NullConditioner(nn.Module):
    """Return a fixed all-zeros context ``(B, num_tokens, D)``, whatever the labels.

    The context is a non-learned buffer: with nothing to distinguish samples
    there is nothing to learn, and zeros make any cross-attention read a
    constant (keys and values of a zero token are zero before the output bias).
    With ``transformer_depth=0`` the UNet does not look at it at all.

    Args:
        context_dim: width ``D`` of the (zero) tokens.
        num_tokens: number of tokens in the context.
        num_classes: classes of the dataset, for bookkeeping only (e.g. label
            grids in logging); the model never uses them.
    """

    is_conditional = False

    def __init__(self, context_dim: int = 64, num_tokens: int = 1, num_classes: int = 0) -> None:
        super().__init__()
        if context_dim < 1:
            raise ValueError(f"context_dim={context_dim} is invalid: it must be at least 1")
        if num_tokens < 1:
            raise ValueError(f"num_tokens={num_tokens} is invalid: it must be at least 1")
        if num_classes < 0:
            raise ValueError(f"num_classes={num_classes} is invalid: it must be non-negative")
        self.context_dim = context_dim
        self.num_tokens = num_tokens
        self.num_classes = num_classes
        # Not persistent: a constant needs no checkpointing.
        self.register_buffer("null_tokens", torch.zeros(num_tokens, context_dim), persistent=False)

    def conditions_for(self, images: Tensor, labels: Tensor, fit: bool = False) -> Tensor:
        """What the data hand this conditioner per image: the ``(N,)`` labels (images add nothing here)."""
        return labels

    def forward(
        self, labels: Tensor, drop_labels: bool | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Null context for a batch: ``labels`` only set the batch size and device.

        Takes the class conditioner's arguments so either can sit in the denoiser; ``drop_labels``
        and ``generator`` have nothing to act on here.
        """
        return self.unconditional(labels.shape[0], labels.device)

    def unconditional(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        """``(B, num_tokens, D)`` zeros."""
        null = self.null_tokens if device is None else self.null_tokens.to(device)
        return null.expand(batch_size, -1, -1)  # (K, D) -> (B, K, D)

    def extra_repr(self) -> str:
        return f"context_dim={self.context_dim}, num_tokens={self.num_tokens}, num_classes={self.num_classes}"

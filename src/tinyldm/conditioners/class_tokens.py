"""Class labels as learned token sequences for the UNet's cross-attention.

Stable Diffusion conditions on a CLIP text encoding: a sequence of token
vectors that the UNet's cross-attention reads. For MNIST the "prompt" is a
digit, so the text encoder shrinks to a lookup table holding a short learned
token sequence per class, plus one extra learned sequence -- the null tokens --
that stands for "no class" and makes classifier-free guidance possible.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ClassConditioner(nn.Module):
    """Map class labels to ``K`` learned context tokens each, with label dropout for CFG.

    Why ``K > 1`` tokens per class: cross-attention normalises its weights over
    the keys with a softmax. Over a single key that softmax is identically 1, so
    every query receives the same value vector -- cross-attention degenerates
    into adding a per-class bias and its "attention" does nothing. With ``K``
    tokens each image location can weigh different class tokens differently
    (e.g. one token for strokes, one for the background). ``tokens_per_class=1``
    remains available for exactly that ablation.

    Classifier-free guidance needs one network that predicts both conditionally
    and unconditionally. During training a fraction ``p_uncond`` of the labels is
    therefore replaced by the null tokens, which are learned like the class tokens.

    Initialisation: tokens are drawn from ``N(0, 1)`` like ``nn.Embedding``. They
    feed the attention's key/value projections directly (no normalisation in
    between), and PyTorch's default ``Linear`` init assumes unit-scale inputs; a
    GPT-style ``std=0.02`` would make all keys nearly zero and the classes nearly
    indistinguishable to the attention at the start of training.

    Args:
        num_classes: number of classes (labels are ``0 .. num_classes - 1``).
        context_dim: width ``D`` of every token (the UNet's ``context_dim``).
        tokens_per_class: number of tokens ``K`` per class (and of null tokens).
        p_uncond: probability, per sample, of replacing the label by the null
            tokens during training; in ``[0, 1)``.
    """

    is_conditional = True

    def __init__(
        self, num_classes: int = 10, context_dim: int = 64, tokens_per_class: int = 4, p_uncond: float = 0.1
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} is invalid: it must be at least 1")
        if context_dim < 1:
            raise ValueError(f"context_dim={context_dim} is invalid: it must be at least 1")
        if tokens_per_class < 1:
            raise ValueError(f"tokens_per_class={tokens_per_class} is invalid: it must be at least 1")
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(
                f"p_uncond={p_uncond} is invalid: it must lie in [0, 1) (1 would never show the model a label)"
            )
        self.num_classes = num_classes
        self.context_dim = context_dim
        self.num_tokens = tokens_per_class
        self.p_uncond = p_uncond
        self.class_tokens = nn.Parameter(torch.randn(num_classes, tokens_per_class, context_dim))  # (N, K, D)
        self.null_tokens = nn.Parameter(torch.randn(tokens_per_class, context_dim))  # (K, D)

    def conditions_for(self, images: Tensor, labels: Tensor, fit: bool = False) -> Tensor:
        """What the data hand this conditioner per image: the ``(N,)`` labels (images add nothing here)."""
        return labels

    def forward(
        self, labels: Tensor, drop_labels: bool | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Look up the token sequences of ``labels``.

        Args:
            labels: ``(B,)`` integer class labels in ``[0, num_classes)``.
            drop_labels: ``True`` replaces every label by the null tokens,
                ``False`` none; ``None`` (default) drops each label with
                probability ``p_uncond`` in training mode and none in eval mode.
            generator: draws the random drops (the global torch RNG when None).

        Returns:
            ``(B, K, D)`` context tokens.
        """
        self._check_labels(labels)
        batch = labels.shape[0]
        tokens = self.class_tokens[labels]  # (B,) -> (B, K, D)
        null = self.null_tokens.expand(batch, -1, -1)  # (K, D) -> (B, K, D)
        if drop_labels is None:
            drop_labels = self.training and self.p_uncond > 0
            if not drop_labels:
                return tokens
            draw_device = generator.device if generator is not None else labels.device
            drop = (torch.rand(batch, generator=generator, device=draw_device) < self.p_uncond).to(
                labels.device
            )  # (B,)
            return torch.where(drop[:, None, None], null, tokens)  # (B, K, D)
        return null if drop_labels else tokens

    def unconditional(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        """The null tokens for ``batch_size`` samples: ``(B, K, D)`` (for CFG and unconditional sampling)."""
        null = self.null_tokens if device is None else self.null_tokens.to(device)
        return null.expand(batch_size, -1, -1)  # (K, D) -> (B, K, D)

    def _check_labels(self, labels: Tensor) -> None:
        if labels.ndim != 1:
            raise ValueError(f"labels must have shape (B,), got {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            bad = labels[(labels < 0) | (labels >= self.num_classes)].unique().tolist()
            raise ValueError(f"labels {bad} are out of range: they must lie in [0, {self.num_classes})")

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, context_dim={self.context_dim}, "
            f"tokens_per_class={self.num_tokens}, p_uncond={self.p_uncond}"
        )

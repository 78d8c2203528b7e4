"""A small Transformer text encoder, trained from scratch with the UNet (Stable Diffusion's CLIP, in miniature).

Stable Diffusion feeds the *whole* token sequence of a frozen CLIP text encoder to the UNet's
cross-attention, so each image location can attend to the words that concern it ("thick" for the
strokes, "7" for the layout). No pretrained encoder can be downloaded here and CLIP's 123M
parameters would dwarf a 28x28 model, so this one is a few pre-norm layers wide ``context_dim``,
with learned positions, trained jointly with the UNet by the diffusion loss (as Imagen's ablations
and the original LDM text-to-image model did with a BERT-style encoder trained from scratch,
https://arxiv.org/abs/2112.10752, section 4.3).

Padding never matters: the key padding mask keeps every real token from attending to it here, and
the UNet's cross-attention receives the same mask, so adding padding leaves the output unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TextEncoder(nn.Module):
    """Token ids ``(B, L)`` + keep-mask ``(B, L)`` -> token features ``(B, L, width)``.

    Args:
        vocab_size: number of token ids (the tokenizer's vocabulary).
        width: feature width, the UNet's ``context_dim``.
        depth: Transformer encoder layers.
        num_heads: attention heads (``width`` must divide by it).
        max_length: positions with a learned embedding (the tokenizer's maximum length).
        dropout: dropout inside the layers.
    """

    def __init__(
        self, vocab_size: int, width: int = 64, depth: int = 1, num_heads: int = 4, max_length: int = 12, dropout=0.0
    ) -> None:
        super().__init__()
        for name, value, low in (("vocab_size", vocab_size, 3), ("width", width, 1), ("depth", depth, 1)):
            if value < low:
                raise ValueError(f"conditioner.{name}={value} is invalid: it must be at least {low}")
        if num_heads < 1 or width % num_heads:
            raise ValueError(f"conditioner.num_heads={num_heads} must be >= 1 and divide the width {width}")
        self.max_length = max_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        # N(0, 1) like the class tokens: the UNet's key/value projections expect unit-scale inputs
        self.position_embedding = nn.Parameter(torch.randn(max_length, width) * 0.1)  # (L_max, width)
        layer = nn.TransformerEncoderLayer(
            width, num_heads, dim_feedforward=4 * width, dropout=dropout, batch_first=True, norm_first=True
        )
        # nested tensors (the eval-mode fast path) would zero padded outputs differently in train and eval
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """``ids`` ``(B, L)`` long, ``mask`` ``(B, L)`` bool (False = padding) -> ``(B, L, width)``."""
        length = ids.shape[1]
        positions = self.position_embedding[:length]  # (L, width)
        if length > self.max_length:  # longer only by padding (which nothing attends to): no position for it
            if bool(mask[:, self.max_length :].any()):
                raise ValueError(f"a token sequence is longer than the encoder's max_length={self.max_length}")
            positions = torch.cat([positions, positions.new_zeros(length - self.max_length, positions.shape[1])])
        x = self.token_embedding(ids) + positions  # (B, L, width)
        x = self.layers(x, src_key_padding_mask=~mask)  # (B, L, width); padding is never attended
        return self.norm(x)  # (B, L, width)

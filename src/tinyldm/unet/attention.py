"""Transformer blocks that let the UNet attend over space and to the conditioning tokens.

This is the part of Stable Diffusion that makes it *conditional*: image
features (queries) attend to a sequence of context tokens (keys and values).
In tinyldm the context is a handful of learned tokens per class (see
:class:`tinyldm.conditioners.ClassConditioner`), so class labels reach the
network only through the cross-attention here.

Layout follows CompVis latent-diffusion's ``SpatialTransformer``: the feature
map is flattened into a sequence of ``H*W`` tokens, passed through pre-norm
transformer layers and folded back, with a zero-initialised output projection
so that a freshly built block is exactly the identity.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F


class Attention(nn.Module):
    """Multi-head attention, used both as self-attention and as cross-attention.

    With ``context_dim=None`` keys and values come from the queries' own
    sequence (self-attention); otherwise from a context sequence of width
    ``context_dim`` (cross-attention). The kernel is
    :func:`torch.nn.functional.scaled_dot_product_attention`, which picks a
    fused (flash / memory-efficient) implementation when one is available.

    Args:
        query_dim: width of the query tokens (and of the output).
        context_dim: width of the context tokens; ``None`` means ``query_dim``.
        num_heads: number of attention heads.
        head_dim: width of each head; the inner width is ``num_heads * head_dim``.
        dropout: dropout on the output projection.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        num_heads: int = 4,
        head_dim: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner_dim = num_heads * head_dim
        context_dim = query_dim if context_dim is None else context_dim
        self.num_heads = num_heads
        # No biases on q/k/v: a bias on k shifts every logit of a query equally
        # (softmax ignores it) and the v bias is absorbed by the output bias.
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B, N, query_dim)``; ``context``: ``(B, L, context_dim)`` or ``None``.

        ``context_mask``: ``(B, L)`` bool, False at padding keys, which then get no attention weight.
        """
        context = x if context is None else context
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.num_heads)  # (B, heads, N, head_dim)
        k = rearrange(self.to_k(context), "b l (h d) -> b h l d", h=self.num_heads)  # (B, heads, L, head_dim)
        v = rearrange(self.to_v(context), "b l (h d) -> b h l d", h=self.num_heads)  # (B, heads, L, head_dim)
        attn_mask = None if context_mask is None else context_mask[:, None, None, :]  # (B, 1, 1, L), broadcast
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, heads, N, head_dim)
        out = rearrange(out, "b h n d -> b n (h d)")  # (B, N, inner_dim)
        return self.to_out(out)  # (B, N, query_dim)


class GEGLU(nn.Module):
    """Gated GELU projection: ``value * gelu(gate)`` with both halves from one linear layer.

    The gate lets the feed-forward switch features on and off per token, which
    Shazeer (2020) found consistently better than a plain GELU MLP; Stable
    Diffusion uses it in every transformer block.
    """

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)  # (B, N, dim_in) -> 2 x (B, N, dim_out)
        return value * F.gelu(gate)  # (B, N, dim_out)


class FeedForward(nn.Module):
    """Transformer MLP: ``GEGLU(dim -> mult*dim) -> dropout -> Linear(mult*dim -> dim)``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = mult * dim
        self.net = nn.Sequential(GEGLU(dim, hidden), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, N, dim) -> (B, N, dim)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: self-attention, cross-attention to the context, GEGLU MLP.

    ``x + self_attn(norm1(x))``, then ``x + cross_attn(norm2(x), context)``,
    then ``x + ff(norm3(x))``. Self-attention mixes information across the
    whole (small) feature map; cross-attention injects the conditioning.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int, head_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, None, num_heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, context_dim, num_heads, head_dim, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B, N, dim)``; ``context``: ``(B, L, context_dim)``; returns ``(B, N, dim)``.

        ``context_mask`` ``(B, L)`` (False = padding) applies to the cross-attention only.
        """
        x = x + self.self_attn(self.norm1(x))
        x = x + self.cross_attn(self.norm2(x), context, context_mask)
        x = x + self.ff(self.norm3(x))
        return x


class SpatialTransformer(nn.Module):
    """Run transformer blocks over a feature map and add the result back to it.

    ``GroupNorm -> proj_in -> (B, C, H, W) -> (B, H*W, inner) -> depth x
    TransformerBlock -> proj_out -> (B, C, H, W)``, plus the input (residual).

    ``proj_out`` starts at exactly zero, so at initialisation the whole module
    is the identity and the UNet trains at first like a plain (unconditional)
    DDPM UNet; attention -- and with it the dependence on the context -- is
    phased in by gradient descent. A consequence worth knowing: a freshly
    initialised conditional UNet ignores its context entirely.

    Args:
        channels: channels of the feature map (kept unchanged).
        context_dim: width of the context tokens.
        depth: number of stacked :class:`TransformerBlock` s (at least 1).
        num_heads: attention heads per block.
        head_dim: width per head; the token width inside is ``num_heads * head_dim``.
        dropout: dropout inside attention outputs and the MLP.
        groups: GroupNorm groups for the input normalisation.
    """

    def __init__(
        self,
        channels: int,
        context_dim: int,
        depth: int = 1,
        num_heads: int = 4,
        head_dim: int = 32,
        dropout: float = 0.0,
        groups: int = 8,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"SpatialTransformer depth={depth} is invalid: it needs at least 1 block")
        inner_dim = num_heads * head_dim
        self.norm = nn.GroupNorm(groups, channels)
        self.proj_in = nn.Linear(channels, inner_dim)
        self.blocks = nn.ModuleList(
            TransformerBlock(inner_dim, context_dim, num_heads, head_dim, dropout) for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner_dim, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B, C, H, W)``; ``context``: ``(B, L, context_dim)``; returns ``(B, C, H, W)``."""
        height, width = x.shape[-2:]
        h = rearrange(self.norm(x), "b c h w -> b (h w) c")  # (B, C, H, W) -> (B, H*W, C)
        h = self.proj_in(h)  # (B, H*W, C) -> (B, H*W, inner)
        for block in self.blocks:
            h = block(h, context, context_mask)  # (B, H*W, inner)
        h = self.proj_out(h)  # (B, H*W, inner) -> (B, H*W, C)
        h = rearrange(h, "b (h w) c -> b c h w", h=height, w=width)  # (B, H*W, C) -> (B, C, H, W)
        return x + h

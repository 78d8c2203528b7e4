"""The denoising UNet: Stable Diffusion's ``UNet2DConditionModel`` in miniature.

Encoder levels of ResNet blocks (each optionally followed by a
:class:`~tinyldm.unet.attention.SpatialTransformer`) halve the resolution
between levels; a bottleneck of ResNet / transformer / ResNet; a mirrored
decoder that concatenates the encoder's skip connections back in. The
timestep enters every ResNet block; the conditioning (class tokens) enters
*only* through the transformers' cross-attention, so ``transformer_depth=0``
is the plain, unconditional DDPM UNet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .blocks import DownStage, MiddleStage, UpStage
from .embeddings import TimestepEmbedding


class UNet(nn.Module):
    """Predict the noise (or another diffusion target) for a noisy latent.

    Args:
        in_channels: channels of the input latent.
        out_channels: channels of the prediction; ``None`` means ``in_channels``.
        sample_size: height = width of the input; checked in ``forward`` and used
            to validate that every downsampling halves the map evenly.
        base_channels: width of the first level.
        channel_mult: width multiplier per level; ``len(channel_mult)`` levels,
            with ``len(channel_mult) - 1`` downsamplings between them.
        num_res_blocks: ResNet blocks per encoder level (the decoder uses one more,
            to consume the extra skip from each downsampling).
        attention_levels: indices of the levels whose ResNet blocks are followed by
            transformers. The middle block always gets one when ``transformer_depth > 0``.
        transformer_depth: transformer layers per SpatialTransformer; 0 disables
            attention (and therefore conditioning) entirely.
        num_heads: attention heads.
        head_dim: width per attention head.
        context_dim: width of the conditioning tokens.
        dropout: dropout in ResNet blocks and transformers.
        norm_groups: GroupNorm groups; must divide every level's width.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        sample_size: int = 8,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (0, 1),
        transformer_depth: int = 1,
        num_heads: int = 4,
        head_dim: int = 32,
        context_dim: int = 64,
        dropout: float = 0.0,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        attention_levels = tuple(sorted({int(level) for level in attention_levels}))
        out_channels = in_channels if out_channels is None else out_channels
        _validate_config(
            sizes=dict(
                in_channels=in_channels,
                out_channels=out_channels,
                sample_size=sample_size,
                base_channels=base_channels,
                num_res_blocks=num_res_blocks,
                num_heads=num_heads,
                head_dim=head_dim,
                context_dim=context_dim,
                norm_groups=norm_groups,
            ),
            channel_mult=channel_mult,
            attention_levels=attention_levels,
            transformer_depth=transformer_depth,
            dropout=dropout,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.sample_size = sample_size
        self.context_dim = context_dim
        self.transformer_depth = transformer_depth
        self.attention_levels = attention_levels

        time_emb_dim = 4 * base_channels
        self.time_embedding = TimestepEmbedding(base_channels, time_emb_dim)
        self.conv_in = nn.Conv2d(in_channels, base_channels, kernel_size=3, padding=1)

        common = dict(
            time_emb_dim=time_emb_dim,
            context_dim=context_dim,
            num_heads=num_heads,
            head_dim=head_dim,
            dropout=dropout,
            groups=norm_groups,
        )
        widths = [base_channels * m for m in channel_mult]
        last = len(widths) - 1

        # Encoder. skip_channels mirrors, in order, the tensors DownStage pushes.
        self.down = nn.ModuleList()
        skip_channels = [base_channels]  # the conv_in output is the first skip
        ch = base_channels
        for level, width in enumerate(widths):
            depth = transformer_depth if level in attention_levels else 0
            self.down.append(
                DownStage(ch, width, num_res_blocks, downsample=level < last, transformer_depth=depth, **common)
            )
            skip_channels += [width] * (num_res_blocks + (level < last))
            ch = width

        self.middle = MiddleStage(ch, transformer_depth=transformer_depth, **common)

        # Decoder: each level pops num_res_blocks + 1 skips (deepest first).
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            popped = [skip_channels.pop() for _ in range(num_res_blocks + 1)]
            depth = transformer_depth if level in attention_levels else 0
            self.up.append(UpStage(ch, widths[level], popped, upsample=level > 0, transformer_depth=depth, **common))
            ch = widths[level]
        assert not skip_channels, "every encoder skip must be consumed by the decoder"

        self.norm_out = nn.GroupNorm(norm_groups, ch)
        self.conv_out = nn.Conv2d(ch, out_channels, kernel_size=3, padding=1)

    def forward(
        self, x: Tensor, timesteps: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None
    ) -> Tensor:
        """Denoise one step.

        Args:
            x: ``(B, in_channels, sample_size, sample_size)`` noisy latents.
            timesteps: ``(B,)`` (or a scalar, broadcast to the batch) long or float timesteps.
            context: ``(B, L, context_dim)`` conditioning tokens; may be ``None``
                only when ``transformer_depth == 0``.
            context_mask: ``(B, L)`` bool, True where a context token is real and False where it is
                padding (a text prompt shorter than the sequence); cross-attention never attends to
                padding, so extra padding leaves the output unchanged. ``None``: every token is real.

        Returns:
            ``(B, out_channels, sample_size, sample_size)``.
        """
        timesteps = self._check_inputs(x, timesteps, context, context_mask)
        temb = self.time_embedding(timesteps)  # (B,) -> (B, 4 * base)
        h = self.conv_in(x)  # (B, C_in, H, W) -> (B, base, H, W)
        skips = [h]
        for stage in self.down:
            h = stage(h, temb, context, skips, context_mask)  # (B, c, h, w) -> (B, c', h/2, w/2), not at the last level
        h = self.middle(h, temb, context, context_mask)  # (B, c_last, h_min, w_min)
        for stage in self.up:
            h = stage(h, temb, context, skips, context_mask)  # (B, c, h, w) -> (B, c', 2h, 2w) except at level 0
        h = F.silu(self.norm_out(h))  # (B, c_0, H, W) with c_0 = base_channels * channel_mult[0]
        return self.conv_out(h)  # (B, c_0, H, W) -> (B, C_out, H, W)

    def _check_inputs(
        self, x: Tensor, timesteps: Tensor, context: Tensor | None, context_mask: Tensor | None = None
    ) -> Tensor:
        """Cheap shape checks with readable errors; returns timesteps as a ``(B,)`` tensor."""
        expected = (self.in_channels, self.sample_size, self.sample_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"UNet input has shape {tuple(x.shape)}, expected (B, {', '.join(map(str, expected))})")
        batch = x.shape[0]
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(batch)
        if tuple(timesteps.shape) != (batch,):
            raise ValueError(f"timesteps have shape {tuple(timesteps.shape)}, expected ({batch},) or a scalar")
        if context is None:
            if self.transformer_depth > 0:
                raise ValueError("context is required when transformer_depth > 0 (pass the conditioner output)")
            return timesteps
        if context.ndim != 3 or context.shape[-1] != self.context_dim:
            raise ValueError(
                f"context has shape {tuple(context.shape)}, expected (B, L, context_dim={self.context_dim})"
            )
        if context.shape[0] != batch:
            raise ValueError(f"context batch size {context.shape[0]} does not match input batch size {batch}")
        if context_mask is not None:
            if context_mask.dtype != torch.bool or tuple(context_mask.shape) != tuple(context.shape[:2]):
                raise ValueError(
                    f"context_mask has shape {tuple(context_mask.shape)} and dtype {context_mask.dtype}, expected "
                    f"a bool tensor of shape (B, L)={tuple(context.shape[:2])}"
                )
            if not bool(context_mask.any(dim=1).all()):
                raise ValueError("context_mask hides every token of a sample: each needs at least one (e.g. <bos>)")
        return timesteps


def _validate_config(
    sizes: dict[str, int],
    channel_mult: tuple[int, ...],
    attention_levels: tuple[int, ...],
    transformer_depth: int,
    dropout: float,
) -> None:
    """Reject configurations that would fail deep inside ``forward`` (or silently misbehave).

    ``sizes`` holds the integer hyperparameters that must be positive, by name.
    """
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name}={value} is invalid: it must be a positive integer")
    if not channel_mult or min(channel_mult) < 1:
        raise ValueError(f"channel_mult={list(channel_mult)} is invalid: it needs at least one positive multiplier")
    if transformer_depth < 0:
        raise ValueError(
            f"transformer_depth={transformer_depth} is invalid: use 0 (no attention) or a positive number of layers"
        )
    num_levels = len(channel_mult)
    bad_levels = [level for level in attention_levels if not 0 <= level < num_levels]
    if bad_levels:
        raise ValueError(
            f"attention_levels={list(attention_levels)} contains {bad_levels}: "
            f"levels must lie in [0, {num_levels - 1}] for channel_mult of length {num_levels}"
        )
    base_channels, norm_groups, sample_size = sizes["base_channels"], sizes["norm_groups"], sizes["sample_size"]
    for mult in channel_mult:
        width = base_channels * mult
        if width % norm_groups:
            raise ValueError(
                f"channel count {width} (base_channels={base_channels} x {mult}) is not divisible by "
                f"norm_groups={norm_groups}: GroupNorm needs every level's width divisible by norm_groups"
            )
    halvings = num_levels - 1
    factor = 2**halvings
    if sample_size % factor:
        raise ValueError(
            f"sample_size={sample_size} cannot be halved {halvings} time(s) evenly: "
            f"the UNet needs sample_size divisible by {factor}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} is invalid: it must lie in [0, 1)")


def unet_config_for(config: Mapping[str, Any], latent_shape: Sequence[int]) -> dict[str, Any]:
    """A UNet config (``conf/unet``) with its in/out channels and sample size taken from the stage-1 latent.

    Unset (``None`` or ``???``) values are filled in; set ones must match the latent shape ``(C, h, w)``, or
    the error names the key and the value it needs.
    """
    channels, height, width = (int(s) for s in latent_shape)
    if height != width:
        raise ValueError(f"the UNet needs square latents, got {height}x{width}")
    config = dict(config)
    for key, value in {"in_channels": channels, "out_channels": channels, "sample_size": height}.items():
        current = config.get(key)
        if current in (None, "???"):
            config[key] = value
        elif int(current) != value:
            raise ValueError(
                f"unet.{key}={current} does not match the stage-1 latent shape {tuple(latent_shape)} "
                f"(needs {key}={value}); leave unet.{key} unset to take it from the autoencoder"
            )
    return config

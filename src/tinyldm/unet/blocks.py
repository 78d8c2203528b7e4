"""UNet stages: groups of ResNet(+transformer) blocks with their skip bookkeeping.

Kept apart from :mod:`.unet` so that the model class reads as a plain
encoder -> middle -> decoder pipeline while the channel arithmetic of the
skip connections lives in one place each for the way down and the way up.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import SpatialTransformer
from .resnet import Downsample, ResnetBlock, Upsample


class ResnetTransformerBlock(nn.Module):
    """A :class:`ResnetBlock`, optionally followed by a :class:`SpatialTransformer`.

    ``transformer_depth=0`` leaves out the transformer, and with it any use of
    the context.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        time_emb_dim: int,
        transformer_depth: int,
        context_dim: int,
        num_heads: int,
        head_dim: int,
        dropout: float,
        groups: int,
    ) -> None:
        super().__init__()
        self.resnet = ResnetBlock(in_ch, out_ch, time_emb_dim, dropout, groups)
        self.transformer = (
            SpatialTransformer(out_ch, context_dim, transformer_depth, num_heads, head_dim, dropout, groups)
            if transformer_depth > 0
            else None
        )

    def forward(self, x: Tensor, temb: Tensor, context: Tensor | None, context_mask: Tensor | None = None) -> Tensor:
        x = self.resnet(x, temb)  # (B, in_ch, H, W) -> (B, out_ch, H, W)
        if self.transformer is not None:
            x = self.transformer(x, context, context_mask)  # (B, out_ch, H, W)
        return x


class DownStage(nn.Module):
    """One encoder level: ``num_blocks`` blocks, then an optional stride-2 downsample.

    Every block output (and the downsampled map) is appended to ``skips`` for
    the decoder to concatenate back in.
    """

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, downsample: bool, **block_kwargs) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResnetTransformerBlock(in_ch if i == 0 else out_ch, out_ch, **block_kwargs) for i in range(num_blocks)
        )
        self.downsample = Downsample(out_ch) if downsample else None

    def forward(
        self, x: Tensor, temb: Tensor, context: Tensor | None, skips: list[Tensor], context_mask: Tensor | None = None
    ) -> Tensor:
        for block in self.blocks:
            x = block(x, temb, context, context_mask)  # (B, C_in, H, W) -> (B, out_ch, H, W)
            skips.append(x)
        if self.downsample is not None:
            x = self.downsample(x)  # (B, out_ch, H, W) -> (B, out_ch, H/2, W/2)
            skips.append(x)
        return x


class MiddleStage(nn.Module):
    """Bottleneck: ResNet, transformer (when ``transformer_depth > 0``), ResNet."""

    def __init__(self, channels: int, **block_kwargs) -> None:
        super().__init__()
        self.first = ResnetTransformerBlock(channels, channels, **block_kwargs)
        self.second = ResnetBlock(
            channels, channels, block_kwargs["time_emb_dim"], block_kwargs["dropout"], block_kwargs["groups"]
        )

    def forward(self, x: Tensor, temb: Tensor, context: Tensor | None, context_mask: Tensor | None = None) -> Tensor:
        x = self.first(x, temb, context, context_mask)  # (B, C, h, w)
        return self.second(x, temb)  # (B, C, h, w)


class UpStage(nn.Module):
    """One decoder level: ``len(skip_channels)`` blocks, each fed ``cat(x, skip)``, then an optional upsample.

    ``skip_channels`` lists the widths of the skips this stage pops, in pop order.
    """

    def __init__(self, in_ch: int, out_ch: int, skip_channels: list[int], upsample: bool, **block_kwargs) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for skip_ch in skip_channels:
            self.blocks.append(ResnetTransformerBlock(in_ch + skip_ch, out_ch, **block_kwargs))
            in_ch = out_ch
        self.upsample = Upsample(out_ch) if upsample else None

    def forward(
        self, x: Tensor, temb: Tensor, context: Tensor | None, skips: list[Tensor], context_mask: Tensor | None = None
    ) -> Tensor:
        for block in self.blocks:
            x = torch.cat([x, skips.pop()], dim=1)  # (B, C, H, W) + (B, C_skip, H, W) -> (B, C + C_skip, H, W)
            x = block(x, temb, context, context_mask)  # (B, C + C_skip, H, W) -> (B, out_ch, H, W)
        if self.upsample is not None:
            x = self.upsample(x)  # (B, out_ch, H, W) -> (B, out_ch, 2H, 2W)
        return x

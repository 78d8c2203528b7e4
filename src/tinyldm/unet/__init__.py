"""Denoising UNet with transformer blocks for cross-attention conditioning."""

from .attention import GEGLU, Attention, FeedForward, SpatialTransformer, TransformerBlock
from .embeddings import TimestepEmbedding, sinusoidal_embedding
from .resnet import Downsample, ResnetBlock, Upsample
from .unet import UNet, unet_config_for

__all__ = [
    "GEGLU",
    "Attention",
    "Downsample",
    "FeedForward",
    "ResnetBlock",
    "SpatialTransformer",
    "TimestepEmbedding",
    "TransformerBlock",
    "UNet",
    "Upsample",
    "sinusoidal_embedding",
    "unet_config_for",
]

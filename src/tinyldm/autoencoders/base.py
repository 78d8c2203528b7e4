"""The stage-1 interface every autoencoder implements.

Stage 2 only ever calls :meth:`Autoencoder.encode`, :meth:`Autoencoder.decode`,
:attr:`Autoencoder.latent_channels`, :meth:`Autoencoder.latent_shape` and reads the
``scale_factor`` buffer, so any module honouring this contract can sit under the diffusion model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class AutoencoderOutput:
    """What one training/validation forward pass returns.

    ``losses`` holds the *weighted* regularisation terms (KL, VQ commitment) that are added to the
    reconstruction loss; ``stats`` holds values to log or accumulate (e.g. VQ code indices);
    ``latent`` is the latent the decoder was given, before any quantisation (for a VAE, the
    posterior sample), for regularisers that decode it again (scale equivariance).
    """

    reconstruction: torch.Tensor  # (B, C, H, W)
    latent: torch.Tensor | None = None  # (B, latent_channels, H/f, W/f)
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Autoencoder(nn.Module, ABC):
    """Base class: owns the latent ``scale_factor`` and the shape bookkeeping.

    ``scale_factor`` (1 / std of the training latents, as in CompVis LDM) is a buffer so it travels
    inside every checkpoint: stage 2 multiplies latents by it before diffusing and divides by it
    before decoding, which keeps the diffusion model's inputs at unit variance whatever the
    autoencoder.
    """

    #: number of channels of the latent grid that stage 2 diffuses
    latent_channels: int
    #: spatial downsampling factor f (image H / latent h)
    downsample_factor: int

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale_factor", torch.tensor(1.0))

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, H, W) of an image -> (latent_channels, H/f, W/f); an uneven size is a clear error."""
        _, height, width = image_shape
        f = self.downsample_factor
        if height % f or width % f:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the autoencoder's downsampling "
                f"factor f={f}; pad the images (dataset.image_size) to a multiple of {f}"
            )
        return (self.latent_channels, height // f, width // f)

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [-1, 1] -> (B, latent_channels, H/f, W/f) latents (unscaled)."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_channels, h, w) unscaled latents -> (B, C, h*f, w*f) images."""

    def decode_with_grad(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` for a training loss: gradients reach ``z`` (a VQ-VAE passes them straight through
        its codebook) and no running statistics change. Any latent grid size the decoder accepts."""
        return self.decode(z)

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        """Training pass: reconstruction plus the variant's regularisation terms."""
        z = self.encode(x)
        return AutoencoderOutput(reconstruction=self.decode(z), latent=z)

    @property
    def is_trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

"""VQ-VAE: the encoder's output is snapped onto a learned codebook before decoding.

What stage 2 diffuses: the *pre-quantisation* latent, with the quantiser absorbed into
``decode`` (as CompVis LDM does for its VQ models). The diffusion model then works in a continuous
space where Gaussian noise makes sense, and the codebook acts as a final "snap to the data
manifold" that removes small sampling errors. Diffusing the quantised codes instead would ask a
Gaussian model to land exactly on a discrete set it cannot represent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tinyldm.autoencoders.ae import ConvAutoencoder
from tinyldm.autoencoders.base import AutoencoderOutput
from tinyldm.autoencoders.quantizer import VectorQuantizer


class VQVAE(ConvAutoencoder):
    def __init__(
        self,
        in_channels: int = 1,
        latent_channels: int = 4,
        channels: Sequence[int] = (32, 64, 128),
        num_res_blocks: int = 1,
        norm_groups: int = 8,
        num_embeddings: int = 256,
        beta: float = 0.25,
        decay: float = 0.99,
        dead_code_threshold: float = 1.0,
    ) -> None:
        super().__init__(in_channels, latent_channels, channels, num_res_blocks, norm_groups)
        self.quantizer = VectorQuantizer(
            num_embeddings, latent_channels, beta=beta, decay=decay, dead_code_threshold=dead_code_threshold
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.quantize(z))  # quantisation absorbed into decoding

    def decode_with_grad(self, z: torch.Tensor) -> torch.Tensor:
        quantized = self.quantizer.quantize(z)  # no EMA update: the codebook follows real latents only
        return self.decoder(z + (quantized - z).detach())  # straight-through, as in training

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        latent = self.encoder(x)  # (B, D, h, w), before quantisation
        quantized, commitment, indices = self.quantizer(latent)
        return AutoencoderOutput(
            reconstruction=self.decoder(quantized),
            latent=latent,
            losses={"commitment": commitment},
            stats={"indices": indices},
        )

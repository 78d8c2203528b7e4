"""KL-regularised autoencoder (the "KL-f4" flavour of CompVis LDM).

A light KL penalty towards N(0, I) keeps the latent space smooth and roughly centred without
forcing it to be a good generative prior on its own: the diffusion model does the generating.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tinyldm.autoencoders.base import Autoencoder, AutoencoderOutput
from tinyldm.autoencoders.blocks import Decoder, Encoder


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over latent elements, averaged over the batch."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)  # (B, C, h, w)
    return kl.flatten(1).sum(dim=1).mean()


class VariationalAutoencoder(Autoencoder):
    """Diagonal-Gaussian posterior q(z|x) with the reparameterisation trick.

    ``encode`` returns the posterior *mean*: stage 2 caches deterministic latents, and the mean is
    what the decoder saw most often during training.
    """

    def __init__(
        self,
        in_channels: int = 1,
        latent_channels: int = 4,
        channels: Sequence[int] = (32, 64, 128),
        num_res_blocks: int = 1,
        norm_groups: int = 8,
        kl_weight: float = 1e-6,
    ) -> None:
        super().__init__()
        if kl_weight < 0:
            raise ValueError(f"kl_weight={kl_weight} must be >= 0")
        self.latent_channels = latent_channels
        self.downsample_factor = 2 ** (len(channels) - 1)
        self.kl_weight = kl_weight
        # the encoder predicts mean and log-variance: twice the latent channels
        self.encoder = Encoder(in_channels, 2 * latent_channels, channels, num_res_blocks, norm_groups)
        self.decoder = Decoder(latent_channels, in_channels, channels, num_res_blocks, norm_groups)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) -> mean, logvar, each (B, C, H/f, W/f)."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # keep exp() finite, as CompVis does

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        mean, logvar = self.posterior(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()  # reparameterisation
        kl = gaussian_kl(mean, logvar)
        return AutoencoderOutput(
            reconstruction=self.decoder(z),
            losses={"kl": self.kl_weight * kl},
            stats={"kl": kl.detach()},
        )

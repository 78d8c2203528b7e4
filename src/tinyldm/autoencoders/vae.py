"""KL-regularised autoencoder (the "KL-f4" flavour of CompVis LDM).

A light KL penalty towards N(0, I) keeps the latent space smooth and roughly centred without
forcing it to be a good generative prior on its own: the diffusion model does the generating.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tinyldm.autoencoders.ae import ConvAutoencoder
from tinyldm.autoencoders.base import AutoencoderOutput


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over latent elements, averaged over the batch."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)  # (B, C, h, w)
    return kl.flatten(1).sum(dim=1).mean()


class VariationalAutoencoder(ConvAutoencoder):
    """Diagonal-Gaussian posterior q(z|x) with the reparameterisation trick.

    ``encode`` returns the posterior *mean*: stage 2 caches deterministic latents, and the mean is
    what the decoder saw most often during training.
    """

    encoder_channel_factor = 2  # the encoder predicts mean and log-variance

    def __init__(
        self,
        in_channels: int = 1,
        latent_channels: int = 4,
        channels: Sequence[int] = (32, 64, 128),
        num_res_blocks: int = 1,
        norm_groups: int = 8,
        kl_weight: float = 1e-6,
    ) -> None:
        if kl_weight < 0:
            raise ValueError(f"kl_weight={kl_weight} must be >= 0")
        super().__init__(in_channels, latent_channels, channels, num_res_blocks, norm_groups)
        self.kl_weight = kl_weight

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) -> mean, logvar, each (B, C, H/f, W/f)."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # keep exp() finite, as CompVis does

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        mean, logvar = self.posterior(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()  # reparameterisation
        kl = gaussian_kl(mean, logvar)
        return AutoencoderOutput(
            reconstruction=self.decoder(z),
            latent=z,
            losses={"kl": self.kl_weight * kl},
            stats={"kl": kl.detach()},
        )

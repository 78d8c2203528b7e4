"""Scale-equivariance regularisation of a stage-1 autoencoder.

Skorokhodov et al. 2025, "Improving the Diffusability of Autoencoders", https://arxiv.org/abs/2502.14831
(and, concurrently, EQ-VAE, https://arxiv.org/abs/2502.09509).

Why: an autoencoder trained only to reconstruct is free to put content in the high spatial
frequencies of its latent grid that no image region calls for. A diffusion model generates coarse
to fine (at high noise only the low frequencies survive), so such content is the last thing it
settles and the hardest to get right. Asking the decoder to turn a *downsampled* latent into the
*downsampled* image, ``D(down(z)) ≈ down(x)``, ties the latent's low frequencies to the image's
low frequencies, which pushes the latent's spectrum towards an image-like one.

The extra loss is a second, smaller decode of the same batch (a ``factor``-times smaller latent
grid): it changes stage 1 only, and stage 2 is untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from tinyldm.autoencoders.base import Autoencoder

__all__ = ["downsample", "scale_equivariance_loss", "validate_scale_equivariance"]


def validate_scale_equivariance(weight: object, factor: object, latent_shape: Sequence[int] | None = None) -> None:
    """Refuse a weight that is not a finite number >= 0, a factor that is not an integer >= 2, or a
    factor that does not divide the latent grid ``(C, h, w)``; each error names the setting."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 or weight == float("inf"):
        raise ValueError(
            f"model.training.scale_equivariance={weight!r} is not allowed: it must be a finite number >= 0 "
            "(0 turns the regularisation off)"
        )
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(
            f"model.training.scale_equivariance_factor={factor!r} is not allowed: it must be an integer >= 2"
        )
    if latent_shape is not None and weight > 0:
        _, height, width = latent_shape
        if height % factor or width % factor:
            raise ValueError(
                f"model.training.scale_equivariance_factor={factor} does not divide the {height}x{width} latent "
                f"grid: choose a factor that divides both sides"
            )


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average ``factor`` x ``factor`` blocks: ``(B, C, H, W)`` -> ``(B, C, H/factor, W/factor)``.

    The same box filter is applied to images and latents, so the pair stays consistent.
    """
    return F.avg_pool2d(x, kernel_size=factor)


def scale_equivariance_loss(
    autoencoder: Autoencoder,
    images: torch.Tensor,
    latent: torch.Tensor | None,
    factor: int = 2,
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
) -> torch.Tensor:
    """``distance(down(images), D(down(latent)))``, unweighted; gradients reach encoder and decoder.

    ``images``: ``(B, C, H, W)`` in [-1, 1]; ``latent``: ``(B, c, H/f, W/f)``, the latent the decoder
    was given in the same training pass (pre-quantisation for a VQ-VAE, the posterior sample for a VAE).
    """
    if latent is None:
        raise ValueError(
            f"{type(autoencoder).__name__}.forward returns no latent (AutoencoderOutput.latent), so "
            "model.training.scale_equivariance cannot be used with it; set it to 0"
        )
    target = downsample(images, factor)  # (B, C, H/factor, W/factor)
    small = autoencoder.decode_with_grad(downsample(latent, factor))  # (B, C, H/factor, W/factor)
    return distance(small.float(), target.float())

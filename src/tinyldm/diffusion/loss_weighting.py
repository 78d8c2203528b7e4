"""Per-timestep loss weights for diffusion training.

Plain MSE on the noise gives every timestep the same weight, so the many nearly-clean, easy
timesteps and the noisy, hard ones pull the shared network in conflicting directions and
training converges slowly. Min-SNR-gamma (Hang et al., 2023) caps each timestep's weight at
``min(SNR_t, gamma)`` in x0-space terms; for the usual parameterisations that is::

    epsilon:       w_t = min(SNR_t, gamma) / SNR_t
    v_prediction:  w_t = min(SNR_t, gamma) / (SNR_t + 1)
    sample (x0):   w_t = min(SNR_t, gamma)

with ``SNR_t = alpha_bar_t / (1 - alpha_bar_t)``; gamma = 5 is the paper's default.
"""

from __future__ import annotations

import math

from torch import Tensor


def validate_min_snr_gamma(gamma: float | None) -> float | None:
    """None (plain MSE) or a finite gamma > 0; anything else raises with the value."""
    if gamma is None:
        return None
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (0 < gamma < math.inf):
        raise ValueError(f"diffusion.loss.min_snr_gamma must be null (plain MSE) or a finite number > 0, got {gamma!r}")
    return float(gamma)


def min_snr_weights(alphas_cumprod: Tensor, timesteps: Tensor, prediction_type: str, gamma: float) -> Tensor:
    """``(B,)`` weights for the per-sample losses at ``timesteps`` (see the module docstring)."""
    alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps].double()  # (B,)
    snr = alpha_bar / (1 - alpha_bar)
    capped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        weights = capped / snr
    elif prediction_type == "v_prediction":
        weights = capped / (snr + 1)
    elif prediction_type == "sample":
        weights = capped
    else:
        raise ValueError(f"min-SNR weighting has no rule for prediction_type={prediction_type!r}")
    return weights.float()

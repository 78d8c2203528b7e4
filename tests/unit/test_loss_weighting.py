"""Min-SNR-gamma weights: for every parameterisation the weighted loss is min(SNR, gamma) x the x0-space MSE."""

from __future__ import annotations

import pytest
import torch

from tinyldm.diffusion import NoiseSchedule
from tinyldm.diffusion.loss import DiffusionLoss
from tinyldm.diffusion.loss_weighting import min_snr_weights, validate_min_snr_gamma


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_weighted_loss_equals_capped_snr_times_x0_error(prediction_type):
    sched = NoiseSchedule(prediction_type=prediction_type)
    gen = torch.Generator().manual_seed(0)
    timesteps = torch.tensor([0, 10, 100, 300, 700, 999])
    x_t = torch.randn(6, 2, 3, 3, generator=gen, dtype=torch.float64)
    output_a, output_b = torch.randn(2, 6, 2, 3, 3, generator=gen, dtype=torch.float64)
    alpha_bar = sched.alphas_cumprod[timesteps].double().reshape(-1, 1, 1, 1)

    # two network outputs -> two x0 estimates; their distance is the x0-space error
    x0_a, x0_b = (sched.predict_x0(out, x_t, alpha_bar) for out in (output_a, output_b))
    x0_error = (x0_a - x0_b).pow(2).flatten(1).mean(1)  # (B,)
    output_error = (output_a - output_b).pow(2).flatten(1).mean(1)

    gamma = 5.0
    snr = (alpha_bar / (1 - alpha_bar)).flatten()
    weights = min_snr_weights(sched.alphas_cumprod, timesteps, prediction_type, gamma).double()
    torch.testing.assert_close(weights * output_error, snr.clamp(max=gamma) * x0_error, rtol=1e-4, atol=1e-8)


def test_epsilon_weights_damp_only_the_nearly_clean_timesteps():
    sched = NoiseSchedule()
    weights = min_snr_weights(sched.alphas_cumprod, torch.arange(1000), "epsilon", 5.0)
    assert weights.shape == (1000,) and torch.all((weights > 0) & (weights <= 1))
    assert weights[0] < 0.01  # SNR ~ 1e4 at t = 0
    assert torch.all(weights[500:] == 1)  # SNR < 5 there: plain MSE
    assert torch.all(weights[1:] >= weights[:-1])


@pytest.mark.parametrize("gamma", [0, -1.0, float("inf"), "5", True])
def test_bad_gamma_is_refused_with_its_value(gamma):
    with pytest.raises(ValueError, match="min_snr_gamma.*got"):
        validate_min_snr_gamma(gamma)
    with pytest.raises(ValueError, match="min_snr_gamma.*got"):
        DiffusionLoss(min_snr_gamma=gamma)  # diffusion.loss.min_snr_gamma
    assert validate_min_snr_gamma(None) is None and validate_min_snr_gamma(5) == 5.0
    assert DiffusionLoss(min_snr_gamma=5).min_snr_gamma == 5.0


def test_diffusion_module_weights_training_loss_but_not_validation_loss(compose):
    """diffusion.loss.min_snr_gamma reaches the module; weighted=False (validation) is the plain MSE."""
    from tests.helpers.modules import diffusion_module

    cfg = compose(["debug=smoke", "model=ae"])
    latent_shape = (4, 8, 8)

    def module(gamma):
        return diffusion_module(cfg, latent_shape, loss={"min_snr_gamma": gamma})

    plain, weighted = module(None), module(5.0)
    assert (plain.loss.min_snr_gamma, weighted.loss.min_snr_gamma) == (None, 5.0)
    latents, labels = torch.randn(16, *latent_shape), torch.arange(16) % 10

    def loss(m, **kwargs):
        return m.loss(
            m.denoiser,
            m.noise_schedule,
            latents,
            labels,
            generator=torch.Generator().manual_seed(1),
            drop_labels=False,
            **kwargs,
        )

    assert torch.equal(loss(weighted, weighted=False), loss(plain))  # same weights, same draws: identical MSE
    assert loss(weighted) < loss(plain)  # epsilon weights are <= 1 and < 1 for the nearly clean timesteps

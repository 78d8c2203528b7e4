"""SDE-DPM-Solver++(2M): it samples the data distribution, reproducibly from a seed, on either grid, with its noise
on every step or only in a window of timesteps."""

from __future__ import annotations

import pytest
import torch

from tests.unit.test_dpm_solver import _gaussian_data_denoiser
from tinyldm.diffusion import (
    DiffusionSampler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEMultistepScheduler,
    NoiseSchedule,
)


def _sample(solver, steps: int, predict, seed: int, n: int = 8192) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=generator)  # (N,) x_T
    solver.set_timesteps(steps)
    for t in solver.timesteps:
        x = solver.step(predict(x, int(t)), t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_sde_samples_have_the_data_mean_and_spread(beta_schedule):
    """With the exact denoiser of x0 ~ N(0.5, 0.6^2), 30 SDE steps give that distribution; the noise is needed:
    the same update without its noise term shrinks the spread far below the data's."""
    schedule = NoiseSchedule(beta_schedule=beta_schedule)
    predict = _gaussian_data_denoiser(schedule, mean=0.5, std=0.6)
    samples = _sample(DPMSolverSDEMultistepScheduler(schedule), 30, predict, seed=0)
    assert abs(samples.mean().item() - 0.5) < 0.03 and abs(samples.std().item() - 0.6) < 0.03

    class Noiseless(DPMSolverSDEMultistepScheduler):
        def _update(self, sample, sigma_ratio, alpha_bar_prev, h, data_term, generator, timestep):
            return sigma_ratio * torch.exp(-h) * sample + alpha_bar_prev**0.5 * -torch.expm1(-2 * h) * data_term

    assert _sample(Noiseless(schedule), 30, predict, seed=0).std().item() < 0.5


def test_sde_is_fixed_by_its_seed_and_differs_from_the_ode():
    schedule = NoiseSchedule()
    predict = _gaussian_data_denoiser(schedule, mean=0.0, std=1.0)
    sde = DPMSolverSDEMultistepScheduler(schedule)
    a, b = _sample(sde, 10, predict, seed=3, n=64), _sample(sde, 10, predict, seed=3, n=64)
    assert torch.equal(a, b)
    assert not torch.equal(a, _sample(sde, 10, predict, seed=4, n=64))
    assert not torch.allclose(a, _sample(DPMSolverMultistepScheduler(schedule), 10, predict, seed=3, n=64))


def test_sampler_kind_dpmpp_2m_sde_guides_on_either_grid(compose):
    from hydra.utils import instantiate

    schedule = NoiseSchedule(beta_schedule="cosine", prediction_type="v_prediction")

    def denoiser(x, t, context):  # (B, C, H, W), (B,), (B, L, D)
        return 0.1 * x + context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)

    cond, uncond = torch.ones(3, 2, 4), torch.zeros(1, 2, 4)
    for overrides in ([], ["sampler.timestep_spacing=logsnr", "sampler.logsnr_range=[-3.5,3.0]"]):
        sampler = instantiate(compose(["sampler=dpmpp_2m_sde", "sampler.steps=6", *overrides]).sampler)
        assert isinstance(sampler, DiffusionSampler) and sampler.kind == "dpmpp_2m_sde"
        assert isinstance(sampler.build_solver(schedule), DPMSolverSDEMultistepScheduler)
        runs = [
            sampler.sample(denoiser, schedule, (3, 1, 4, 4), cond, uncond, generator=torch.Generator().manual_seed(0))
            for _ in range(2)
        ]
        assert torch.isfinite(runs[0]).all() and torch.equal(runs[0], runs[1])


def test_noise_interval_takes_the_ode_step_outside_it_and_still_samples_the_data():
    """No step in the window: the ODE solver's samples exactly; every step: the plain SDE's; a window in between
    (noise only at high noise) gives neither, and still the data's mean and spread (the updates share marginals)."""
    schedule = NoiseSchedule(beta_schedule="cosine")
    predict = _gaussian_data_denoiser(schedule, mean=0.5, std=0.6)

    def sde(interval):
        return DPMSolverSDEMultistepScheduler(schedule, noise_interval=interval)

    ode = _sample(DPMSolverMultistepScheduler(schedule), 30, predict, seed=1)
    full = _sample(sde(None), 30, predict, seed=1)
    assert torch.equal(_sample(sde([0, 0]), 30, predict, seed=1), ode)  # the trailing grid never starts a step at 0
    assert torch.equal(_sample(sde([0, 999]), 30, predict, seed=1), full)
    window = _sample(sde([550, 999]), 30, predict, seed=1)
    assert not torch.allclose(window, ode) and not torch.allclose(window, full)
    assert abs(window.mean().item() - 0.5) < 0.03 and abs(window.std().item() - 0.6) < 0.03


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kind": "dpmpp_2m", "noise_interval": [550, 999]}, "only used by kind=dpmpp_2m_sde"),
        ({"kind": "ddim", "noise_interval": [0, 10]}, "only used by kind=dpmpp_2m_sde"),
        ({"kind": "dpmpp_2m_sde", "noise_interval": [600, 500]}, "0 <= t_low <= t_high"),
        ({"kind": "dpmpp_2m_sde", "noise_interval": [0.5, 999]}, "integer timesteps"),
        ({"kind": "dpmpp_2m_sde", "noise_interval": [550]}, "[t_low, t_high]"),
        ({"kind": "dpmpp_2m_sde", "noise_interval": "550-999"}, "[t_low, t_high]"),
    ],
)
def test_bad_noise_intervals_are_refused_naming_the_option(settings, message):
    with pytest.raises(ValueError, match="noise_interval") as error:
        DiffusionSampler(**settings)
    assert message in str(error.value)


def test_sampler_config_passes_the_noise_interval_to_the_solver(compose):
    from hydra.utils import instantiate

    sampler = instantiate(compose(["sampler=dpmpp_2m_sde", "sampler.noise_interval=[550,999]"]).sampler)
    assert sampler.noise_interval == (550, 999)
    assert sampler.build_solver(NoiseSchedule()).noise_interval == (550, 999)
    for kind in ("ddpm", "ddim", "dpmpp_2m"):  # every sampler config has the key, off
        assert instantiate(compose([f"sampler={kind}"]).sampler).noise_interval is None

"""SDE-DPM-Solver++(2M): it samples the data distribution, reproducibly from a seed, on either grid, with its noise
on every step or only in a window of timesteps."""

from __future__ import annotations

import pytest
import torch

from tests.unit.test_dpm_solver import _gaussian_data_denoiser
from tinyldm.diffusion import (
    ConditionedDenoiser,
    DDIMSolver,
    DDPMSolver,
    DPMSolver2M,
    DPMSolver2MSDE,
    NoiseSchedule,
    sample,
)


def _sample(solver, schedule: NoiseSchedule, predict, seed: int, n: int = 8192) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=generator)  # (N,) x_T
    solver.set_timesteps(schedule)
    for t in solver.timesteps:
        x = solver.step(predict(x, int(t)), t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_sde_samples_have_the_data_mean_and_spread(beta_schedule):
    """With the exact denoiser of x0 ~ N(0.5, 0.6^2), 30 SDE steps give that distribution; the noise is needed:
    the same update without its noise term shrinks the spread far below the data's."""
    schedule = NoiseSchedule(beta_schedule=beta_schedule)
    predict = _gaussian_data_denoiser(schedule, mean=0.5, std=0.6)
    samples = _sample(DPMSolver2MSDE(steps=30), schedule, predict, seed=0)
    assert abs(samples.mean().item() - 0.5) < 0.03 and abs(samples.std().item() - 0.6) < 0.03

    class Noiseless(DPMSolver2MSDE):
        def _update(self, sample, sigma_ratio, alpha_bar_prev, h, data_term, generator, timestep):
            return sigma_ratio * torch.exp(-h) * sample + alpha_bar_prev**0.5 * -torch.expm1(-2 * h) * data_term

    assert _sample(Noiseless(steps=30), schedule, predict, seed=0).std().item() < 0.5


def test_sde_is_fixed_by_its_seed_and_differs_from_the_ode():
    schedule = NoiseSchedule()
    predict = _gaussian_data_denoiser(schedule, mean=0.0, std=1.0)
    sde = DPMSolver2MSDE(steps=10)
    a, b = _sample(sde, schedule, predict, seed=3, n=64), _sample(sde, schedule, predict, seed=3, n=64)
    assert torch.equal(a, b)
    assert not torch.equal(a, _sample(sde, schedule, predict, seed=4, n=64))
    assert not torch.allclose(a, _sample(DPMSolver2M(steps=10), schedule, predict, seed=3, n=64))


def test_sampler_dpmpp_2m_sde_guides_on_either_grid(compose):
    from hydra.utils import instantiate

    schedule = NoiseSchedule(beta_schedule="cosine", prediction_type="v_prediction")

    def denoiser(x, t, context):  # (B, C, H, W), (B,), (B, L, D)
        return 0.1 * x + context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)

    model = ConditionedDenoiser(denoiser, torch.ones(3, 2, 4), uncond_context=torch.zeros(1, 2, 4))
    for overrides in ([], ["sampler.timestep_spacing=logsnr", "sampler.logsnr_range=[-3.5,3.0]"]):
        cfg = compose(["sampler=dpmpp_2m_sde", "sampler.steps=6", *overrides])
        solver, guidance = instantiate(cfg.sampler), instantiate(cfg.guidance)
        assert isinstance(solver, DPMSolver2MSDE) and solver.name == "dpmpp_2m_sde" and guidance.scale == 2.0
        runs = [
            sample(model, schedule, solver, guidance, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0))
            for _ in range(2)
        ]
        assert torch.isfinite(runs[0]).all() and torch.equal(runs[0], runs[1])


def test_noise_interval_takes_the_ode_step_outside_it_and_still_samples_the_data():
    """No step in the window: the ODE solver's samples exactly; every step: the plain SDE's; a window in between
    (noise only at high noise) gives neither, and still the data's mean and spread (the updates share marginals)."""
    schedule = NoiseSchedule(beta_schedule="cosine")
    predict = _gaussian_data_denoiser(schedule, mean=0.5, std=0.6)

    def sde(interval):
        return DPMSolver2MSDE(steps=30, noise_interval=interval)

    ode = _sample(DPMSolver2M(steps=30), schedule, predict, seed=1)
    full = _sample(sde(None), schedule, predict, seed=1)
    assert torch.equal(_sample(sde([0, 0]), schedule, predict, seed=1), ode)  # the trailing grid never starts at 0
    assert torch.equal(_sample(sde([0, 999]), schedule, predict, seed=1), full)
    window = _sample(sde([550, 999]), schedule, predict, seed=1)
    assert not torch.allclose(window, ode) and not torch.allclose(window, full)
    assert abs(window.mean().item() - 0.5) < 0.03 and abs(window.std().item() - 0.6) < 0.03


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        ([600, 500], "0 <= t_low <= t_high"),
        ([0.5, 999], "integer timesteps"),
        ([550], "[t_low, t_high]"),
        ("550-999", "[t_low, t_high]"),
    ],
)
def test_bad_noise_intervals_are_refused_naming_the_option(interval, message):
    with pytest.raises(ValueError, match="^noise_interval") as error:
        DPMSolver2MSDE(noise_interval=interval)
    assert message in str(error.value)


@pytest.mark.parametrize("cls", [DPMSolver2M, DDIMSolver, DDPMSolver])
def test_a_solver_that_adds_no_noise_of_its_own_takes_no_noise_interval(cls):
    """Only the SDE solver has the setting: anywhere else it would silently do nothing, so it is refused."""
    with pytest.raises(TypeError, match=rf"{cls.__name__} \({cls.name}\) has no setting noise_interval"):
        cls().replace(noise_interval=[550, 999])
    with pytest.raises(TypeError, match="noise_interval"):
        cls(noise_interval=[0, 10])


def test_sampler_config_passes_the_noise_interval_to_the_solver(compose):
    from hydra.utils import instantiate

    solver = instantiate(compose(["sampler=dpmpp_2m_sde", "sampler.noise_interval=[550,999]"]).sampler)
    assert solver.noise_interval == (550, 999) and solver.config["noise_interval"] == [550, 999]
    assert instantiate(compose(["sampler=dpmpp_2m_sde"]).sampler).noise_interval is None  # off by default
    for kind in ("ddpm", "ddim", "dpmpp_2m"):  # no other sampler config has the key
        assert "noise_interval" not in compose([f"sampler={kind}"]).sampler

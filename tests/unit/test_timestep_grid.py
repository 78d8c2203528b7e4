"""Inference timestep grids: trailing and half-log-SNR spacing, their refusals, and why logsnr exists."""

from __future__ import annotations

import pytest
import torch

from tinyldm.diffusion import DDIMSolver, DDPMSolver, DPMSolver2M, DPMSolver2MSDE, NoiseSchedule
from tinyldm.diffusion.timestep_grid import half_log_snr, logsnr_grid, trailing_grid

COSINE = NoiseSchedule(beta_schedule="cosine", prediction_type="v_prediction")


def test_trailing_grid_is_even_in_t_from_the_last_timestep():
    assert trailing_grid(1000, 20) == list(range(999, 0, -50))
    assert trailing_grid(100, 10) == [99, 89, 79, 69, 59, 49, 39, 29, 19, 9]


def test_logsnr_grid_starts_at_pure_noise_then_is_even_in_half_log_snr():
    grid = logsnr_grid(COSINE.alphas_cumprod, 20, (-3.5, 3.0))
    assert len(grid) == 20 and grid[0] == 999
    assert grid == sorted(set(grid), reverse=True)  # distinct, descending
    lam = half_log_snr(COSINE.alphas_cumprod.double())[grid[1:]]  # (19,)
    assert abs(float(lam[0]) + 3.5) < 0.02 and abs(float(lam[-1]) - 3.0) < 0.02
    gaps = lam.diff()
    expected = 6.5 / 18
    assert torch.allclose(gaps, torch.full_like(gaps, expected), atol=0.03), gaps  # even up to snapping to integers


def test_trailing_crosses_the_cosine_schedules_noisy_tail_in_one_step_and_logsnr_does_not():
    """What the grid is for: under the cosine schedule half log-SNR falls from -2.6 to -9.9 over t = 949..999."""
    lam = half_log_snr(COSINE.alphas_cumprod.double())
    trailing = trailing_grid(1000, 20)
    assert float(lam[trailing[0]] - lam[trailing[1]]) < -7  # one first-order step across 7 units of lambda
    logsnr = logsnr_grid(COSINE.alphas_cumprod, 20, (-3.5, 3.0))
    inside = [t for t in logsnr if -4.0 < float(lam[t]) < -1.5]
    assert len(inside) >= 5  # several steps where a well-separated class is decided


def _two_class_denoiser(schedule: NoiseSchedule, dim: int, separation: float, std: float):
    """The exact model output for data x0 ~ 1/2 N(+m, std^2 I) + 1/2 N(-m, std^2 I) in ``dim`` dimensions.

    In many dimensions the two classes are told apart at very low SNR (about 1 / (dim * separation^2)),
    as a digit's class is in an 8x8x4 latent: under the cosine schedule that is the tail a trailing grid skips.
    """
    mean = torch.full((dim,), separation, dtype=torch.float64)

    def predict(x_t: torch.Tensor, t: int) -> torch.Tensor:  # (N, dim) -> (N, dim)
        alpha_bar = schedule.alphas_cumprod[t].double()
        a, var = alpha_bar.sqrt(), alpha_bar * std**2 + (1 - alpha_bar)
        x = x_t.double()
        logits = torch.stack([-((x - a * m) ** 2).sum(1) / (2 * var) for m in (mean, -mean)], dim=1)  # (N, 2)
        weights = logits.softmax(dim=1)  # (N, 2) posterior of each class
        x0 = sum(weights[:, k : k + 1] * (m + a * std**2 / var * (x - a * m)) for k, m in enumerate((mean, -mean)))
        return schedule.output_from_x0(x0, x, alpha_bar).float()  # (N, dim)

    return predict


def _solve(solver, x_T: torch.Tensor, predict) -> torch.Tensor:
    x = x_T
    for t in solver.timesteps:
        x = solver.step(predict(x, int(t)), t, x).prev_sample
    return x


def test_logsnr_grid_is_closer_to_the_exact_ode_solution_at_20_steps():
    """Exact denoiser of a two-class mixture in 256 dimensions: the logsnr grid's 20 steps land closer to the
    all-timestep solution than the trailing grid's, and no sample changes class on it."""
    predict = _two_class_denoiser(COSINE, dim=256, separation=0.5, std=0.5)
    x_T = torch.randn(512, 256, generator=torch.Generator().manual_seed(0))  # (N, dim)
    every = DPMSolver2M(steps=1000)
    every.set_timesteps(COSINE)
    reference = _solve(every, x_T, predict)
    errors = {}
    for spacing, logsnr_range in (("trailing", None), ("logsnr", (-3.5, 3.0))):
        solver = DPMSolver2M(steps=20, timestep_spacing=spacing, logsnr_range=logsnr_range)
        solver.set_timesteps(COSINE)
        samples = _solve(solver, x_T, predict)
        errors[spacing] = float((samples - reference).pow(2).mean().sqrt())
        flipped = (samples.mean(1).sign() != reference.mean(1).sign()).float().mean()
        if spacing == "logsnr":
            assert flipped == 0
    assert errors["logsnr"] < 0.7 * errors["trailing"], errors


@pytest.mark.parametrize("cls", [DPMSolver2M, DPMSolver2MSDE])
def test_solver_builds_the_grid_it_is_given_and_all_timesteps_whatever_the_spacing(cls):
    solver = cls(steps=20, timestep_spacing="logsnr", logsnr_range=[-3.5, 3.0])
    assert solver.logsnr_range == (-3.5, 3.0)
    solver.set_timesteps(COSINE)
    assert solver.timesteps.tolist() == logsnr_grid(COSINE.alphas_cumprod, 20, (-3.5, 3.0))
    every = cls(steps=None, timestep_spacing="logsnr", logsnr_range=[-3.5, 3.0])
    every.set_timesteps(COSINE)
    assert every.timesteps.tolist() == list(range(999, -1, -1))
    unset = cls()
    assert unset.timestep_spacing == "trailing" and unset.logsnr_range is None  # unset: DPM-Solver++'s own grid
    unset.set_timesteps(COSINE)
    assert unset.timesteps.tolist() == trailing_grid(1000, 20)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"timestep_spacing": "leading"}, "timestep_spacing='leading' is not allowed; allowed: trailing, logsnr"),
        ({"timestep_spacing": "logsnr"}, r"logsnr_range=None must be \[lambda_noisy"),
        ({"timestep_spacing": "logsnr", "logsnr_range": [3, -3]}, "lambda_noisy < lambda_clean"),
        ({"timestep_spacing": "logsnr", "logsnr_range": [-3, "x"]}, "two finite numbers"),
        ({"logsnr_range": [-3, 3]}, "only used by timestep_spacing=logsnr"),
    ],
)
@pytest.mark.parametrize("cls", [DPMSolver2M, DPMSolver2MSDE])
def test_bad_grid_settings_are_refused_on_construction(cls, settings, message):
    with pytest.raises(ValueError, match=message):
        cls(**settings)
    with pytest.raises(ValueError, match=message):
        cls().replace(**settings)


@pytest.mark.parametrize("cls", [DDPMSolver, DDIMSolver])
@pytest.mark.parametrize(
    "settings", [{"timestep_spacing": "logsnr", "logsnr_range": [-3, 3]}, {"logsnr_range": [-3, 3]}]
)
def test_ddpm_and_ddim_walk_their_leading_grid_and_take_no_other(cls, settings):
    """Their grid is DDIM's "leading" one, not a setting: a grid option given to them is refused naming it."""
    assert not {"timestep_spacing", "logsnr_range"} & set(cls().config)
    with pytest.raises(TypeError, match=rf"{cls.__name__} \({cls.name}\) has no setting .*logsnr_range"):
        cls().replace(**settings)
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{next(iter(settings))}'"):
        cls(**settings)


@pytest.mark.parametrize(
    ("steps", "logsnr_range", "message"),
    [
        (20, [-12.0, 3.0], r"inside this noise schedule's half log-SNR range \(-9.92, 5.05\]"),
        (20, [-3.5, 9.0], "inside this noise schedule's half log-SNR range"),
        (400, [-3.5, 3.0], "steps=400 do not fit in logsnr_range"),
        (20, [-9.9, -9.8], "two grid points fall on the same timestep"),
    ],
)
def test_a_grid_that_does_not_fit_the_schedule_is_refused_before_sampling(steps, logsnr_range, message):
    solver = DPMSolver2M(steps=steps, timestep_spacing="logsnr", logsnr_range=logsnr_range)
    with pytest.raises(ValueError, match=message):
        solver.check_schedule(COSINE)
    with pytest.raises(ValueError, match=message):
        solver.set_timesteps(COSINE)

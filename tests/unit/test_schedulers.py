"""Noise schedule and solvers: parity with diffusers, exact-oracle recovery, validation, configs (legacy ones too)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tinyldm.diffusion import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    SOLVERS,
    DDIMSolver,
    DDPMSolver,
    DPMSolver2M,
    NoiseSchedule,
    SchedulerOutput,
    from_legacy_config,
    make_betas,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DIFFUSERS_SCHEDULE_NAME = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
BETA_RANGE = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "cosine": (1e-4, 0.02)}
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _schedule(schedule: str, prediction_type: str = "epsilon") -> NoiseSchedule:
    beta_start, beta_end = BETA_RANGE[schedule]
    return NoiseSchedule(
        num_train_timesteps=1000,
        beta_schedule=schedule,
        beta_start=beta_start,
        beta_end=beta_end,
        prediction_type=prediction_type,
    )


def _ours(cls, schedule: str, prediction_type: str = "epsilon", steps: int | None = None, **kwargs):
    """Solver ``cls`` with ``steps`` (``None``: every timestep) laid on the named training schedule (``kwargs``: the
    solver's own options)."""
    solver = cls(steps=steps, **kwargs)
    solver.set_timesteps(_schedule(schedule, prediction_type))
    return solver


def _theirs(name: str, schedule: str, prediction_type: str = "epsilon"):
    diffusers = pytest.importorskip("diffusers")
    beta_start, beta_end = BETA_RANGE[schedule]
    common = dict(
        num_train_timesteps=1000,
        beta_schedule=DIFFUSERS_SCHEDULE_NAME[schedule],
        beta_start=beta_start,
        beta_end=beta_end,
        prediction_type=prediction_type,
        clip_sample=False,
    )
    if name == "ddpm":
        return diffusers.DDPMScheduler(variance_type="fixed_small", **common)
    return diffusers.DDIMScheduler(set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading", **common)


schedules = pytest.mark.parametrize("schedule", BETA_SCHEDULES)
prediction_types = pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)


# --------------------------------------------------------------------------- schedules


@schedules
def test_betas_and_alphas_cumprod_match_diffusers(schedule):
    ours = _schedule(schedule)
    theirs = _theirs("ddpm", schedule)
    torch.testing.assert_close(ours.betas, theirs.betas, rtol=0, atol=0)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=0, atol=0)


@schedules
def test_schedules_are_monotone_and_alphas_cumprod_in_unit_interval(schedule):
    beta_start, beta_end = BETA_RANGE[schedule]
    betas = make_betas(schedule, 1000, beta_start, beta_end)
    assert betas.shape == (1000,)
    assert torch.all(betas[1:] >= betas[:-1]), "betas must be non-decreasing"
    assert torch.all((betas > 0) & (betas < 1))
    alphas_cumprod = torch.cumprod(1 - betas.double(), dim=0)
    assert torch.all(alphas_cumprod[1:] < alphas_cumprod[:-1]), "alpha_bar must strictly decrease"
    assert torch.all((alphas_cumprod > 0) & (alphas_cumprod <= 1))


def test_scaled_linear_is_linear_in_sqrt_beta_and_cosine_is_capped():
    betas = make_betas("scaled_linear", 11, 0.0004, 0.0144, dtype=torch.float64)
    torch.testing.assert_close(betas.sqrt(), torch.linspace(0.02, 0.12, 11, dtype=torch.float64))
    cosine = make_betas("cosine", 1000, dtype=torch.float64)
    assert cosine.max().item() == pytest.approx(0.999)
    assert make_betas("linear", 5, 0.1, 0.5).dtype == torch.float32


def test_make_betas_rejects_unknown_schedule_listing_allowed_names():
    with pytest.raises(ValueError, match=r"'sigmoid'.*linear, scaled_linear, cosine"):
        make_betas("sigmoid", 1000)
    with pytest.raises(ValueError, match="got 0"):
        make_betas("linear", 0)


# ---------------------------------------------------------------- forward process


@schedules
@prediction_types
def test_add_noise_get_velocity_and_training_target_match_diffusers(schedule, prediction_type):
    ours = _schedule(schedule, prediction_type)
    theirs = _theirs("ddpm", schedule, prediction_type)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, 4, 4, generator=gen)  # (B, C, H, W)
    noise = torch.randn(6, 3, 4, 4, generator=gen)
    timesteps = torch.tensor([0, 1, 250, 500, 998, 999])

    torch.testing.assert_close(ours.add_noise(x0, noise, timesteps), theirs.add_noise(x0, noise, timesteps), **TOL)
    velocity = theirs.get_velocity(x0, noise, timesteps)
    torch.testing.assert_close(ours.get_velocity(x0, noise, timesteps), velocity, **TOL)

    expected = {"epsilon": noise, "v_prediction": velocity, "sample": x0}[prediction_type]
    torch.testing.assert_close(ours.training_target(x0, noise, timesteps), expected, **TOL)


def test_add_noise_keeps_dtype_and_uses_per_sample_timesteps():
    sched = NoiseSchedule()
    x0 = torch.ones(2, 1, 2, 2, dtype=torch.float64)
    noise = torch.zeros_like(x0)
    x_t = sched.add_noise(x0, noise, torch.tensor([0, 999]))
    assert x_t.dtype == torch.float64
    alpha_bar = sched.alphas_cumprod.double()
    torch.testing.assert_close(x_t[0], torch.full_like(x_t[0], alpha_bar[0].sqrt().item()))
    torch.testing.assert_close(x_t[1], torch.full_like(x_t[1], alpha_bar[999].sqrt().item()))


# ------------------------------------------------------------------- inference grid


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
@pytest.mark.parametrize("steps", [1, 7, 50, 333, 1000])
def test_set_timesteps_matches_diffusers_leading_spacing(name, steps):
    ours = _ours(SOLVERS[name], "linear", steps=steps)
    theirs = _theirs(name, "linear")
    theirs.set_timesteps(steps)
    assert ours.timesteps.dtype == torch.long
    assert torch.equal(ours.timesteps, theirs.timesteps)
    assert torch.all(ours.timesteps[1:] < ours.timesteps[:-1]), "timesteps must be descending"


def test_default_grid_is_every_training_timestep():
    sched = DDPMSolver()
    assert sched.steps is None and sched.timesteps.tolist() == []  # no grid before a schedule is bound
    sched.set_timesteps(NoiseSchedule(num_train_timesteps=10))
    assert sched.timesteps.tolist() == list(range(9, -1, -1))


@pytest.mark.parametrize("cls", SOLVERS.values())
@pytest.mark.parametrize("steps", [0, 1001, -3, 2.5])
def test_set_timesteps_rejects_out_of_range(cls, steps):
    """Not a step count: refused when the solver is built; more steps than T: when it meets the schedule."""
    with pytest.raises(ValueError, match=rf"steps.*{steps}"):
        cls(steps=steps).set_timesteps(NoiseSchedule())
    if steps == 1001:
        with pytest.raises(ValueError, match="steps=1001 exceeds the noise schedule's num_train_timesteps=1000"):
            cls(steps=steps).check_schedule(NoiseSchedule())
    else:
        with pytest.raises(ValueError, match=rf"steps must be an integer >= 1 or null .*got {steps}"):
            cls(steps=steps)


# ---------------------------------------------------------------------- DDPM step


@schedules
@prediction_types
@pytest.mark.parametrize("num_inference_steps", [None, 50])
def test_ddpm_step_matches_diffusers_with_identical_generators(schedule, prediction_type, num_inference_steps):
    ours = _ours(DDPMSolver, schedule, prediction_type, steps=num_inference_steps)
    theirs = _theirs("ddpm", schedule, prediction_type)
    if num_inference_steps is not None:
        theirs.set_timesteps(num_inference_steps)
    grid = ours.timesteps
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 3, 4, 4, generator=gen)  # (B, C, H, W)
    model_output = torch.randn(2, 3, 4, 4, generator=gen)

    for t in [grid[0], grid[1], grid[len(grid) // 2], grid[-2], grid[-1]]:
        out = ours.step(model_output, t, sample, generator=torch.Generator().manual_seed(7))
        ref = theirs.step(model_output, t, sample, generator=torch.Generator().manual_seed(7))
        assert isinstance(out, SchedulerOutput)
        torch.testing.assert_close(out.pred_original_sample, ref.pred_original_sample, **TOL)
        torch.testing.assert_close(out.prev_sample, ref.prev_sample, **TOL)


def test_ddpm_step_adds_noise_except_at_t0_and_accepts_explicit_noise():
    sched = DDPMSolver()
    sched.set_timesteps(NoiseSchedule(num_train_timesteps=100))
    sample = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    a = sched.step(eps, 50, sample, generator=torch.Generator().manual_seed(2)).prev_sample
    b = sched.step(eps, 50, sample, generator=torch.Generator().manual_seed(3)).prev_sample
    assert not torch.allclose(a, b)
    noise = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(sched.step(eps, 50, sample, variance_noise=noise).prev_sample, a)
    final_a = sched.step(eps, 0, sample, generator=torch.Generator().manual_seed(2)).prev_sample
    final_b = sched.step(eps, 0, sample, generator=torch.Generator().manual_seed(3)).prev_sample
    assert torch.equal(final_a, final_b)


# ---------------------------------------------------------------------- DDIM step


@schedules
@prediction_types
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_step_matches_diffusers(schedule, prediction_type, eta):
    ours = _ours(DDIMSolver, schedule, prediction_type, steps=50)
    theirs = _theirs("ddim", schedule, prediction_type)
    theirs.set_timesteps(50)
    gen = torch.Generator().manual_seed(2)
    sample = torch.randn(2, 3, 4, 4, generator=gen)  # (B, C, H, W)
    model_output = torch.randn(2, 3, 4, 4, generator=gen)
    variance_noise = torch.randn(2, 3, 4, 4, generator=gen)

    for t in [980, 960, 500, 20, 0]:
        out = ours.step(model_output, t, sample, eta=eta, variance_noise=variance_noise)
        ref = theirs.step(model_output, t, sample, eta=eta, variance_noise=variance_noise)
        torch.testing.assert_close(out.pred_original_sample, ref.pred_original_sample, **TOL)
        torch.testing.assert_close(out.prev_sample, ref.prev_sample, **TOL)


def test_ddim_eta_from_constructor_and_seeded_generator_are_used():
    sched = DDIMSolver(steps=10, eta=0.5)
    sched.set_timesteps(NoiseSchedule(num_train_timesteps=100))
    sample = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    a = sched.step(eps, 50, sample, generator=torch.Generator().manual_seed(4)).prev_sample
    b = sched.step(eps, 50, sample, generator=torch.Generator().manual_seed(4)).prev_sample
    deterministic = sched.step(eps, 50, sample, eta=0.0).prev_sample
    assert torch.equal(a, b)
    assert not torch.allclose(a, deterministic)


# ------------------------------------------------------------- exact-oracle loops


def _oracle(sched: NoiseSchedule, x0: torch.Tensor):
    """A perfect network for one known ``x0``: returns the exact target at any ``x_t``."""

    def predict(x_t: torch.Tensor, t: int) -> torch.Tensor:
        alpha_bar = sched.alphas_cumprod[t].double()
        true_eps = (x_t.double() - alpha_bar.sqrt() * x0.double()) / (1 - alpha_bar).sqrt()
        if sched.prediction_type == "epsilon":
            return true_eps.float()
        if sched.prediction_type == "v_prediction":
            return (alpha_bar.sqrt() * true_eps - (1 - alpha_bar).sqrt() * x0.double()).float()
        return x0

    return predict


@schedules
@prediction_types
@pytest.mark.parametrize(("cls", "steps"), [(DDIMSolver, 50), (DPMSolver2M, 10)], ids=["ddim", "dpmpp_2m"])
def test_deterministic_loop_with_exact_oracle_recovers_x0(schedule, prediction_type, cls, steps):
    sched = _ours(cls, schedule, prediction_type, steps=steps)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 1, 4, 4, generator=gen).clamp(-2, 2)  # (B, C, H, W)
    predict = _oracle(sched.schedule, x0)

    x = torch.randn(2, 1, 4, 4, generator=gen)  # start from pure noise, not x_T of x0
    for t in sched.timesteps:
        x = sched.step(predict(x, int(t)), t, x).prev_sample
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-4)


def test_ddpm_loop_with_exact_oracle_recovers_x0():
    sched = DDPMSolver(steps=25)
    sched.set_timesteps(NoiseSchedule(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(2, 1, 4, 4, generator=gen).clamp(-2, 2)
    predict = _oracle(sched.schedule, x0)
    x = torch.randn(2, 1, 4, 4, generator=gen)
    for t in sched.timesteps:
        x = sched.step(predict(x, int(t)), t, x, generator=gen).prev_sample
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-4)


@pytest.mark.parametrize("cls", SOLVERS.values())
def test_clip_sample_clamps_predicted_x0(cls):
    schedule = NoiseSchedule(num_train_timesteps=100, prediction_type="sample")
    sched = cls(steps=10, clip_sample=True, clip_sample_range=0.5)
    sched.set_timesteps(schedule)
    t = int(sched.timesteps[0])
    out = sched.step(torch.full((1, 1, 2, 2), 3.0), t, torch.zeros(1, 1, 2, 2))
    assert out.pred_original_sample.max().item() == pytest.approx(0.5)
    unclipped = cls(steps=10)
    unclipped.set_timesteps(schedule)
    assert unclipped.step(torch.full((1, 1, 2, 2), 3.0), t, torch.zeros(1, 1, 2, 2)).pred_original_sample.max() == 3.0


# ------------------------------------------------------------ validation / config


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_train_timesteps": 0}, r"num_train_timesteps.*got 0"),
        ({"num_train_timesteps": 10.5}, r"num_train_timesteps.*got 10.5"),
        ({"beta_schedule": "quadratic"}, r"beta_schedule.*linear, scaled_linear, cosine.*'quadratic'"),
        ({"beta_start": 0.0}, r"beta_start.*got 0.0"),
        ({"beta_end": 1.5}, r"beta_end.*got 1.5"),
        ({"beta_start": 0.03, "beta_end": 0.02}, r"beta_start=0.03 > beta_end=0.02"),
        ({"prediction_type": "noise"}, r"prediction_type.*epsilon, v_prediction, sample.*'noise'"),
    ],
)
def test_bad_schedule_arguments_raise_with_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseSchedule(**kwargs)


def test_noise_schedule_takes_exactly_its_own_arguments():
    """Inference-time options belong to the solvers; the schedule has no tolerant config system."""
    for key, value in (("clip_sample", False), ("eta", 0.0), ("_target_", "tinyldm.diffusion.NoiseSchedule")):
        with pytest.raises(TypeError, match=key):
            NoiseSchedule(**{key: value})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip_sample": "yes"}, r"clip_sample.*'yes'"),
        ({"clip_sample_range": -1.0}, r"clip_sample_range.*got -1.0"),
        ({"clip_sample_range": float("inf")}, r"clip_sample_range.*got inf"),
    ],
)
@pytest.mark.parametrize("cls", SOLVERS.values())
def test_bad_solver_arguments_raise_with_value(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("cls", SOLVERS.values())
def test_solvers_run_on_a_noise_schedule(cls):
    with pytest.raises(TypeError, match=r"runs on a NoiseSchedule, got dict"):
        cls().set_timesteps({"num_train_timesteps": 10})
    with pytest.raises(TypeError, match=r"runs on a NoiseSchedule, got dict"):
        cls().check_schedule({"num_train_timesteps": 10})
    with pytest.raises(RuntimeError, match=r"call set_timesteps\(schedule\) before stepping"):
        cls().step(torch.zeros(1, 1, 2, 2), 5, torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize("cls", SOLVERS.values())
def test_solver_settings_are_its_config(cls):
    """The constructor arguments, read back; ``replace`` builds a validated new solver; the schedule is no setting."""
    from tinyldm.utils.instantiate import build

    solver = cls(steps=7, clip_sample=True, clip_sample_range=2.0)
    assert solver.config == {**cls().config, "steps": 7, "clip_sample": True, "clip_sample_range": 2.0}
    assert build(solver.as_config()) == solver and solver != cls()
    assert solver.replace(steps=3) == cls(steps=3, clip_sample=True, clip_sample_range=2.0) and solver.steps == 7
    with pytest.raises(ValueError, match="steps.*got 0"):
        solver.replace(steps=0)
    with pytest.raises(TypeError, match=rf"{cls.__name__} \({cls.name}\) has no setting schedule; its settings: steps"):
        solver.replace(schedule=NoiseSchedule())


@pytest.mark.parametrize("eta", [-0.1, float("nan"), float("inf")])
def test_ddim_rejects_bad_eta(eta):
    with pytest.raises(ValueError, match=rf"eta.*got {eta}"):
        DDIMSolver(eta=eta)
    sched = DDIMSolver(steps=None)
    sched.set_timesteps(NoiseSchedule(num_train_timesteps=10))
    with pytest.raises(ValueError, match=rf"eta.*got {eta}"):
        sched.step(torch.zeros(1, 1, 2, 2), 5, torch.zeros(1, 1, 2, 2), eta=eta)


@pytest.mark.parametrize("cls", [DDPMSolver, DDIMSolver])
@pytest.mark.parametrize("t", [-1, 1000])
def test_step_rejects_timestep_out_of_range(cls, t):
    sched = cls(steps=None)
    sched.set_timesteps(NoiseSchedule())
    with pytest.raises(ValueError, match=rf"timestep.*got {t}"):
        sched.step(torch.zeros(1, 1, 2, 2), t, torch.zeros(1, 1, 2, 2))


def test_schedule_and_solvers_hold_no_parameters():
    schedule = NoiseSchedule()
    solvers = [cls() for cls in SOLVERS.values()]
    for solver in solvers:
        solver.set_timesteps(schedule)
    for obj in [schedule, *solvers]:
        assert not isinstance(obj, nn.Module)
        assert not any(isinstance(v, nn.Parameter) for v in vars(obj).values())


def test_config_round_trip():
    sched = NoiseSchedule(num_train_timesteps=200, beta_schedule="cosine", prediction_type="v_prediction")
    config = sched.config
    assert isinstance(config, dict)
    assert set(config) == {"num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type"}
    rebuilt = NoiseSchedule(**config)
    assert rebuilt.config == config
    assert torch.equal(rebuilt.alphas_cumprod, sched.alphas_cumprod)


# -------------------------------------------------- scheduler configs of tinyldm <= 0.1 (checkpoints)

LEGACY_CONFIG = {
    "_target_": "tinyldm.diffusion.DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": False,
    "clip_sample_range": 1.0,
}


def test_legacy_scheduler_config_becomes_a_noise_schedule_config():
    schedule, carried = from_legacy_config(LEGACY_CONFIG)
    assert schedule == {
        "_target_": "tinyldm.diffusion.NoiseSchedule",
        "num_train_timesteps": 1000,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "prediction_type": "epsilon",
    }
    assert carried == {}  # clip_sample: false is the solvers' default
    from hydra.utils import instantiate

    assert isinstance(instantiate(schedule), NoiseSchedule)


def test_legacy_clip_sample_and_ddim_eta():
    """clip_sample: true is handed to the solver; a DDIM config's eta (the sampler's always replaced it) is dropped."""
    legacy = {
        **LEGACY_CONFIG,
        "_target_": "tinyldm.diffusion.DDIMScheduler",
        "clip_sample": True,
        "clip_sample_range": 2.0,
        "eta": 0.3,
    }
    schedule, carried = from_legacy_config(legacy)
    assert "eta" not in schedule and "clip_sample" not in schedule
    assert carried == {"clip_sample": True, "clip_sample_range": 2.0}
    # missing keys take the (unchanged) defaults
    assert from_legacy_config({"_target_": "tinyldm.diffusion.DPMSolverMultistepScheduler"}) == (
        {"_target_": "tinyldm.diffusion.NoiseSchedule"},
        {},
    )


def test_legacy_config_with_unknown_key_is_refused_and_current_configs_pass_unchanged():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['betas_type'\]"):
        from_legacy_config({**LEGACY_CONFIG, "betas_type": "linear"})
    current = {"_target_": "tinyldm.diffusion.NoiseSchedule", **NoiseSchedule().config}
    assert from_legacy_config(current) == (current, {})


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine", "cosine_v"])
def test_hydra_scheduler_configs_instantiate(name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO_ROOT / "conf" / "scheduler" / f"{name}.yaml")
    sched = instantiate(cfg)
    assert isinstance(sched, NoiseSchedule)
    assert sched.beta_schedule == name.removesuffix("_v") and sched.num_train_timesteps == 1000
    assert sched.prediction_type == ("v_prediction" if name == "cosine_v" else "epsilon")
    if name == "scaled_linear":
        assert (sched.beta_start, sched.beta_end) == (0.00085, 0.012)
    # the group describes the training schedule only: its keys are exactly the schedule's config
    assert set(cfg) - {"_target_"} == set(sched.config)
    assert from_legacy_config(OmegaConf.to_container(cfg)) == (OmegaConf.to_container(cfg), {})

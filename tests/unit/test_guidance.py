"""Classifier-free guidance, its rules, and the sampling loop where a solver and a guidance meet, with a tiny
deterministic toy denoiser."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

from tinyldm.diffusion import (
    GUIDANCES,
    SOLVERS,
    AdaptiveProjectedGuidance,
    ClassifierFreeGuidance,
    ConditionedDenoiser,
    DDIMSolver,
    DDPMSolver,
    DPMSolver2M,
    DPMSolver2MSDE,
    NoiseSchedule,
    sample,
)
from tinyldm.diffusion.guidance import classifier_free, paired_predictions, validate_guidance_scale

REPO_ROOT = Path(__file__).resolve().parents[2]
B, C, H, W, L, D = 3, 2, 4, 4, 2, 5
SCHEDULE = NoiseSchedule(num_train_timesteps=100)
#: the guidance the old single sampler config defaulted to (scale 3)
CFG3 = ClassifierFreeGuidance(scale=3.0)


class ToyDenoiser:
    """Deterministic, context-dependent stand-in for the UNet that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.calls.append((x_t.clone(), t.clone(), context.clone()))
        assert x_t.shape[0] == t.shape[0] == context.shape[0]
        assert t.dtype == torch.long
        shift = context.mean(dim=(1, 2)).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        return 0.5 * x_t + shift + 1e-3 * t.float().view(-1, 1, 1, 1)  # (B, C, H, W)


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(B, C, H, W, generator=gen)
    t = torch.tensor([10, 50, 99])
    cond = torch.randn(B, L, D, generator=gen)
    uncond = torch.zeros(B, L, D)
    return x_t, t, cond, uncond


# ------------------------------------------------------------- classifier-free arithmetic


def _guided(denoiser, x_t, t, cond, uncond, scale, cond_mask=None, uncond_mask=None) -> torch.Tensor:
    """The classifier-free guided output from one batched forward: ``uncond + s * (cond - uncond)``."""
    return classifier_free(*paired_predictions(denoiser, x_t, t, cond, uncond, cond_mask, uncond_mask), scale)


def test_scale_one_is_conditional_and_scale_zero_is_unconditional():
    x_t, t, cond, uncond = _inputs()
    reference = ToyDenoiser()
    cond_only = reference(x_t, t, cond)
    uncond_only = reference(x_t, t, uncond)
    torch.testing.assert_close(_guided(ToyDenoiser(), x_t, t, cond, uncond, 1.0), cond_only)
    torch.testing.assert_close(_guided(ToyDenoiser(), x_t, t, cond, uncond, 0.0), uncond_only)
    torch.testing.assert_close(
        _guided(ToyDenoiser(), x_t, t, cond, uncond, 3.0), uncond_only + 3.0 * (cond_only - uncond_only)
    )


def test_one_batched_forward_with_cond_half_first():
    x_t, t, cond, uncond = _inputs()
    denoiser = ToyDenoiser()
    _guided(denoiser, x_t, t, cond, uncond, 7.5)
    assert len(denoiser.calls) == 1
    x_in, t_in, context_in = denoiser.calls[0]
    assert x_in.shape == (2 * B, C, H, W)
    assert torch.equal(x_in, torch.cat([x_t, x_t]))
    assert torch.equal(t_in, torch.cat([t, t]))
    assert torch.equal(context_in, torch.cat([cond, uncond]))


def test_single_null_context_is_broadcast_to_the_batch():
    x_t, t, cond, uncond = _inputs()
    full = _guided(ToyDenoiser(), x_t, t, cond, uncond, 2.0)
    broadcast = _guided(ToyDenoiser(), x_t, t, cond, uncond[:1], 2.0)
    torch.testing.assert_close(broadcast, full)


def test_mismatched_contexts_raise():
    x_t, t, cond, _ = _inputs()
    with pytest.raises(ValueError, match="same shape"):
        _guided(ToyDenoiser(), x_t, t, cond, torch.zeros(B, L + 1, D), 2.0)
    with pytest.raises(ValueError, match="batch mismatch"):
        _guided(ToyDenoiser(), x_t, t[:2], cond, torch.zeros(B, L, D), 2.0)


@pytest.mark.parametrize("scale", [-1.0, -1e-9, float("nan"), float("inf"), float("-inf")])
def test_bad_guidance_scale_raises_naming_value_and_range(scale):
    with pytest.raises(ValueError, match=rf"\[0, inf\), got {scale}"):
        validate_guidance_scale(scale)


@pytest.mark.parametrize("scale", ["3", None, True])
def test_non_numeric_guidance_scale_raises(scale):
    with pytest.raises(ValueError, match=r"guidance_scale must be a number in \[0, inf\)"):
        validate_guidance_scale(scale)


def test_validate_guidance_scale_returns_float():
    assert validate_guidance_scale(0) == 0.0 and isinstance(validate_guidance_scale(0), float)
    assert validate_guidance_scale(7.5) == 7.5


# --------------------------------------------------------------- the sampling loop


def _sample(
    solver,
    guidance,
    seed: int,
    denoiser=None,
    unconditional: bool = False,
    guide=None,
    guide_context=None,
    schedule=SCHEDULE,
    **kwargs,
):
    """``solver`` and ``guidance`` on the toy model; ``unconditional``: as for a model without conditioning (no null
    context); ``kwargs`` go to :func:`sample` (``progress``, ``trajectory_at``)."""
    _, _, cond, uncond = _inputs()
    gen = torch.Generator().manual_seed(seed)
    model = ConditionedDenoiser(
        denoiser or ToyDenoiser(),
        cond,
        uncond_context=None if unconditional else uncond,
        guide=guide,
        guide_context=guide_context,
    )
    return sample(model, schedule, solver, guidance, (B, C, H, W), generator=gen, **kwargs)


@pytest.mark.parametrize(
    "solver",
    [DDIMSolver(steps=10, eta=0.0), DDIMSolver(steps=10, eta=1.0), DDPMSolver(steps=None)],
    ids=["ddim-eta0", "ddim-eta1", "ddpm-all-steps"],
)
def test_sampler_is_deterministic_per_seed_and_differs_across_seeds(solver):
    a = _sample(solver, CFG3, seed=0)
    b = _sample(solver, CFG3, seed=0)
    c = _sample(solver, CFG3, seed=1)
    assert a.shape == (B, C, H, W) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_sampler_makes_one_batched_call_per_step():
    denoiser = ToyDenoiser()
    _sample(DDIMSolver(steps=10), CFG3, seed=0, denoiser=denoiser)
    assert len(denoiser.calls) == 10
    assert all(x.shape[0] == 2 * B for x, _, _ in denoiser.calls)
    visited = [int(t[0]) for _, t, _ in denoiser.calls]
    assert visited == list(range(90, -1, -10))  # DDIM "leading" grid for T=100, 10 steps

    denoiser = ToyDenoiser()
    _sample(DDPMSolver(steps=None), CFG3, seed=0, denoiser=denoiser)
    assert len(denoiser.calls) == 100


def test_guidance_scale_one_skips_uncond_and_equals_cond_only_sampling():
    denoiser = ToyDenoiser()
    guided = _sample(DDIMSolver(steps=10, eta=0.5), ClassifierFreeGuidance(scale=1.0), seed=0, denoiser=denoiser)
    assert len(denoiser.calls) == 10 and all(x.shape[0] == B for x, _, _ in denoiser.calls)

    # The same loop written by hand with only the conditional context.
    _, _, cond, _ = _inputs()
    solver = DDIMSolver(steps=10, eta=0.5)
    solver.set_timesteps(SCHEDULE)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=gen)
    plain = ToyDenoiser()
    for t in solver.timesteps:
        out = plain(x, torch.full((B,), int(t)), cond)
        x = solver.step(out, t, x, generator=gen).prev_sample
    assert torch.equal(guided, x)


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0, 7.5])
def test_unconditional_model_ignores_the_guidance_scale(scale):
    """uncond_context=None (a model without conditioning): conditional prediction only, whatever the scale."""
    denoiser = ToyDenoiser()
    solver, guidance = DDIMSolver(steps=10, eta=0.5), ClassifierFreeGuidance(scale=scale)
    unconditional = _sample(solver, guidance, seed=0, denoiser=denoiser, unconditional=True)
    assert len(denoiser.calls) == 10 and all(x.shape[0] == B for x, _, _ in denoiser.calls)  # never 2B
    assert torch.equal(unconditional, _sample(solver, guidance.replace(scale=1.0), seed=0))


def test_guidance_scale_is_validated_once_when_the_guidance_is_built():
    """One validator: a guidance that exists holds a valid scale, and sampling takes no second, per-call scale."""
    with pytest.raises(ValueError, match=r"scale must be a finite number in \[0, inf\), got -1.0"):
        ClassifierFreeGuidance(scale=-1.0)
    guidance = ClassifierFreeGuidance(scale=2)
    assert guidance.scale == 2.0 and isinstance(guidance.scale, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        guidance.scale = -1.0  # no way around the check
    assert not {"scale", "guidance_scale"} & set(inspect.signature(sample).parameters)


@pytest.mark.parametrize("scale", [-2.0, float("nan"), float("inf"), "3", None, True])
def test_per_call_scale_is_a_new_guidance_validated_the_same_way(scale):
    guidance = ClassifierFreeGuidance(scale=3.0)
    with pytest.raises(ValueError) as from_constructor:
        ClassifierFreeGuidance(scale=scale)
    with pytest.raises(ValueError) as from_replace:
        guidance.replace(scale=scale)
    assert str(from_replace.value) == str(from_constructor.value)
    assert str(from_constructor.value).startswith("scale ")
    assert guidance.scale == 3.0  # unchanged

    other = guidance.replace(scale=5)
    assert other == ClassifierFreeGuidance(scale=5.0) and other is not guidance
    solver = DDIMSolver(steps=10)
    assert torch.equal(_sample(solver, other, seed=0), _sample(solver, ClassifierFreeGuidance(scale=5.0), 0))


def test_guidance_interval_guides_inside_and_is_plain_conditional_outside():
    """T=100, DDIM-10 visits 90, 80, ..., 0; the interval [30, 60] guides exactly 60, 50, 40, 30."""
    denoiser = ToyDenoiser()
    solver = DDIMSolver(steps=10)
    _sample(solver, ClassifierFreeGuidance(scale=3.0, interval=[30, 60]), seed=0, denoiser=denoiser)
    guided = {int(t[0]) for x, t, _ in denoiser.calls if x.shape[0] == 2 * B}
    assert guided == {30, 40, 50, 60}
    assert all(x.shape[0] == B for x, t, _ in denoiser.calls if int(t[0]) not in guided)
    assert [t for t in range(100) if CFG3.replace(interval=[30, 60]).applies_at(t)] == list(range(30, 61))

    # an interval that holds no step of the grid is exactly plain conditional sampling
    nowhere = _sample(solver, ClassifierFreeGuidance(scale=3.0, interval=[91, 99]), seed=0)
    assert torch.equal(nowhere, _sample(solver, ClassifierFreeGuidance(scale=1.0), seed=0))
    # and one that holds every step is full guidance
    everywhere = _sample(solver, ClassifierFreeGuidance(scale=3.0, interval=[0, 99]), seed=0)
    assert torch.equal(everywhere, _sample(solver, CFG3, seed=0))


@pytest.mark.parametrize("interval", [[60, 30], [-1, 5], [1.5, 3], [1, 2, 3], "1,2", [True, 4]])
@pytest.mark.parametrize("cls", GUIDANCES.values())
def test_bad_guidance_interval_is_refused(cls, interval):
    with pytest.raises(ValueError, match="^interval=.*must be null or \\[t_low, t_high\\]"):
        cls(interval=interval)


def test_guidance_scale_changes_samples():
    solver = DDIMSolver(steps=10)
    assert not torch.allclose(_sample(solver, CFG3.replace(scale=1.0), 0), _sample(solver, CFG3.replace(scale=5.0), 0))


def test_steps_beyond_training_timesteps_raise():
    solver = DDIMSolver(steps=200)
    message = r"steps=200 exceeds the noise schedule's num_train_timesteps=100"
    with pytest.raises(ValueError, match=message):
        solver.check_schedule(SCHEDULE)  # what entry points call before any work
    with pytest.raises(ValueError, match=message):
        _sample(solver, CFG3, seed=0)
    assert DDPMSolver(steps=None).check_schedule(SCHEDULE) == 100


def test_trajectory_is_recorded_on_the_grid():
    solver = DDIMSolver(steps=10)
    x0, trajectory = _sample(solver, CFG3, seed=0, trajectory_at=[99, 55, 0, 3])
    # Grid is 90, 80, ..., 0: 99 snaps to 90, 55 is a tie (-> the noisier 60), 0 and 3 both give 0.
    assert list(trajectory) == [90, 60, 0]
    assert all(v.shape == (B, C, H, W) for v in trajectory.values())
    # DDIM's last step lands exactly on its x0 estimate.
    assert torch.equal(trajectory[0], x0)
    assert torch.equal(x0, _sample(solver, CFG3, seed=0))


def test_progress_bar_does_not_change_the_result():
    solver = DDIMSolver(steps=5)
    assert torch.equal(_sample(solver, CFG3, 0, progress=True), _sample(solver, CFG3, 0))


def test_sampler_takes_a_noise_schedule_and_checks_shape():
    _, _, cond, uncond = _inputs()
    solver, model = DDIMSolver(steps=5), ConditionedDenoiser(ToyDenoiser(), cond, uncond_context=uncond)
    with pytest.raises(TypeError, match="runs on a NoiseSchedule, got dict"):
        sample(model, SCHEDULE.config, solver, CFG3, (B, C, H, W))
    with pytest.raises(ValueError, match="shape must be"):
        sample(model, SCHEDULE, solver, CFG3, (B + 1, C, H, W))


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde"])
def test_solver_clip_sample_is_used_when_sampling(name):
    settings = {"eta": 0.5} if name == "ddim" else {}
    solver = SOLVERS[name](steps=5, clip_sample=True, clip_sample_range=0.25, **settings)
    assert (solver.clip_sample, solver.clip_sample_range) == (True, 0.25)
    solver.set_timesteps(SCHEDULE)
    assert solver.schedule is SCHEDULE and len(solver.timesteps) == 5
    if name == "ddim":
        assert solver.eta == 0.5
    assert not torch.equal(_sample(solver, CFG3, 0), _sample(solver.replace(clip_sample=False), CFG3, 0))


def test_solvers_and_guidances_by_name():
    """The names of the conf/sampler and conf/guidance files; no other solver or guidance exists."""
    assert SOLVERS == {"ddpm": DDPMSolver, "ddim": DDIMSolver, "dpmpp_2m": DPMSolver2M, "dpmpp_2m_sde": DPMSolver2MSDE}
    assert GUIDANCES == {"cfg": ClassifierFreeGuidance, "apg": AdaptiveProjectedGuidance}
    assert all(cls.name == name for registry in (SOLVERS, GUIDANCES) for name, cls in registry.items())


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (DDIMSolver, {"steps": 0}, r"^steps.*got 0"),
        (DDIMSolver, {"steps": 2.5}, r"^steps.*got 2.5"),
        (DDIMSolver, {"eta": -0.5}, r"^eta.*got -0.5"),
        (ClassifierFreeGuidance, {"scale": -2.0}, r"^scale.*got -2.0"),
        (ClassifierFreeGuidance, {"scale": float("nan")}, r"^scale.*got nan"),
        (DDIMSolver, {"clip_sample": "no"}, r"clip_sample must be a bool.*got 'no'"),
        (DDIMSolver, {"clip_sample_range": 0}, r"clip_sample_range.*got 0"),
    ],
)
def test_sampling_settings_reject_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_a_setting_a_solver_or_guidance_does_not_take_is_refused_naming_it():
    with pytest.raises(TypeError, match=r"DDIMSolver \(ddim\) has no setting guidance_scale; its settings: steps"):
        DDIMSolver().replace(guidance_scale=2.0)
    with pytest.raises(TypeError, match=r"ClassifierFreeGuidance \(cfg\) has no setting momentum, steps"):
        CFG3.replace(steps=10, momentum=-0.5)
    with pytest.raises(TypeError, match="eta"):
        DPMSolver2M(eta=0.5)


@pytest.mark.parametrize(("name", "steps"), [("ddpm", None), ("ddim", 50), ("dpmpp_2m", 20), ("dpmpp_2m_sde", 20)])
def test_hydra_sampler_configs_instantiate(name, steps):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO_ROOT / "conf" / "sampler" / f"{name}.yaml")
    solver = instantiate(cfg)
    assert type(solver) is SOLVERS[name] and solver.name == name
    assert solver.steps == steps and (solver.clip_sample, solver.clip_sample_range) == (False, 1.0)
    if name == "ddim":
        assert solver.eta == 0.0
    # the config is the constructor call: its keys are exactly the solver's settings, and it round-trips
    assert set(cfg) - {"_target_"} == set(solver.config)
    assert instantiate(solver.as_config()) == solver
    if name.startswith("dpmpp"):
        assert (solver.timestep_spacing, solver.logsnr_range) == ("trailing", None)
        logsnr = instantiate(cfg, timestep_spacing="logsnr", logsnr_range=[-3.5, 3.0])  # a list becomes a tuple
        assert logsnr.logsnr_range == (-3.5, 3.0)


@pytest.mark.parametrize("name", ["cfg", "apg"])
def test_hydra_guidance_configs_instantiate(name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO_ROOT / "conf" / "guidance" / f"{name}.yaml")
    guidance = instantiate(cfg)
    assert type(guidance) is GUIDANCES[name] and guidance.name == name
    assert (guidance.scale, guidance.interval, guidance.autoguidance) == (2.0, None, 1.0)
    assert not guidance.uses_guide
    if name == "apg":
        assert (guidance.eta, guidance.momentum) == (0.0, 0.0)
    assert set(cfg) - {"_target_"} == set(guidance.config)
    assert instantiate(guidance.as_config()) == guidance
    interval = instantiate(cfg, interval=[100, 600])  # a list from the config becomes a tuple
    assert interval.interval == (100, 600)

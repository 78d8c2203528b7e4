"""Classifier-free guidance, its rules, and the DiffusionSampler loop, with a tiny deterministic toy denoiser."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

from tinyldm.diffusion import (
    DDIMScheduler,
    DiffusionSampler,
    NoiseSchedule,
    guided_prediction,
    validate_guidance_scale,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
B, C, H, W, L, D = 3, 2, 4, 4, 2, 5
SCHEDULE = NoiseSchedule(num_train_timesteps=100)


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


# ------------------------------------------------------------- guided_prediction


def test_scale_one_is_conditional_and_scale_zero_is_unconditional():
    x_t, t, cond, uncond = _inputs()
    reference = ToyDenoiser()
    cond_only = reference(x_t, t, cond)
    uncond_only = reference(x_t, t, uncond)
    torch.testing.assert_close(guided_prediction(ToyDenoiser(), x_t, t, cond, uncond, 1.0), cond_only)
    torch.testing.assert_close(guided_prediction(ToyDenoiser(), x_t, t, cond, uncond, 0.0), uncond_only)
    torch.testing.assert_close(
        guided_prediction(ToyDenoiser(), x_t, t, cond, uncond, 3.0), uncond_only + 3.0 * (cond_only - uncond_only)
    )


def test_one_batched_forward_with_cond_half_first():
    x_t, t, cond, uncond = _inputs()
    denoiser = ToyDenoiser()
    guided_prediction(denoiser, x_t, t, cond, uncond, 7.5)
    assert len(denoiser.calls) == 1
    x_in, t_in, context_in = denoiser.calls[0]
    assert x_in.shape == (2 * B, C, H, W)
    assert torch.equal(x_in, torch.cat([x_t, x_t]))
    assert torch.equal(t_in, torch.cat([t, t]))
    assert torch.equal(context_in, torch.cat([cond, uncond]))


def test_single_null_context_is_broadcast_to_the_batch():
    x_t, t, cond, uncond = _inputs()
    full = guided_prediction(ToyDenoiser(), x_t, t, cond, uncond, 2.0)
    broadcast = guided_prediction(ToyDenoiser(), x_t, t, cond, uncond[:1], 2.0)
    torch.testing.assert_close(broadcast, full)


def test_mismatched_contexts_raise():
    x_t, t, cond, _ = _inputs()
    with pytest.raises(ValueError, match="same shape"):
        guided_prediction(ToyDenoiser(), x_t, t, cond, torch.zeros(B, L + 1, D), 2.0)
    with pytest.raises(ValueError, match="batch mismatch"):
        guided_prediction(ToyDenoiser(), x_t, t[:2], cond, torch.zeros(B, L, D), 2.0)


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


# --------------------------------------------------------------- DiffusionSampler


def _sample(sampler: DiffusionSampler, seed: int, denoiser=None, unconditional: bool = False, **kwargs):
    """``sampler`` on the toy model; ``unconditional``: as for a model without conditioning (no null context)."""
    _, _, cond, uncond = _inputs()
    gen = torch.Generator().manual_seed(seed)
    denoiser = denoiser or ToyDenoiser()
    return sampler.sample(
        denoiser, SCHEDULE, (B, C, H, W), cond, None if unconditional else uncond, generator=gen, **kwargs
    )


@pytest.mark.parametrize(
    "sampler",
    [
        DiffusionSampler(kind="ddim", steps=10, eta=0.0),
        DiffusionSampler(kind="ddim", steps=10, eta=1.0),
        DiffusionSampler(kind="ddpm", steps=None),
    ],
    ids=["ddim-eta0", "ddim-eta1", "ddpm-all-steps"],
)
def test_sampler_is_deterministic_per_seed_and_differs_across_seeds(sampler):
    a = _sample(sampler, seed=0)
    b = _sample(sampler, seed=0)
    c = _sample(sampler, seed=1)
    assert a.shape == (B, C, H, W) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_sampler_makes_one_batched_call_per_step():
    denoiser = ToyDenoiser()
    _sample(DiffusionSampler(kind="ddim", steps=10, guidance_scale=3.0), seed=0, denoiser=denoiser)
    assert len(denoiser.calls) == 10
    assert all(x.shape[0] == 2 * B for x, _, _ in denoiser.calls)
    visited = [int(t[0]) for _, t, _ in denoiser.calls]
    assert visited == list(range(90, -1, -10))  # DDIM "leading" grid for T=100, 10 steps

    denoiser = ToyDenoiser()
    _sample(DiffusionSampler(kind="ddpm", steps=None), seed=0, denoiser=denoiser)
    assert len(denoiser.calls) == 100


def test_guidance_scale_one_skips_uncond_and_equals_cond_only_sampling():
    denoiser = ToyDenoiser()
    sampler = DiffusionSampler(kind="ddim", steps=10, eta=0.5, guidance_scale=1.0)
    guided = _sample(sampler, seed=0, denoiser=denoiser)
    assert len(denoiser.calls) == 10 and all(x.shape[0] == B for x, _, _ in denoiser.calls)

    # The same loop written by hand with only the conditional context.
    _, _, cond, _ = _inputs()
    solver = DDIMScheduler(SCHEDULE, eta=0.5)
    solver.set_timesteps(10)
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
    sampler = DiffusionSampler(kind="ddim", steps=10, eta=0.5, guidance_scale=scale)
    unconditional = _sample(sampler, seed=0, denoiser=denoiser, unconditional=True)
    assert len(denoiser.calls) == 10 and all(x.shape[0] == B for x, _, _ in denoiser.calls)  # never 2B
    assert torch.equal(unconditional, _sample(sampler.with_guidance(1.0), seed=0))


def test_guidance_scale_is_validated_once_when_the_sampler_is_built():
    """One validator: a sampler that exists holds a valid scale, and sampling takes no second, per-call scale."""
    with pytest.raises(ValueError, match=r"guidance_scale must be a finite number in \[0, inf\), got -1.0"):
        DiffusionSampler(guidance_scale=-1.0)
    sampler = DiffusionSampler(guidance_scale=2)
    assert sampler.guidance_scale == 2.0 and isinstance(sampler.guidance_scale, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampler.guidance_scale = -1.0  # no way around the check
    assert "guidance_scale" not in inspect.signature(DiffusionSampler.sample).parameters


@pytest.mark.parametrize("scale", [-2.0, float("nan"), float("inf"), "3", None, True])
def test_per_call_scale_is_a_new_sampler_validated_the_same_way(scale):
    sampler = DiffusionSampler(kind="ddim", steps=10, guidance_scale=3.0)
    with pytest.raises(ValueError) as from_constructor:
        DiffusionSampler(kind="ddim", steps=10, guidance_scale=scale)
    with pytest.raises(ValueError) as from_with_guidance:
        sampler.with_guidance(scale)
    assert str(from_with_guidance.value) == str(from_constructor.value)
    assert "guidance_scale" in str(from_constructor.value)
    assert sampler.guidance_scale == 3.0  # unchanged

    other = sampler.with_guidance(5)
    assert other == DiffusionSampler(kind="ddim", steps=10, guidance_scale=5.0) and other is not sampler
    assert torch.equal(_sample(other, seed=0), _sample(DiffusionSampler(kind="ddim", steps=10, guidance_scale=5.0), 0))


def test_guidance_interval_guides_inside_and_is_plain_conditional_outside():
    """T=100, DDIM-10 visits 90, 80, ..., 0; the interval [30, 60] guides exactly 60, 50, 40, 30."""
    denoiser = ToyDenoiser()
    sampler = DiffusionSampler(kind="ddim", steps=10, guidance_scale=3.0, guidance_interval=[30, 60])
    _sample(sampler, seed=0, denoiser=denoiser)
    guided = {int(t[0]) for x, t, _ in denoiser.calls if x.shape[0] == 2 * B}
    assert guided == {30, 40, 50, 60}
    assert all(x.shape[0] == B for x, t, _ in denoiser.calls if int(t[0]) not in guided)

    # an interval that holds no step of the grid is exactly plain conditional sampling
    nowhere = _sample(DiffusionSampler(kind="ddim", steps=10, guidance_scale=3.0, guidance_interval=[91, 99]), seed=0)
    assert torch.equal(nowhere, _sample(DiffusionSampler(kind="ddim", steps=10, guidance_scale=1.0), seed=0))
    # and one that holds every step is full guidance
    everywhere = _sample(DiffusionSampler(kind="ddim", steps=10, guidance_scale=3.0, guidance_interval=[0, 99]), seed=0)
    assert torch.equal(everywhere, _sample(DiffusionSampler(kind="ddim", steps=10, guidance_scale=3.0), seed=0))


@pytest.mark.parametrize("interval", [[60, 30], [-1, 5], [1.5, 3], [1, 2, 3], "1,2", [True, 4]])
def test_bad_guidance_interval_is_refused(interval):
    with pytest.raises(ValueError, match="guidance_interval=.*must be null or \\[t_low, t_high\\]"):
        DiffusionSampler(kind="ddim", steps=10, guidance_interval=interval)


def test_guidance_scale_changes_samples():
    sampler = DiffusionSampler(kind="ddim", steps=10)
    assert not torch.allclose(_sample(sampler.with_guidance(1.0), 0), _sample(sampler.with_guidance(5.0), 0))


def test_steps_beyond_training_timesteps_raise():
    sampler = DiffusionSampler(kind="ddim", steps=200)
    message = r"steps=200 exceeds the noise schedule's num_train_timesteps=100"
    with pytest.raises(ValueError, match=message):
        sampler.check_schedule(SCHEDULE)  # what entry points call before any work
    with pytest.raises(ValueError, match=message):
        _sample(sampler, seed=0)
    assert DiffusionSampler(kind="ddpm", steps=None).check_schedule(SCHEDULE) == 100


def test_trajectory_is_recorded_on_the_grid():
    sampler = DiffusionSampler(kind="ddim", steps=10)
    x0, trajectory = _sample(sampler, seed=0, return_trajectory_at=[99, 55, 0, 3])
    # Grid is 90, 80, ..., 0: 99 snaps to 90, 55 is a tie (-> the noisier 60), 0 and 3 both give 0.
    assert list(trajectory) == [90, 60, 0]
    assert all(v.shape == (B, C, H, W) for v in trajectory.values())
    # DDIM's last step lands exactly on its x0 estimate.
    assert torch.equal(trajectory[0], x0)
    assert torch.equal(x0, _sample(sampler, seed=0))


def test_progress_bar_does_not_change_the_result():
    sampler = DiffusionSampler(kind="ddim", steps=5)
    assert torch.equal(_sample(sampler, 0, progress=True), _sample(sampler, 0))


def test_sampler_takes_a_noise_schedule_and_checks_shape():
    _, _, cond, uncond = _inputs()
    sampler = DiffusionSampler(kind="ddim", steps=5)
    with pytest.raises(TypeError, match="built on a NoiseSchedule, got dict"):
        sampler.sample(ToyDenoiser(), SCHEDULE.config, (B, C, H, W), cond, uncond)
    with pytest.raises(ValueError, match="shape must be"):
        sampler.sample(ToyDenoiser(), SCHEDULE, (B + 1, C, H, W), cond, uncond)


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpmpp_2m"])
def test_sampler_clip_sample_reaches_the_solver(kind):
    sampler = DiffusionSampler(kind=kind, steps=5, eta=0.5, clip_sample=True, clip_sample_range=0.25)
    solver = sampler.build_solver(SCHEDULE)
    assert (solver.clip_sample, solver.clip_sample_range) == (True, 0.25)
    assert solver.schedule is SCHEDULE and len(solver.timesteps) == 5
    if kind == "ddim":
        assert solver.eta == 0.5
    assert not torch.equal(_sample(sampler, 0), _sample(dataclasses.replace(sampler, clip_sample=False), 0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "euler"}, r"kind must be one of ddpm, ddim, dpmpp_2m, dpmpp_2m_sde; got 'euler'"),
        ({"steps": 0}, r"steps.*got 0"),
        ({"steps": 2.5}, r"steps.*got 2.5"),
        ({"eta": -0.5}, r"eta.*got -0.5"),
        ({"guidance_scale": -2.0}, r"guidance_scale.*got -2.0"),
        ({"guidance_scale": float("nan")}, r"guidance_scale.*got nan"),
        ({"clip_sample": "no"}, r"clip_sample must be a bool.*got 'no'"),
        ({"clip_sample_range": 0}, r"clip_sample_range.*got 0"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusionSampler(**kwargs)


@pytest.mark.parametrize(
    ("name", "kind", "steps", "scale"),
    [("ddpm", "ddpm", None, 3.0), ("ddim", "ddim", 50, 3.0), ("dpmpp_2m", "dpmpp_2m", 20, 2.0)],
)
def test_hydra_sampler_configs_instantiate(name, kind, steps, scale):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO_ROOT / "conf" / "sampler" / f"{name}.yaml")
    sampler = instantiate(cfg)
    assert isinstance(sampler, DiffusionSampler)
    assert (sampler.kind, sampler.steps, sampler.eta, sampler.guidance_scale) == (kind, steps, 0.0, scale)
    assert (sampler.guidance_interval, sampler.clip_sample, sampler.clip_sample_range) == (None, False, 1.0)
    assert set(cfg) - {"_target_"} == {field.name for field in dataclasses.fields(DiffusionSampler)}
    interval = instantiate(cfg, guidance_interval=[100, 600])  # a list from the config becomes a tuple
    assert interval.guidance_interval == (100, 600)

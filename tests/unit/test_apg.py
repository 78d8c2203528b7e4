"""Adaptive projected guidance (APG): its arithmetic, its place in the sampling loop, its checks."""

from __future__ import annotations

import pytest
import torch

from tinyldm.diffusion import (
    SOLVERS,
    AdaptiveProjectedGuidance,
    ClassifierFreeGuidance,
    ConditionedDenoiser,
    DPMSolver2M,
    NoiseSchedule,
    sample,
)
from tinyldm.diffusion.guidance import adaptive_projected
from tinyldm.diffusion.sampling import sampling_record

B, C, H, W, L, D = 3, 2, 4, 4, 2, 5


def _x0s(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, H, W, generator=gen), torch.randn(B, C, H, W, generator=gen)


def test_eta_one_without_momentum_is_classifier_free_guidance():
    x0_cond, x0_uncond = _x0s()
    guided, update = adaptive_projected(x0_cond, x0_uncond, 2.5, eta=1.0, momentum=0.0, previous=None)
    torch.testing.assert_close(guided, x0_uncond + 2.5 * (x0_cond - x0_uncond))
    torch.testing.assert_close(update, x0_cond - x0_uncond)


def test_eta_zero_adds_only_the_part_orthogonal_to_the_conditional_estimate():
    x0_cond, x0_uncond = _x0s()
    guided, _ = adaptive_projected(x0_cond, x0_uncond, 3.0, eta=0.0, momentum=0.0, previous=None)
    added = (guided - x0_cond).flatten(1)  # (B, C*H*W)
    cosine = torch.nn.functional.cosine_similarity(added, x0_cond.flatten(1), dim=1)  # (B,)
    assert cosine.abs().max() < 1e-5
    # what is left of the update: the full update minus its projection on x0_cond, per sample
    diff = (x0_cond - x0_uncond).flatten(1)
    unit = x0_cond.flatten(1) / x0_cond.flatten(1).norm(dim=1, keepdim=True)
    expected = 2.0 * (diff - (diff * unit).sum(1, keepdim=True) * unit)
    torch.testing.assert_close(added, expected, rtol=1e-5, atol=1e-5)


def test_momentum_adds_beta_times_the_previous_update():
    x0_cond, x0_uncond = _x0s()
    previous = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(3))
    guided, update = adaptive_projected(x0_cond, x0_uncond, 2.0, eta=1.0, momentum=-0.5, previous=previous)
    torch.testing.assert_close(update, x0_cond - x0_uncond - 0.5 * previous)
    torch.testing.assert_close(guided, x0_cond + update)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_output_from_x0_inverts_predict_x0(prediction_type):
    schedule = NoiseSchedule(num_train_timesteps=100, beta_schedule="cosine", prediction_type=prediction_type)
    sample, x0 = _x0s(1)
    for t in (0, 37, 99):
        alpha_bar = schedule.alpha_bars(t, t, sample.device)[0]
        output = schedule.output_from_x0(x0, sample, alpha_bar)
        torch.testing.assert_close(schedule.predict_x0(output, sample, alpha_bar), x0, rtol=1e-4, atol=1e-4)


class ToyDenoiser:
    """Deterministic, context-dependent stand-in for the UNet (nonlinear in x_t, so projections matter)."""

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        shift = context.mean(dim=(1, 2)).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        return torch.tanh(x_t) + shift * x_t.flip(-1) + 1e-3 * t.float().view(-1, 1, 1, 1)  # (B, C, H, W)


def _sample(solver, guidance, schedule: NoiseSchedule, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(B, L, D, generator=gen), torch.zeros(1, L, D)
    model = ConditionedDenoiser(ToyDenoiser(), cond, uncond_context=uncond)
    return sample(model, schedule, solver, guidance, (B, C, H, W), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("kind", ["ddim", "dpmpp_2m"])
def test_apg_with_eta_one_and_no_momentum_samples_as_cfg(kind, prediction_type):
    schedule = NoiseSchedule(num_train_timesteps=100, beta_schedule="cosine", prediction_type=prediction_type)
    solver = SOLVERS[kind](steps=10)
    cfg = ClassifierFreeGuidance(scale=2.5)
    apg = AdaptiveProjectedGuidance(scale=2.5, eta=1.0)
    torch.testing.assert_close(_sample(solver, apg, schedule), _sample(solver, cfg, schedule), rtol=1e-4, atol=1e-4)


def test_apg_changes_samples_deterministically_and_momentum_matters():
    schedule = NoiseSchedule(num_train_timesteps=100, beta_schedule="cosine", prediction_type="v_prediction")
    solver = DPMSolver2M(steps=10)
    cfg = ClassifierFreeGuidance(scale=2.5)
    apg = AdaptiveProjectedGuidance(scale=2.5)
    with_momentum = apg.replace(momentum=-0.5)
    assert with_momentum == AdaptiveProjectedGuidance(scale=2.5, momentum=-0.5)
    a, b = _sample(solver, apg, schedule), _sample(solver, apg, schedule)
    assert torch.isfinite(a).all() and torch.equal(a, b)
    assert not torch.allclose(a, _sample(solver, cfg, schedule), atol=1e-3)
    assert not torch.allclose(a, _sample(solver, with_momentum, schedule), atol=1e-3)


def test_apg_at_scale_one_is_plain_conditional_sampling():
    schedule = NoiseSchedule(num_train_timesteps=100, beta_schedule="cosine", prediction_type="v_prediction")
    solver = DPMSolver2M(steps=10)
    plain = ClassifierFreeGuidance(scale=1.0)
    apg = AdaptiveProjectedGuidance(scale=1.0, momentum=-0.5)
    assert torch.equal(_sample(solver, apg, schedule), _sample(solver, plain, schedule))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eta": 1.5}, r"^eta must be a number in \[0, 1\], got 1.5"),
        ({"eta": -0.1}, r"^eta must be a number in \[0, 1\], got -0.1"),
        ({"eta": float("nan")}, r"^eta must be a number in \[0, 1\], got nan"),
        ({"eta": True}, r"^eta must be a number in \[0, 1\], got True"),
        ({"momentum": -1.0}, r"^momentum must be a number in \(-1, 1\), got -1.0"),
        ({"momentum": 1}, r"^momentum must be a number in \(-1, 1\), got 1"),
        ({"momentum": "-0.5"}, r"^momentum must be a number in \(-1, 1\), got '-0.5'"),
    ],
)
def test_bad_apg_settings_are_refused_when_the_guidance_is_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveProjectedGuidance(**kwargs)
    with pytest.raises(ValueError, match=match):
        AdaptiveProjectedGuidance().replace(**kwargs)


def test_apg_settings_belong_to_apg_only():
    """Classifier-free guidance has no eta or momentum: asking it for one is refused, not silently ignored."""
    with pytest.raises(TypeError, match=r"ClassifierFreeGuidance \(cfg\) has no setting momentum"):
        ClassifierFreeGuidance().replace(momentum=-0.5)
    with pytest.raises(TypeError, match="eta"):
        ClassifierFreeGuidance(eta=0.5)


def test_results_record_the_method_with_the_same_keys_for_every_method():
    solver = DPMSolver2M().as_config()
    apg = sampling_record(solver, AdaptiveProjectedGuidance(eta=0.25, momentum=-0.5).as_config())
    assert {key: apg[key] for key in ("guidance_method", "apg_eta", "apg_momentum")} == {
        "guidance_method": "apg",
        "apg_eta": 0.25,
        "apg_momentum": -0.5,
    }
    cfg = sampling_record(solver, ClassifierFreeGuidance().as_config())
    assert {key: cfg[key] for key in ("guidance_method", "apg_eta", "apg_momentum")} == {
        "guidance_method": "cfg",
        "apg_eta": None,
        "apg_momentum": None,
    }
    assert apg.keys() == cfg.keys()
    older = {"kind": "dpmpp_2m", "guidance_scale": 2.0}  # a samples file written before the choice existed
    assert sampling_record(older)["guidance_method"] == "cfg"
    legacy_apg = {"kind": "ddim", "guidance_method": "apg", "apg_eta": 0.25, "apg_momentum": -0.5}
    assert sampling_record(legacy_apg)["apg_momentum"] == -0.5 and sampling_record(legacy_apg).keys() == apg.keys()
    nothing = sampling_record(None)  # a samples file that names no sampler
    assert nothing.keys() == apg.keys() and set(nothing.values()) == {None}
    assert sampling_record({}) == nothing

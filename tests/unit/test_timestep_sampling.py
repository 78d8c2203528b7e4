"""Training timestep distributions: uniform stays DDPM's draw, logit-normal concentrates where asked."""

from __future__ import annotations

import pytest
import torch

from tinyldm.diffusion.loss import DiffusionLoss
from tinyldm.diffusion.timestep_sampling import TimestepSampling

T = 1000


def draw(sampling: TimestepSampling, n: int = 50_000, seed: int = 0) -> torch.Tensor:
    return sampling.sample(n, T, torch.Generator().manual_seed(seed), "cpu")


def test_uniform_is_the_plain_randint_draw():
    """The default draws exactly what training drew before the option existed: runs reproduce."""
    expected = torch.randint(0, T, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(TimestepSampling().sample(64, T, torch.Generator().manual_seed(3), "cpu"), expected)
    assert TimestepSampling.from_config(None) == TimestepSampling()


def test_logit_normal_concentrates_on_the_middle_and_loc_moves_it_to_noisier_steps():
    middle = TimestepSampling("logit_normal", loc=0.0, scale=1.0)
    noisier = TimestepSampling("logit_normal", loc=1.0, scale=1.0)
    t_mid, t_noisy, t_uniform = draw(middle), draw(noisier), draw(TimestepSampling())
    for t in (t_mid, t_noisy):
        assert t.dtype == torch.int64 and t.min() >= 0 and t.max() < T

    def share_in_middle(t):
        return ((t >= 300) & (t < 700)).float().mean().item()

    assert share_in_middle(t_mid) > 0.55 > 0.45 > share_in_middle(t_uniform)  # uniform: 0.40, logit-normal: 0.59
    assert abs(t_mid.float().mean().item() - T / 2) < 10
    assert t_noisy.float().median().item() == pytest.approx(T * torch.sigmoid(torch.tensor(1.0)).item(), abs=10)


def test_same_generator_same_timesteps():
    sampling = TimestepSampling("logit_normal", loc=0.5, scale=0.8)
    assert torch.equal(draw(sampling, 256, seed=7), draw(sampling, 256, seed=7))


@pytest.mark.parametrize(
    "config,message",
    [
        ({"distribution": "beta"}, r"distribution='beta'; allowed: uniform, logit_normal"),
        ({"distribution": "logit_normal", "scale": 0}, r"scale=0 must be a finite number > 0"),
        ({"loc": float("nan")}, r"loc=nan must be a finite number"),
        ({"scale": True}, r"scale=True must be"),
        ({"mean": 0.5}, r"unknown key\(s\) \['mean'\]; allowed: distribution, loc, scale$"),
        ({"stratified": True}, r"unknown key\(s\) \['stratified'\]; allowed: distribution, loc, scale$"),
    ],
)
def test_bad_settings_are_refused_by_name(config, message):
    with pytest.raises(ValueError, match=message):
        TimestepSampling.from_config(config)
    with pytest.raises(ValueError, match=message):
        DiffusionLoss(timestep_sampling=config)  # diffusion.loss.timestep_sampling


def test_module_trains_on_its_sampling_but_validates_uniformly(compose):
    """diffusion.loss.timestep_sampling reaches the module's training loss; validation (weighted=False) ignores it."""
    from tests.helpers.modules import diffusion_module

    cfg = compose(["debug=smoke", "model=ae"])
    uniform = diffusion_module(cfg, loss={"min_snr_gamma": None})
    skewed = diffusion_module(
        cfg,
        loss={"min_snr_gamma": None, "timestep_sampling": {"distribution": "logit_normal", "loc": 3.0, "scale": 0.1}},
    )
    assert TimestepSampling.from_config(skewed.loss.timestep_sampling) == TimestepSampling("logit_normal", 3.0, 0.1)
    assert skewed.loss == DiffusionLoss(timestep_sampling={"distribution": "logit_normal", "loc": 3.0, "scale": 0.1})
    assert uniform.loss == DiffusionLoss()
    latents, labels = torch.randn(32, 4, 8, 8), torch.arange(32) % 10

    def loss(module, **kwargs):
        generator = torch.Generator().manual_seed(1)
        return module.loss(
            module.denoiser, module.noise_schedule, latents, labels, generator, drop_labels=False, **kwargs
        )

    with torch.no_grad():
        assert torch.equal(loss(skewed, weighted=False), loss(uniform, weighted=False))
        assert not torch.equal(loss(skewed), loss(uniform))


def test_earlier_checkpoints_timestep_sampling_becomes_the_loss():
    """A checkpoint of an earlier release kept diffusion.timestep_sampling (with the removed ``stratified``) and
    min_snr_gamma beside the module: both move into its loss, the removed switch dropped."""
    from tinyldm.lit.diffusion_module import LatentDiffusionModule

    older = {
        "min_snr_gamma": 1.0,
        "timestep_sampling": {"distribution": "logit_normal", "loc": 0.5, "scale": 1.0, "stratified": False},
        "sampler": {"_target_": "tinyldm.diffusion.DDIMSolver"},
    }
    upgraded = LatentDiffusionModule.upgrade_hyperparameters(older)
    assert "timestep_sampling" not in upgraded and "min_snr_gamma" not in upgraded
    assert upgraded["loss"] == {
        "_target_": "tinyldm.diffusion.loss.DiffusionLoss",
        "min_snr_gamma": 1.0,
        "timestep_sampling": {"distribution": "logit_normal", "loc": 0.5, "scale": 1.0},
    }
    loss = DiffusionLoss(**{k: v for k, v in upgraded["loss"].items() if k != "_target_"})
    assert TimestepSampling.from_config(loss.timestep_sampling) == TimestepSampling("logit_normal", 0.5, 1.0)
    assert LatentDiffusionModule.upgrade_hyperparameters({})["loss"]["timestep_sampling"] is None  # uniform

"""Stage-2 training steps: fresh noise for every micro-batch, one EMA update per optimizer step."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers.modules import diffusion_module
from tinyldm.lit.ema import ema_with_warmup, power_function_ema, validate_ema


def test_accumulated_micro_batches_draw_different_noise_and_ema_follows_optimizer_steps(compose):
    cfg = compose(["debug=smoke", "model=ae"])
    latent_shape = (4, 8, 8)
    module = diffusion_module(cfg, latent_shape)
    noises = []
    add_noise = module.noise_schedule.add_noise

    def recording_add_noise(latents, noise, timesteps):
        noises.append(noise.clone())
        return add_noise(latents, noise, timesteps)

    module.noise_schedule.add_noise = recording_add_noise
    data = TensorDataset(torch.randn(8, *latent_shape), torch.arange(8) % 10)
    trainer = L.Trainer(
        max_steps=3,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(data, batch_size=2))

    assert trainer.global_step == 3 and len(noises) == 6  # 3 optimizer steps x 2 micro-batches
    for step in range(3):
        assert not torch.equal(noises[2 * step], noises[2 * step + 1]), (
            f"micro-batches of step {step} drew the same noise"
        )
    assert int(module.ema.n_averaged) == 3  # averaged once per optimizer step, not per micro-batch


def test_stage_autoencoder_and_stage_all_train_identical_stage1_weights(compose, tmp_path):
    from tinyldm.tasks import train

    common = [
        "debug=smoke",
        "model=ae",
        "logger=none",
        "evaluation.enabled=false",
        "diffusion.max_epochs=1",
        "diffusion.grid.every_n_steps=0",
    ]
    train.run(compose([*common, "stage=autoencoder", f"paths.output_dir={tmp_path}/alone"]))
    train.run(compose([*common, "stage=all", f"paths.output_dir={tmp_path}/both"]))
    alone, both = (
        torch.load(tmp_path / name / "checkpoints" / "autoencoder.ckpt", weights_only=True)["state_dict"]
        for name in ("alone", "both")
    )
    assert alone.keys() == both.keys()
    for key in alone:
        assert torch.equal(alone[key], both[key]), key


def test_fused_adamw_is_kept_unless_lightning_must_clip_under_mixed_precision():
    from tinyldm.lit.optim import build_optimizers

    params = [torch.nn.Parameter(torch.zeros(3))]
    config = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "fused": True}
    assert build_optimizers(params, config, None)["optimizer"].defaults["fused"] is True
    unfused = build_optimizers(params, config, None, allow_fused=False)["optimizer"]
    assert not unfused.defaults["fused"]
    assert unfused.defaults["lr"] == 1e-3
    assert config["fused"] is True  # the stored hyper-parameters are not edited


@pytest.mark.slow  # inductor compiles the UNet: minutes on 2 CPU cores
def test_compiled_unet_trains_and_keeps_the_eager_state_dict_keys(compose):
    cfg = compose(["debug=smoke", "model=ae", "diffusion.compile_unet=true"])
    module = diffusion_module(cfg, (4, 8, 8))
    keys = set(module.state_dict())
    data = TensorDataset(torch.randn(8, 4, 8, 8), torch.arange(8) % 10)
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["ldm/train/loss"])
    assert set(module.state_dict()) == keys  # checkpoints of a compiled run load into an eager module


@pytest.mark.parametrize("total_steps", [3, 5, 20, 40, 520])
def test_one_cycle_schedule_builds_and_steps_for_short_budgets(total_steps):
    from tinyldm.lit.optim import build_optimizers

    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}
    schedule = {
        "scheduler": {
            "_target_": "torch.optim.lr_scheduler.OneCycleLR",
            "_partial_": True,
            "max_lr": 1e-3,
            "pct_start": 0.05,
        },
        "interval": "step",
    }
    built = build_optimizers(params, optimizer, schedule, total_steps=total_steps)  # 20 x 0.05 = 1 divided by zero
    scheduler = built["lr_scheduler"]["scheduler"]
    rates = []  # the rate each optimizer step uses
    for _ in range(total_steps):
        rates.append(scheduler.get_last_lr()[0])
        built["optimizer"].step()
        scheduler.step()
    assert max(rates) == pytest.approx(1e-3) and rates[0] < 1e-4 and rates[-1] < 1e-4  # warm-up, peak, anneal


@pytest.mark.parametrize(("pct_start", "total_steps"), [(0.05, 20), (0.2, 5), (0.3, 3), (0.05, 520)])
def test_one_cycle_pct_start_never_divides_by_zero(pct_start, total_steps):
    from tinyldm.lit.optim import one_cycle_pct_start

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    usable = one_cycle_pct_start(pct_start, total_steps)
    torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=total_steps, pct_start=usable)
    assert usable == (pct_start if pct_start * total_steps >= 2 else 2 / total_steps)


def test_fused_is_allowed_unless_the_trainer_clips_under_mixed_precision():
    from types import SimpleNamespace

    from tinyldm.lit.optim import fused_allowed

    assert fused_allowed(None)
    assert fused_allowed(SimpleNamespace(gradient_clip_val=1.0, precision="32-true"))
    assert fused_allowed(SimpleNamespace(gradient_clip_val=None, precision="bf16-mixed"))
    assert not fused_allowed(SimpleNamespace(gradient_clip_val=1.0, precision="16-mixed"))


def _average_of_steps(multi_avg_fn, steps: int) -> float:
    """What an EMA with ``multi_avg_fn`` holds after training steps whose weights are 1, 2, ..., ``steps``."""
    model = torch.nn.Linear(1, 1, bias=False)
    average = AveragedModel(model, multi_avg_fn=multi_avg_fn)
    for step in range(1, steps + 1):
        model.weight.data.fill_(float(step))
        average.update_parameters(model)
    return average.module.weight.item()


@pytest.mark.parametrize("gamma", [4.0, 8.0, 17.0])
def test_power_function_ema_weighs_step_k_as_k_to_the_gamma(gamma):
    steps = 520
    weights = torch.arange(1, steps + 1, dtype=torch.float64) ** gamma  # Karras et al. 2024: profile t ** gamma
    expected = float((weights * torch.arange(1, steps + 1)).sum() / weights.sum())
    assert _average_of_steps(power_function_ema(gamma), steps) == pytest.approx(expected, rel=2e-3)


def test_warm_up_ema_of_a_short_run_is_close_to_power_function_gamma_8():
    """Why ``diffusion.ema_power`` exists: a 520-step run never reaches ``ema_decay``; its warm-up sets the length."""
    warm_up = _average_of_steps(ema_with_warmup(0.995), 520)
    assert warm_up == pytest.approx(_average_of_steps(power_function_ema(8.0), 520), rel=2e-3)
    assert warm_up > _average_of_steps(power_function_ema(4.0), 520) + 10  # a longer average lags further behind


@pytest.mark.parametrize("power", [0, -1.0, float("inf"), True, "long"])
def test_ema_power_outside_its_range_is_refused_naming_it(power):
    with pytest.raises(ValueError, match=r"diffusion.ema_power=.* must be null \(warm-up EMA\) or a number > 0"):
        validate_ema(0.995, power)

"""GPU and mixed precision on CUDA: marked ``gpu``, skipped cleanly where no CUDA device is present.

Run on a GPU machine with ``pytest -m gpu tests/gpu`` (``scripts/gpu_check.sh`` does, first).
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers.modules import diffusion_module

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GPU_SMOKE = [
    "model=ae",
    "debug=smoke",
    "trainer=gpu",
    "logger=none",
    "evaluation.enabled=false",
    "diffusion.grid.every_n_steps=0",
]
# a checkpoint trained on the GPU samples on the CPU like on the GPU (TF32 convolutions, other kernels):
# images in [-1, 1] after 5 DDIM steps agree to this mean absolute difference
CPU_GPU_MEAN_ABS_TOLERANCE = 2e-2


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_both_stages_train_on_the_gpu_with_finite_losses(compose, precision):
    from tinyldm.tasks import train

    metrics = train.run(compose([*GPU_SMOKE, f"trainer.precision={precision}"]))
    assert math.isfinite(metrics["ae/val/loss"]) and math.isfinite(metrics["ldm/val/loss"])
    assert metrics["ae/steps"] > 0 and metrics["ldm/steps"] > 0


def test_16_mixed_scales_the_loss_and_latents_and_decoder_stay_fp32(compose):
    from tinyldm.data.latents import encode_dataset

    module = diffusion_module(compose(["debug=smoke", "model=ae"]), (4, 8, 8))
    data = TensorDataset(torch.randn(32, 4, 8, 8), torch.arange(32) % 10)
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision="16-mixed",
        max_steps=4,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(data, batch_size=8))
    scaler = trainer.precision_plugin.scaler
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled() and math.isfinite(scaler.get_scale())
    assert trainer.global_step == 4 and torch.isfinite(trainer.callback_metrics["ldm/train/loss"])
    assert not trainer.optimizers[0].defaults["fused"]  # fused AdamW cannot be clipped under mixed precision

    module = module.cuda().eval()
    images = torch.rand(6, 1, 32, 32) * 2 - 1  # (B, 1, H, W)
    with torch.autocast("cuda", dtype=torch.float16):
        latents = encode_dataset(module.autoencoder, TensorDataset(images, torch.arange(6)), device="cuda")
        decoded = module.decode_latents(latents.tensors[0].cuda())
    assert latents.tensors[0].dtype == torch.float32 and latents.tensors[0].device.type == "cpu"
    assert decoded.dtype == torch.float32


def test_a_gpu_trained_checkpoint_samples_on_the_cpu_like_on_the_gpu(compose, tmp_path):
    from tinyldm.pipeline import LatentDiffusionPipeline
    from tinyldm.tasks import train

    train.run(compose([*GPU_SMOKE, f"paths.output_dir={tmp_path}/run"]))
    checkpoint = tmp_path / "run" / "checkpoints" / "diffusion.ckpt"
    labels = torch.tensor([0, 3, 7, 9])
    on_gpu = LatentDiffusionPipeline.from_checkpoint(checkpoint, device="cuda").model.sample(
        labels, generator=torch.Generator().manual_seed(0)
    )
    on_cpu = LatentDiffusionPipeline.from_checkpoint(checkpoint, device="cpu").model.sample(
        labels, generator=torch.Generator().manual_seed(0)
    )
    assert on_gpu.dtype == on_cpu.dtype == torch.float32
    assert (on_gpu.cpu() - on_cpu).abs().mean() < CPU_GPU_MEAN_ABS_TOLERANCE


def test_ddp_strategy_on_one_gpu_runs_the_pipeline(compose):
    from tinyldm.tasks import train

    ddp = [o for o in GPU_SMOKE if not o.startswith("trainer=")]
    metrics = train.run(compose([*ddp, "trainer=ddp", "trainer.devices=1"]))
    assert math.isfinite(metrics["ldm/val/loss"])

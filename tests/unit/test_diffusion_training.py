"""Stage-2 training steps: fresh noise for every micro-batch, one EMA update per optimizer step."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers.modules import diffusion_module


def test_accumulated_micro_batches_draw_different_noise_and_ema_follows_optimizer_steps(compose):
    cfg = compose(["debug=smoke", "model=ae"])
    latent_shape = (4, 8, 8)
    module = diffusion_module(cfg, latent_shape)
    noises = []
    add_noise = module.noise_scheduler.add_noise

    def recording_add_noise(latents, noise, timesteps):
        noises.append(noise.clone())
        return add_noise(latents, noise, timesteps)

    module.noise_scheduler.add_noise = recording_add_noise
    data = TensorDataset(torch.randn(8, *latent_shape), torch.arange(8) % 10)
    trainer = L.Trainer(max_steps=3, accumulate_grad_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(data, batch_size=2))

    assert trainer.global_step == 3 and len(noises) == 6  # 3 optimizer steps x 2 micro-batches
    for step in range(3):
        assert not torch.equal(noises[2 * step], noises[2 * step + 1]), f"micro-batches of step {step} drew the same noise"
    assert int(module.ema.n_averaged) == 3  # averaged once per optimizer step, not per micro-batch


def test_stage_autoencoder_and_stage_all_train_identical_stage1_weights(compose, tmp_path):
    from tinyldm.tasks import train

    common = ["debug=smoke", "model=ae", "logger=none", "evaluation.enabled=false", "diffusion.max_epochs=1",
              "diffusion.grid.every_n_steps=0"]
    train.run(compose([*common, "stage=autoencoder", f"paths.output_dir={tmp_path}/alone"]))
    train.run(compose([*common, "stage=all", f"paths.output_dir={tmp_path}/both"]))
    alone, both = (torch.load(tmp_path / name / "checkpoints" / "autoencoder.ckpt", weights_only=True)["state_dict"]
                   for name in ("alone", "both"))
    assert alone.keys() == both.keys()
    for key in alone:
        assert torch.equal(alone[key], both[key]), key

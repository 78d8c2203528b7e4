"""Stage 2: a class-conditional DDPM on the frozen autoencoder's latents.

The module is self-contained: its hyperparameters hold every sub-config (autoencoder, UNet,
conditioner, noise scheduler, sampler) and its state dict holds the frozen autoencoder's weights
and ``scale_factor``, so a stage-2 checkpoint can sample images without the stage-1 file.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from torchmetrics import MeanMetric

from tinyldm.autoencoders.base import Autoencoder
from tinyldm.denoiser import ConditionalDenoiser
from tinyldm.diffusion import DiffusionSampler, NoiseSchedule, from_legacy_config
from tinyldm.diffusion.input_perturbation import perturbed_noise, validate_input_perturbation
from tinyldm.diffusion.loss_weighting import min_snr_weights, validate_min_snr_gamma
from tinyldm.diffusion.noise_assignment import immiscible_pairing, validate_noise_assignment
from tinyldm.diffusion.timestep_sampling import TimestepSampling
from tinyldm.lit.ema import ema_with_warmup, power_function_ema, validate_ema, validate_guide_at
from tinyldm.lit.optim import build_optimizers, fused_allowed
from tinyldm.utils.checkpoints import stamp
from tinyldm.utils.images import grid_uint8
from tinyldm.utils.instantiate import build
from tinyldm.utils.loggers import log_image_grid

STAGE = "diffusion"
log = logging.getLogger(__name__)


class LatentDiffusionModule(L.LightningModule):
    def __init__(
        self,
        autoencoder: Mapping[str, Any],
        unet: Mapping[str, Any],
        conditioner: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        sampler: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        latent_shape: Sequence[int],
        lr_scheduler: Mapping[str, Any] | None = None,
        ema_decay: float = 0.999,
        ema_power: float | None = None,
        guide_at: float | None = None,
        min_snr_gamma: float | None = None,
        timestep_sampling: Mapping[str, Any] | None = None,
        noise_assignment: str = "independent",
        input_perturbation: float = 0.0,
        channels_last: bool = False,
        compile_unet: bool = False,
        image_pad: int = 2,
        grid: Mapping[str, Any] | None = None,
        seed: int = 0,
        image_dir: str | None = None,
        trained_autoencoder: Autoencoder | None = None,
    ) -> None:
        super().__init__()
        validate_ema(ema_decay, ema_power)
        validate_guide_at(guide_at)
        validate_min_snr_gamma(min_snr_gamma)
        validate_noise_assignment(noise_assignment)
        validate_input_perturbation(input_perturbation)
        # training draws timesteps from this; validation always uniformly, so val losses compare across settings
        self.timestep_sampling = TimestepSampling.from_config(timestep_sampling)
        self.save_hyperparameters(ignore=["image_dir", "trained_autoencoder"])
        self.image_dir = image_dir
        self.latent_shape = tuple(int(s) for s in latent_shape)  # (C, h, w)

        # frozen stage 1: eval mode, no gradients, always run in fp32. A training run hands over the model its
        # stage 1 trained or read (``trained_autoencoder``); a checkpoint rebuilds it from ``autoencoder``, its config
        self.autoencoder: Autoencoder = (
            trained_autoencoder if trained_autoencoder is not None else build(dict(autoencoder))
        )
        self.autoencoder.requires_grad_(False).eval()

        self.denoiser = ConditionalDenoiser(build(dict(unet)), build(dict(conditioner)), channels_last=channels_last)
        # EMA of UNet + conditioner (torch.optim.swa_utils); sampling always uses these weights
        # ema_power set: the power-function profile, and ema_decay has no say
        average = ema_with_warmup(ema_decay) if ema_power is None else power_function_ema(float(ema_power))
        self.ema = AveragedModel(self.denoiser, multi_avg_fn=average, use_buffers=True)
        self.ema.requires_grad_(False)
        # autoguidance's guide: the EMA weights frozen at a fraction ``guide_at`` of the run, a weaker version of
        # the final model that costs no extra training; it lives in the checkpoint beside the EMA
        self.guide: ConditionalDenoiser | None = None
        if guide_at is not None:
            self.guide = copy.deepcopy(self.denoiser).requires_grad_(False).eval()
            self.register_buffer("guide_taken_at", torch.tensor(-1, dtype=torch.long))  # optimizer step; -1 = not yet
        self._guide_step = 0  # the optimizer step at which this run takes the guide (set when training starts)
        # tinyldm <= 0.1 stored ``scheduler`` as a solver config with clip_sample in it: from_legacy_config turns
        # it into the noise schedule and hands its clipping (a sampler setting now) to the sampler
        schedule_config, legacy_sampler_settings = from_legacy_config(scheduler)
        self.noise_schedule: NoiseSchedule = build(schedule_config)
        self.sampler: DiffusionSampler = build(dict(sampler), **legacy_sampler_settings)
        self._legacy_sampler_settings = legacy_sampler_settings  # any sampler used on this model must keep them
        self._ema_step = 0  # the optimizer step the EMA last averaged
        # the epoch's mean training loss over every rank (torchmetrics syncs it once, at epoch end); the
        # per-step value stays each rank's own, so DDP adds no collective to a training step
        self.train_loss = MeanMetric()
        self._next_grid_step = int((grid or {}).get("every_n_steps", 0) or 0)  # when the next validation draws a grid

    # ------------------------------------------------------------------ plumbing
    def train(self, mode: bool = True) -> LatentDiffusionModule:
        """Lightning switches the whole module to train mode; stage 1 must stay in eval."""
        super().train(mode)
        self.autoencoder.eval()
        self.ema.eval()
        if self.guide is not None:
            self.guide.eval()
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stamp(checkpoint, STAGE, self.loggers)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming (``ckpt_path``) with a config whose ``guide_at`` differs from the checkpoint's run.

        A checkpoint without a guide, resumed with ``guide_at`` set, gets this module's untaken guide
        (taken when training reaches its step; :meth:`on_train_start` refuses a run already past it). A
        checkpoint's guide, resumed with ``guide_at=null``, is left out, as the config asks.
        """
        state = checkpoint.get("state_dict", {})
        has_guide = "guide_taken_at" in state
        if self.guide is not None and not has_guide:
            state.update({f"guide.{key}": value for key, value in self.guide.state_dict().items()})
            state["guide_taken_at"] = torch.tensor(-1, dtype=torch.long)
        elif self.guide is None and has_guide:
            for key in [key for key in state if key == "guide_taken_at" or key.startswith("guide.")]:
                del state[key]
            log.info("The checkpoint's autoguidance guide is not kept: diffusion.guide_at is null")

    @property
    def num_classes(self) -> int:
        return int(getattr(self.denoiser.conditioner, "num_classes", 0))

    @property
    def is_conditional(self) -> bool:
        return bool(self.denoiser.conditioner.is_conditional)

    # ------------------------------------------------------------------ training
    def diffusion_loss(
        self,
        denoiser: ConditionalDenoiser,
        latents: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
        drop_labels: bool | None = None,
        weighted: bool = True,
    ) -> torch.Tensor:
        """MSE between the denoiser's output and the noise schedule's target at random timesteps.

        With ``weighted`` (training), timesteps come from ``timestep_sampling``, noise draws are paired
        with latents by ``noise_assignment``, the input is perturbed by ``input_perturbation`` and, with
        ``min_snr_gamma`` set, each sample's MSE is scaled by its min-SNR weight; validation passes
        ``weighted=False``, so ``ldm/val/loss`` stays the plain MSE at uniform timesteps and independent,
        unperturbed noise, comparable between runs with and without any of them.
        """
        batch = latents.shape[0]
        T = self.noise_schedule.num_train_timesteps
        device = latents.device
        gen_device = generator.device if generator is not None else device
        sampling = self.timestep_sampling if weighted else TimestepSampling()
        timesteps = sampling.sample(batch, T, generator, gen_device).to(device)  # (B,)
        noise = torch.randn(latents.shape, generator=generator, device=gen_device).to(device)  # (B, C, h, w)
        assignment = self.hparams.get("noise_assignment", "independent") if weighted else "independent"
        if assignment != "independent":  # the same draws, re-paired: across the batch, or within each class
            noise = immiscible_pairing(latents, noise, labels if assignment == "immiscible_per_class" else None)
        gamma_input = float(self.hparams.get("input_perturbation", 0.0)) if weighted else 0.0
        input_noise = perturbed_noise(noise, gamma_input, generator) if gamma_input > 0 else noise  # (B, C, h, w)
        noisy = self.noise_schedule.add_noise(latents, input_noise, timesteps)  # (B, C, h, w)
        context, mask = denoiser.context(labels, batch, drop_labels=drop_labels, generator=generator)  # (B, K, D)
        prediction = denoiser(noisy, timesteps, context, mask)
        target = self.noise_schedule.training_target(latents, noise, timesteps)  # (B, C, h, w)
        gamma = self.hparams.get("min_snr_gamma")
        if not (weighted and gamma):
            return F.mse_loss(prediction.float(), target.float())
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)  # (B,)
        schedule = self.noise_schedule
        weights = min_snr_weights(schedule.alphas_cumprod, timesteps, schedule.prediction_type, gamma)  # (B,)
        return (weights * per_sample).mean()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        latents, labels = batch  # (B, C, h, w) scaled latents, (B,)
        # Noise, timesteps and label dropping are a pure function of (seed, optimizer step, micro-batch,
        # rank): Lightning does not checkpoint RNG states, and this makes a resumed run bit-identical
        # to an uninterrupted one. The micro-batch index keeps the batches accumulated into one
        # optimizer step (accumulate_grad_batches) from all drawing the same noise.
        accumulate = max(int(self.trainer.accumulate_grad_batches), 1)
        draw = self.global_step * accumulate + batch_idx % accumulate
        seed = int(self.hparams.seed) * 1_000_003 + draw * max(self.trainer.world_size, 1) + self.global_rank
        generator = torch.Generator(device=latents.device).manual_seed(
            seed
        )  # a private stream: the global RNG is left alone
        loss = self.diffusion_loss(self.denoiser, latents, labels, generator=generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"diffusion loss became {loss.item()} at step {self.global_step}; lower the learning rate "
                "or use trainer.precision=32. The last good checkpoint is kept in the run's checkpoints/."
            )
        self.train_loss(loss.detach())
        self.log("ldm/train/loss", self.train_loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_fit_start(self) -> None:
        if self.hparams.get("compile_unet"):
            # in place (nn.Module.compile): state-dict keys and checkpoints stay those of the eager UNet;
            # the EMA copy that samples stays eager. Off by default: on 2 CPU cores compiling took longer
            # than it saves over the main job's budget (docs/experiments/stage2-throughput.md).
            self.denoiser.unet.compile()

    def on_train_start(self) -> None:
        self._ema_step = self.global_step
        if self.guide is not None:
            total = int(self.trainer.estimated_stepping_batches)
            self._guide_step = min(max(round(self.hparams.guide_at * total), 1), max(total - 1, 1))
            log.info(
                "Autoguidance: the EMA weights at optimizer step %d of %d become the guide%s",
                self._guide_step,
                total,
                f" (taken at step {int(self.guide_taken_at)})" if self.guide_ready else "",
            )
            if not self.guide_ready and self.global_step >= self._guide_step and self.sampler.uses_guide:
                raise ValueError(
                    f"this run resumes at optimizer step {self.global_step} from a checkpoint without an autoguidance "
                    f"guide, past step {self._guide_step} where diffusion.guide_at={self.hparams.guide_at} takes it, "
                    f"so it could not sample with sampler.autoguidance_scale={self.sampler.autoguidance_scale:g}; "
                    "resume with diffusion.guide_at=null sampler.autoguidance_scale=1, or train from the start"
                )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Average after each optimizer step (not each micro-batch: their weights are the same)."""
        if self.global_step > self._ema_step:
            self.ema.update_parameters(self.denoiser)
            self._ema_step = self.global_step
            if self.guide is not None and self.global_step == self._guide_step:
                self.guide.load_state_dict(self.ema.module.state_dict())
                self.guide_taken_at.fill_(self.global_step)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        latents, labels = batch
        # fixed noise and timesteps per batch, so validation losses are comparable across epochs
        generator = torch.Generator(device="cpu").manual_seed(1000 + batch_idx)
        loss = self.diffusion_loss(
            self.ema.module, latents, labels, generator=generator, drop_labels=False, weighted=False
        )
        self.log("ldm/val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """A class grid at the first validation after every ``grid.every_n_steps`` optimizer steps."""
        grid_cfg = dict(self.hparams.grid or {})
        every = int(grid_cfg.get("every_n_steps", 0) or 0)
        if self.trainer.sanity_checking or every <= 0 or self.global_step < self._next_grid_step:
            return
        self._next_grid_step = (self.global_step // every + 1) * every
        for scale in grid_cfg.get("guidance_scales") or [self.sampler.guidance_scale]:
            grid = self.sample_grid(int(grid_cfg.get("samples_per_class", 8)), float(scale), seed=0)
            sampler = f"{self.sampler.kind}-{self.sampler.steps}"
            caption = f"rows: classes 0-{max(self.num_classes - 1, 0)}, guidance {scale:g}, {sampler}"
            log_image_grid(self.trainer, f"ldm/samples/guidance_{scale:g}", grid, self.image_dir, caption)

    def configure_optimizers(self) -> dict[str, Any]:
        total_steps = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else None
        return build_optimizers(
            self.denoiser.parameters(),
            self.hparams.optimizer,
            self.hparams.lr_scheduler,
            total_steps,
            allow_fused=fused_allowed(self._trainer),
        )

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, h, w) -> images (B, 1, H, W) in [-1, 1], decoded in fp32."""
        with torch.autocast(device_type=latents.device.type, enabled=False):
            return self.autoencoder.decode(latents.float() / self.autoencoder.scale_factor)

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor | Sequence[str] | None,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
        sampler: DiffusionSampler | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Images (B, 1, H, W) in [-1, 1] for ``labels`` (B,), from the EMA weights and ``sampler`` (default: ours).

        A text model also takes ``B`` prompts as ``labels`` (a label alone is asked as its class name).

        Unconditional models take ``labels=None`` and ``num_samples``; the sampler then ignores its guidance scale.
        Another guidance scale is another sampler: ``sampler=module.sampler.with_guidance(scale)``.
        """
        sampler = sampler if sampler is not None else self.sampler
        lost = {key: value for key, value in self._legacy_sampler_settings.items() if getattr(sampler, key) != value}
        if lost:
            overrides = " ".join(f"sampler.{key}={str(value).lower()}" for key, value in lost.items())
            raise ValueError(
                f"this checkpoint (tinyldm <= 0.1) was trained with scheduler settings {lost}, which "
                f"belong to the sampler now, but {sampler!r} does not keep them; pass {overrides}"
            )
        if labels is None:
            if self.is_conditional:
                raise ValueError("this model is conditional: pass labels (or prompts, for a text model)")
            if not num_samples or num_samples < 1:
                raise ValueError(f"num_samples={num_samples} must be >= 1 for an unconditional model")
            batch = num_samples
        else:
            labels = labels.to(self.device) if isinstance(labels, torch.Tensor) else list(labels)
            batch = len(labels)
        latents = self._sample_latents(sampler, labels, batch, generator, progress=progress)  # (B, C, h, w)
        return self.decode_latents(latents)

    @property
    def guide_ready(self) -> bool:
        """Whether this model holds an autoguidance guide (trained with ``guide_at``, past the step it is taken)."""
        return self.guide is not None and int(self.guide_taken_at) >= 0

    def guide_for(self, sampler: DiffusionSampler) -> ConditionalDenoiser | None:
        """The guide ``sampler`` needs (None when its autoguidance is off); raise, naming the fix, if there is none."""
        if not sampler.uses_guide:
            return None
        if self.guide_ready:
            return self.guide.eval()
        why = (
            "this model was trained without one (diffusion.guide_at=null)"
            if self.guide is None
            else "it was never taken: training has not reached its step, or resumed past it without one"
        )
        raise ValueError(
            f"sampler.autoguidance_scale={sampler.autoguidance_scale:g} needs the model's autoguidance guide, "
            f"but {why}; use sampler.autoguidance_scale=1 (off), or train with diffusion.guide_at set (e.g. 0.25)"
        )

    def _ready(self, sampler: DiffusionSampler) -> DiffusionSampler:
        """``sampler`` for a grid drawn during training: without autoguidance until the guide is taken."""
        return sampler if self.guide_ready else dataclasses.replace(sampler, autoguidance_scale=1.0)

    def _sample_latents(
        self, sampler: DiffusionSampler, labels: Any, batch: int, generator: torch.Generator | None, **options: Any
    ) -> Any:
        """Run ``sampler`` on the EMA denoiser for ``labels`` (or prompts; None: unconditional); ``options`` go on."""
        guide = self.guide_for(sampler)
        denoiser = self.ema.module.eval()
        cond, cond_mask = denoiser.context(labels, batch, drop_labels=False)  # (B, K, D), (B, K) or None
        # the guide's conditioner is its own snapshot too: it reads the labels through its own tokens
        guide_cond, guide_mask = guide.context(labels, batch, drop_labels=False) if guide is not None else (None, None)
        # None tells the sampler the model is unconditional: it samples with ``cond`` alone, whatever its scale
        uncond, uncond_mask = denoiser.unconditional_context(batch) if self.is_conditional else (None, None)
        shape = (batch, *self.latent_shape)
        return sampler.sample(
            denoiser,
            self.noise_schedule,
            shape,
            cond,
            uncond,
            generator,
            cond_mask=cond_mask,
            uncond_mask=uncond_mask,
            guide=guide,
            guide_context=guide_cond,
            guide_mask=guide_mask,
            **options,
        )

    @torch.no_grad()
    def trajectory_strip(self, timesteps: Sequence[int] = (999, 750, 500, 250, 100, 0), seed: int = 0) -> Any:
        """(H', W', 3) uint8 strip: one row per class, columns = the predicted x0 decoded at ``timesteps``.

        Shows how the image emerges during sampling (coarse layout first, strokes last).
        """
        generator = torch.Generator(device="cpu").manual_seed(seed)
        labels = torch.arange(max(self.num_classes, 1), device=self.device)
        conditions = labels if self.is_conditional else None
        final, trajectory = self._sample_latents(
            self._ready(self.sampler), conditions, labels.shape[0], generator, return_trajectory_at=timesteps
        )
        columns = [self.decode_latents(trajectory[t]) for t in sorted(trajectory, reverse=True)]
        columns.append(self.decode_latents(final))
        strip = torch.stack(columns, dim=1).flatten(0, 1)  # (batch * columns, 1, H, W), row-major per class
        return grid_uint8(strip, nrow=len(columns), pad=self.hparams.image_pad)

    def sample_grid(self, samples_per_class: int, guidance_scale: float, seed: int = 0) -> Any:
        """(H', W', 3) uint8 grid: one row per class (or rows of unconditional samples)."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        sampler = self._ready(self.sampler.with_guidance(guidance_scale))
        if self.is_conditional:
            labels = torch.arange(self.num_classes).repeat_interleave(samples_per_class)  # (classes * n,)
            images = self.sample(labels, generator=generator, sampler=sampler)
        else:  # the scale is ignored without classes
            images = self.sample(None, num_samples=10 * samples_per_class, generator=generator, sampler=sampler)
        return grid_uint8(images, nrow=samples_per_class, pad=self.hparams.image_pad)

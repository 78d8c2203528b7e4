"""Stage 2: a conditional DDPM on the frozen autoencoder's latents.

The module is self-contained: its hyperparameters hold every part's config (autoencoder, UNet,
conditioner, noise schedule, solver, guidance, loss), each a constructor (``_target_`` and its
arguments), and its state dict holds the frozen autoencoder's weights and ``scale_factor``, so a
stage-2 checkpoint rebuilds exactly this module and samples without the stage-1 file.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.optim.swa_utils import AveragedModel
from torchmetrics import MeanMetric

from tinyldm.autoencoders.base import Autoencoder
from tinyldm.denoiser import ConditionalDenoiser
from tinyldm.diffusion import ClassifierFreeGuidance, ConditionedDenoiser, NoiseSchedule, Solver
from tinyldm.diffusion import sample as run_sampler
from tinyldm.diffusion.editing import Source
from tinyldm.diffusion.loss import DiffusionLoss
from tinyldm.diffusion.sampling import Progress
from tinyldm.lit.ema import ema_with_warmup, power_function_ema, validate_ema, validate_guide_at
from tinyldm.lit.optim import build_optimizers, fused_allowed
from tinyldm.lit.upgrades import upgrade_stage2
from tinyldm.utils.checkpoints import stamp
from tinyldm.utils.images import grid_uint8
from tinyldm.utils.instantiate import build

STAGE = "diffusion"
log = logging.getLogger(__name__)


class LatentDiffusionModule(L.LightningModule):
    """The latent diffusion model and how it trains: denoiser (UNet + conditioner), EMA, autoguidance guide.

    Args:
        autoencoder: the stage-1 model's config (``model.net``); its weights come with the checkpoint, or
            from ``trained_autoencoder`` in a training run.
        unet: ``conf/unet`` with the latent shape filled in (:func:`tinyldm.unet.unet_config_for`).
        conditioner: ``conf/conditioner``.
        scheduler: ``conf/scheduler``, the training noise schedule.
        sampler: ``conf/sampler``, the solver the model's grids and evaluation draw with.
        guidance: ``conf/guidance``, the guidance they draw with.
        loss: ``diffusion.loss``, the training loss (:class:`~tinyldm.diffusion.loss.DiffusionLoss`).
        optimizer: ``diffusion.optimizer``, a ``_partial_`` optimizer.
        latent_shape: ``(C, h, w)`` of the stage-1 latents.
        lr_scheduler: ``diffusion.lr_scheduler``: ``{scheduler: _partial_ config, interval: step}``.
        ema_decay: decay of the EMA weights (with warm-up) that every sample uses.
        ema_power: instead, the power-function EMA's ``gamma`` (Karras et al. 2024); ``None``: ``ema_decay``.
        guide_at: keep the EMA weights after this fraction of the optimizer steps as the autoguidance guide.
        channels_last: NHWC memory format for the UNet.
        compile_unet: ``torch.compile`` the training UNet.
        image_pad: the data's padding (28 -> 32), cropped when images are converted.
        seed: the seed of the training noise streams.
        trained_autoencoder: the stage-1 model a training run trained or read, handed over in memory.
    """

    def __init__(
        self,
        autoencoder: Mapping[str, Any],
        unet: Mapping[str, Any],
        conditioner: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        sampler: Mapping[str, Any],
        guidance: Mapping[str, Any],
        loss: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        latent_shape: Sequence[int],
        lr_scheduler: Mapping[str, Any] | None = None,
        ema_decay: float = 0.999,
        ema_power: float | None = None,
        guide_at: float | None = None,
        channels_last: bool = False,
        compile_unet: bool = False,
        image_pad: int = 2,
        seed: int = 0,
        trained_autoencoder: Autoencoder | None = None,
    ) -> None:
        super().__init__()
        validate_ema(ema_decay, ema_power)
        validate_guide_at(guide_at)
        self.save_hyperparameters(ignore=["trained_autoencoder"])
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
        self.noise_schedule: NoiseSchedule = build(dict(scheduler))
        self.loss: DiffusionLoss = build(dict(loss))
        self.solver: Solver = build(dict(sampler))
        self.guidance: ClassifierFreeGuidance = build(dict(guidance))
        try:
            self.solver.check_schedule(self.noise_schedule)  # e.g. more steps than the schedule has timesteps
        except ValueError as error:
            raise ValueError(f"sampler: {error}") from None
        if self.guidance.uses_guide and guide_at is None:
            raise ValueError(
                f"guidance.autoguidance={self.guidance.autoguidance:g} needs a guide, but diffusion.guide_at is "
                "null; set diffusion.guide_at (e.g. 0.25: the EMA weights after a quarter of stage 2) or "
                "guidance.autoguidance=1 (off)"
            )
        self._ema_step = 0  # the optimizer step the EMA last averaged
        # the epoch's mean training loss over every rank (torchmetrics syncs it once, at epoch end); the
        # per-step value stays each rank's own, so DDP adds no collective to a training step
        self.train_loss = MeanMetric()

    @classmethod
    def upgrade_hyperparameters(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """A checkpoint's hyper-parameters as this release's constructor takes them (:mod:`tinyldm.lit.upgrades`)."""
        return upgrade_stage2(hparams)

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
        loss = self.loss(self.denoiser, self.noise_schedule, latents, labels, generator=generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"diffusion loss became {loss.item()} at step {self.global_step}; lower the learning rate "
                "or use trainer.precision=32. The last good checkpoint is kept in the run's checkpoints/."
            )
        self.train_loss(loss.detach())
        self.log("ldm/train/loss", self.train_loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_fit_start(self) -> None:
        if self.hparams.compile_unet:
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
            if not self.guide_ready and self.global_step >= self._guide_step and self.guidance.uses_guide:
                raise ValueError(
                    f"this run resumes at optimizer step {self.global_step} from a checkpoint without an autoguidance "
                    f"guide, past step {self._guide_step} where diffusion.guide_at={self.hparams.guide_at} takes it, "
                    f"so it could not sample with guidance.autoguidance={self.guidance.autoguidance:g}; "
                    "resume with diffusion.guide_at=null guidance.autoguidance=1, or train from the start"
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
        denoiser, schedule = self.ema.module, self.noise_schedule
        loss = self.loss(denoiser, schedule, latents, labels, generator=generator, drop_labels=False, weighted=False)
        self.log("ldm/val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True)

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
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, H, W) in [-1, 1] -> scaled latents (B, C, h, w), encoded in fp32: what stage 2 diffuses."""
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self.autoencoder.encode(images.float()).float() * self.autoencoder.scale_factor

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor | Sequence[str] | None,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
        solver: Solver | None = None,
        guidance: ClassifierFreeGuidance | None = None,
        progress: Progress = False,
        negative: torch.Tensor | Sequence[str] | None = None,
        source: Source | None = None,
    ) -> torch.Tensor:
        """Images (B, 1, H, W) in [-1, 1] for ``labels`` (B,), from the EMA weights (default solver and guidance: ours).

        A text model also takes ``B`` prompts as ``labels`` (a label alone is asked as its class name).
        Unconditional models take ``labels=None`` and ``num_samples``; the guidance scale is then ignored.
        Another guidance scale is another guidance: ``guidance=module.guidance.replace(scale=s)``.
        ``negative`` (B labels or prompts) is what guidance steers away from instead of the empty condition;
        ``source`` makes this an edit (:class:`~tinyldm.diffusion.editing.Source`).
        """
        if labels is None:
            if self.is_conditional:
                raise ValueError("this model is conditional: pass labels (or prompts, for a text model)")
            if not num_samples or num_samples < 1:
                raise ValueError(f"num_samples={num_samples} must be >= 1 for an unconditional model")
            batch = num_samples
        else:
            labels = labels.to(self.device) if isinstance(labels, torch.Tensor) else list(labels)
            batch = len(labels)
        solver, guidance = solver or self.solver, guidance or self.guidance
        model = self.conditioned(labels, batch, guidance, negative)
        latents = self.sample_latents(model, solver, guidance, generator, progress=progress, source=source)
        return self.decode_latents(latents)

    @property
    def guide_ready(self) -> bool:
        """Whether this model holds an autoguidance guide (trained with ``guide_at``, past the step it is taken)."""
        return self.guide is not None and int(self.guide_taken_at) >= 0

    def guide_for(self, guidance: ClassifierFreeGuidance) -> ConditionalDenoiser | None:
        """The guide ``guidance`` needs (None when its autoguidance is off); raise, naming the fix, if there is none."""
        if not guidance.uses_guide:
            return None
        if self.guide_ready:
            return self.guide.eval()
        why = (
            "this model was trained without one (diffusion.guide_at=null)"
            if self.guide is None
            else "it was never taken: training has not reached its step, or resumed past it without one"
        )
        raise ValueError(
            f"guidance.autoguidance={guidance.autoguidance:g} needs the model's autoguidance guide, "
            f"but {why}; use guidance.autoguidance=1 (off), or train with diffusion.guide_at set (e.g. 0.25)"
        )

    def _ready(self, guidance: ClassifierFreeGuidance) -> ClassifierFreeGuidance:
        """``guidance`` for a grid drawn during training: without autoguidance until the guide is taken."""
        return guidance if self.guide_ready else guidance.replace(autoguidance=1.0)

    @torch.no_grad()
    def conditioned(
        self, labels: Any, batch: int, guidance: ClassifierFreeGuidance, negative: Any = None
    ) -> ConditionedDenoiser:
        """The EMA denoiser bound to ``labels`` (or prompts; None: unconditional) for ``batch`` samples.

        The unconditional side of guidance is the empty condition, or ``negative`` (``batch`` labels or
        prompts) when given; the autoguidance guide, when ``guidance`` uses one, reads the labels through its
        own conditioner (a snapshot too).
        """
        guide = self.guide_for(guidance)
        denoiser = self.ema.module.eval()
        cond, cond_mask = denoiser.context(labels, batch, drop_labels=False)  # (B, K, D), (B, K) or None
        guide_cond, guide_mask = guide.context(labels, batch, drop_labels=False) if guide is not None else (None, None)
        # None tells the loop the model is unconditional: it samples with ``cond`` alone, whatever the scale
        if not self.is_conditional:
            uncond, uncond_mask = None, None
        elif negative is None:
            uncond, uncond_mask = denoiser.unconditional_context(batch)
        else:
            uncond, uncond_mask = denoiser.context(negative, batch, drop_labels=False)
        return ConditionedDenoiser(denoiser, cond, cond_mask, uncond, uncond_mask, guide, guide_cond, guide_mask)

    def sample_latents(
        self,
        model: ConditionedDenoiser,
        solver: Solver,
        guidance: ClassifierFreeGuidance,
        generator: torch.Generator | None,
        **options: Any,
    ) -> Any:
        """Run the sampling loop for ``model`` on this model's noise schedule and latent shape; ``options`` go on."""
        shape = (model.batch_size, *self.latent_shape)
        return run_sampler(model, self.noise_schedule, solver, guidance, shape, generator, **options)

    @torch.no_grad()
    def trajectory_strip(self, timesteps: Sequence[int] = (999, 750, 500, 250, 100, 0), seed: int = 0) -> Any:
        """(H', W', 3) uint8 strip: one row per class, columns = the predicted x0 decoded at ``timesteps``.

        Shows how the image emerges during sampling (coarse layout first, strokes last).
        """
        generator = torch.Generator(device="cpu").manual_seed(seed)
        labels = torch.arange(max(self.num_classes, 1), device=self.device)
        conditions = labels if self.is_conditional else None
        guidance = self._ready(self.guidance)
        model = self.conditioned(conditions, labels.shape[0], guidance)
        final, trajectory = self.sample_latents(model, self.solver, guidance, generator, trajectory_at=timesteps)
        columns = [self.decode_latents(trajectory[t]) for t in sorted(trajectory, reverse=True)]
        columns.append(self.decode_latents(final))
        strip = torch.stack(columns, dim=1).flatten(0, 1)  # (batch * columns, 1, H, W), row-major per class
        return grid_uint8(strip, nrow=len(columns), pad=self.hparams.image_pad)

    def sample_grid(self, samples_per_class: int, guidance_scale: float, seed: int = 0) -> Any:
        """(H', W', 3) uint8 grid: one row per class (or rows of unconditional samples)."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        guidance = self._ready(self.guidance.replace(scale=guidance_scale))
        if self.is_conditional:
            labels = torch.arange(self.num_classes).repeat_interleave(samples_per_class)  # (classes * n,)
            images = self.sample(labels, generator=generator, guidance=guidance)
        else:  # the scale is ignored without classes
            images = self.sample(None, num_samples=10 * samples_per_class, generator=generator, guidance=guidance)
        return grid_uint8(images, nrow=samples_per_class, pad=self.hparams.image_pad)

"""The one inference path: a trained stage-2 model, loaded safely, turned into images.

``sample.py``, ``evaluate.py``, the end-of-training evaluation and the notebook all generate through
:class:`LatentDiffusionPipeline`, so a seed means the same images everywhere and a checkpoint from
someone else is read the same careful way everywhere (weights only, stored ``_target_``\\ s
checked against the allow-list: :mod:`tinyldm.utils.checkpoints`).

    pipeline = LatentDiffusionPipeline.load("runs/.../diffusion.ckpt", device="cpu")  # or a model folder
    labels = pipeline.labels(n_per_class=8)                       # (80,) 0,0,...,9
    images = pipeline.generate(labels, seed=0)                    # (80, 1, 32, 32) in [-1, 1]
    pixels = pipeline.to_uint8(images)                            # (80, 28, 28) uint8
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyldm.conditioners import TextConditioner
from tinyldm.diffusion import ClassifierFreeGuidance, ConditionedDenoiser, Solver
from tinyldm.diffusion.editing import Source, slerp
from tinyldm.diffusion.sampling import Progress
from tinyldm.diffusion.solver import validate_strength
from tinyldm.lit.diffusion_module import LatentDiffusionModule
from tinyldm.masks import latent_keep
from tinyldm.model_folder import is_model_folder, load_model_folder, save_model_folder
from tinyldm.utils.checkpoints import require_stage, restore_module
from tinyldm.utils.images import from_uint8, to_uint8
from tinyldm.utils.instantiate import build


class LatentDiffusionPipeline:
    """Generate images from a stage-2 model: labels in, seeded batches through the sampler, images out.

    Args:
        model: a stage-2 module (trained in this process, or read by :meth:`from_checkpoint`);
            sampling always uses its EMA weights.
    """

    def __init__(self, model: LatentDiffusionModule) -> None:
        self.model = model

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device | str = "cpu") -> LatentDiffusionPipeline:
        """Read a stage-2 checkpoint (refusing stage-1, foreign or unsafe files with a clear error)."""
        model = restore_module(LatentDiffusionModule, require_stage(path, "diffusion"), path)
        return cls(model.to(device).eval())

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str = "cpu") -> LatentDiffusionPipeline:
        """Read a model folder written by :meth:`save_pretrained` (JSON and safetensors only).

        Read as carefully as a checkpoint (:mod:`tinyldm.model_folder`): allow-listed ``_target_``\\ s, every
        tensor checked, errors that name the file.
        """
        return cls(load_model_folder(path).to(device).eval())

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> LatentDiffusionPipeline:
        """A model folder or a ``.ckpt``, whichever ``path`` is: what ``ckpt=`` accepts in every entry point."""
        if Path(path).is_dir():
            if not is_model_folder(path):
                raise FileNotFoundError(
                    f"{str(path)!r} is a folder but not a tinyldm model folder (it has no model_index.json); "
                    "give a stage-2 .ckpt or a folder written by export.py"
                )
            return cls.from_pretrained(path, device)
        return cls.from_checkpoint(path, device)

    def save_pretrained(
        self, path: str | Path, card: str | None = None, files: Mapping[str, str] | None = None
    ) -> Path:
        """Write the model as a model folder at ``path`` (refused if it exists), ``card`` as its README.md."""
        return save_model_folder(self.model, path, card, files)

    @property
    def autoencoder(self) -> torch.nn.Module:
        """The frozen stage-1 model whose decoder makes the images (its ceiling bounds their quality)."""
        return self.model.autoencoder

    @property
    def solver(self) -> Solver:
        """The solver stored with the model: the one its run's grids and end-of-training evaluation used."""
        return self.model.solver

    @property
    def guidance(self) -> ClassifierFreeGuidance:
        """The guidance stored with the model, as the solver is."""
        return self.model.guidance

    def sampling_for(
        self, sampler: Mapping[str, Any] | None = None, guidance: Mapping[str, Any] | None = None
    ) -> tuple[Solver, ClassifierFreeGuidance]:
        """The solver and guidance to draw with: the stored ones, unless ``sampler`` / ``guidance`` say otherwise.

        Settings holding a ``_target_`` are a whole config (``sampler=NAME``, ``guidance=NAME``): they replace
        the stored one. Without one, each key changes only that setting of the stored one (``sampler.steps=30``,
        ``guidance.scale=2``), so a model draws the way its run evaluated it unless told otherwise. Either way
        the result is validated like any, and a setting the stored one does not take is refused naming it.
        """
        return _chosen(self.solver, sampler), _chosen(self.guidance, guidance)

    def labels(self, n_per_class: int, classes: Sequence[int] | None = None, n: int | None = None) -> torch.Tensor:
        """(N,) labels to ask for: each of ``classes`` (default: all) ``n_per_class`` times, in class order.

        An unconditional model has no classes: it gets ``n`` (default ``10 * n_per_class``) labels of -1.
        """
        if n_per_class < 1:
            raise ValueError(f"n_per_class={n_per_class} must be >= 1")
        if not self.model.is_conditional:
            if classes:
                raise ValueError(f"classes={list(classes)} given, but this checkpoint is unconditional")
            count = int(n) if n is not None else 10 * n_per_class
            if count < 1:
                raise ValueError(f"n={n} must be >= 1")
            return torch.full((count,), -1, dtype=torch.long)
        allowed = list(range(self.model.num_classes))
        wanted = allowed if classes is None else [int(c) for c in classes]
        bad = [c for c in wanted if c not in allowed]
        if bad or not wanted:
            raise ValueError(f"classes={wanted}: {bad or 'empty'} not among the model's classes {allowed}")
        return torch.tensor(wanted, dtype=torch.long).repeat_interleave(n_per_class)  # (N,)

    @property
    def takes_prompts(self) -> bool:
        """Whether the model reads text prompts (``conditioner=text``)."""
        return isinstance(self.model.denoiser.conditioner, TextConditioner)

    def check_prompts(self, prompts: Sequence[str]) -> None:
        """Refuse prompts the model cannot read, before any sampling: every prompt is tokenized here
        (over the length limit: an error naming it; unknown words warn)."""
        if not self.takes_prompts:
            raise ValueError("prompts given, but this checkpoint is not text-conditioned (conditioner=text)")
        self.model.denoiser.conditioner.tokenizer.encode(list(prompts))

    def unknown_words(self, prompts: Sequence[str]) -> list[str]:
        """The words of ``prompts`` the model's vocabulary lacks (each once, in order): they are read as UNK."""
        self.check_prompts(prompts)
        tokenizer = self.model.denoiser.conditioner.tokenizer
        return list(dict.fromkeys(word for prompt in prompts for word in tokenizer.unknown_words(prompt)))

    def prompt_labels(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N,) the class each prompt names (-1: none or several), after :meth:`check_prompts`."""
        self.check_prompts(prompts)
        return torch.tensor(self.model.denoiser.conditioner.label_of(prompts), dtype=torch.long)

    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor | Sequence[str],
        *,
        negative: int | str | None = None,
        solver: Solver | None = None,
        guidance: ClassifierFreeGuidance | None = None,
        seed: int = 0,
        batch_size: int = 250,
        progress: Progress = False,
    ) -> torch.Tensor:
        """Images (N, 1, H, W) in [-1, 1] for ``labels`` (N,) (-1s for an unconditional model), or N prompts.

        ``solver`` and ``guidance`` default to the stored ones (:meth:`sampling_for` makes others); ``negative``
        (a class, or a prompt for a text model) is what guidance steers away from instead of the empty
        condition. One CPU generator drives every batch, so ``seed`` fixes the images whatever the device
        and the same seed gives the same images in ``sample.py``, ``evaluate.py`` and training's evaluation.
        """
        return self._draw(labels, negative, solver, guidance, seed, batch_size, progress)

    @torch.no_grad()
    def img2img(
        self,
        images: np.ndarray,
        targets: torch.Tensor | Sequence[str],
        strength: float,
        *,
        negative: int | str | None = None,
        solver: Solver | None = None,
        guidance: ClassifierFreeGuidance | None = None,
        seed: int = 0,
        batch_size: int = 250,
        progress: Progress = False,
    ) -> torch.Tensor:
        """``images`` (uint8 (N, 28, 28)) redrawn as ``targets`` (N labels or prompts): (N, 1, H, W) in [-1, 1].

        SDEdit (:mod:`~tinyldm.diffusion.editing`): each image is encoded, noised to ``strength`` of the
        solver's grid and denoised under its target. ``strength=0`` gives the autoencoder's reconstruction,
        ``strength=1`` plain sampling with the same ``seed``.
        """
        validate_strength(strength)
        sources = self.encode(images, batch_size)
        return self._draw(targets, negative, solver, guidance, seed, batch_size, progress, sources, strength)

    @torch.no_grad()
    def inpaint(
        self,
        images: np.ndarray,
        mask: np.ndarray,
        targets: torch.Tensor | Sequence[str],
        *,
        resample_steps: int = 1,
        negative: int | str | None = None,
        solver: Solver | None = None,
        guidance: ClassifierFreeGuidance | None = None,
        seed: int = 0,
        batch_size: int = 250,
        progress: Progress = False,
    ) -> torch.Tensor:
        """``images`` (uint8 (N, 28, 28)) with the pixels ``mask`` ((28, 28) bool, True: draw) drawn anew as
        ``targets`` (N labels or prompts): (N, 1, H, W) in [-1, 1].

        Blended latent diffusion with optional RePaint resampling (:mod:`~tinyldm.diffusion.editing`): the
        latent cells that touch the mask are drawn, the others kept from the source at every step
        (:func:`~tinyldm.masks.latent_keep`).
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (28, 28) or not mask.any() or mask.all():
            raise ValueError(f"mask must be (28, 28) bool with some but not all pixels to draw, got {mask.shape}")
        keep = latent_keep(mask, int(self.model.hparams.image_pad), self.model.latent_shape[-1])  # (1, 1, h, w)
        sources = self.encode(images, batch_size)
        return self._draw(
            targets, negative, solver, guidance, seed, batch_size, progress, sources, 1.0, keep, resample_steps
        )

    @torch.no_grad()
    def interpolate(
        self,
        start: int | str,
        end: int | str,
        n: int,
        *,
        negative: int | str | None = None,
        seed: int = 0,
        end_seed: int | None = None,
        solver: Solver | None = None,
        guidance: ClassifierFreeGuidance | None = None,
        progress: Progress = False,
    ) -> torch.Tensor:
        """A strip of ``n`` images (n, 1, H, W) from condition ``start`` to ``end`` (two classes, or two prompts).

        The conditions are blended linearly along the strip (:meth:`ConditionedDenoiser.between`) with the
        noise held fixed, so only the condition changes; with ``end_seed`` the noise moves too, along the
        sphere from ``seed``'s draw to ``end_seed``'s (:func:`~tinyldm.diffusion.editing.slerp`). The ends are
        the plain samples of each condition with its seed (with a stochastic solver, the in-between noise of
        its steps is ``seed``'s).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"n={n!r} must be an integer >= 2 (the images of the strip, both ends included)")
        requests = [self._requests([endpoint] * n, name) for endpoint, name in ((start, "start"), (end, "end"))]
        solver, guidance = self._ready(solver, guidance)
        weights = torch.linspace(0.0, 1.0, n)  # (n,)
        shape = (n, *self.model.latent_shape)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.randn(shape, generator=generator)  # (n, C, h, w): what plain sampling with ``seed`` draws
        if end_seed is not None:
            end_noise = torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(int(end_seed)))
            noise = slerp(noise, end_noise, weights)
        negatives = self._negative(negative, n)
        ends = [
            self.model.conditioned(
                r.to(self.model.device) if isinstance(r, torch.Tensor) else r, n, guidance, negatives
            )
            for r in requests
        ]
        model = ConditionedDenoiser.between(ends[0], ends[1], weights.to(self.model.device))
        latents = self.model.sample_latents(model, solver, guidance, generator, progress=progress, noise=noise)
        return self.model.decode_latents(latents).cpu()

    def encode(self, images: np.ndarray, batch_size: int = 250) -> torch.Tensor:
        """uint8 images (N, 28, 28) -> their scaled latents (N, C, h, w), what stage 2 diffuses."""
        x = self.from_uint8(images)  # (N, 1, H, W)
        device = self.model.device
        return torch.cat([self.model.encode_images(chunk.to(device)) for chunk in x.split(batch_size)])

    def from_uint8(self, images: np.ndarray) -> torch.Tensor:
        """(N, 28, 28) uint8 -> (N, 1, H, W) in [-1, 1], padded as the training data were; refuses anything else."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
            kind = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise ValueError(f"images must be uint8 (N, 28, 28) arrays, got {kind}")
        if images.shape[1:] != (28, 28) or len(images) == 0:
            raise ValueError(f"images must be (N, 28, 28) with N >= 1, got {images.shape}")
        return from_uint8(images, pad=int(self.model.hparams.image_pad))

    def _ready(
        self, solver: Solver | None, guidance: ClassifierFreeGuidance | None
    ) -> tuple[Solver, ClassifierFreeGuidance]:
        """``solver`` and ``guidance`` (default: the stored ones), refused before any work if they cannot run here."""
        solver, guidance = solver or self.solver, guidance or self.guidance
        solver.check_schedule(self.model.noise_schedule)  # e.g. steps > T
        self.model.guide_for(guidance)  # autoguidance asked of a model without a guide
        return solver, guidance

    def _requests(self, asked: Any, name: str = "labels") -> torch.Tensor | list[str]:
        """Labels (a tensor, or ints) or prompts (strings) checked against what this model reads."""
        if not isinstance(asked, torch.Tensor):
            asked = list(asked)
            if all(isinstance(a, str) for a in asked):
                self.check_prompts(asked)  # every prompt checked before the first batch is sampled
                return asked
            if self.takes_prompts:
                raise ValueError(f"{name}: this checkpoint reads prompts, not class labels ({asked[:3]}...)")
            asked = torch.tensor([int(a) for a in asked], dtype=torch.long)  # (N,)
        if self.model.is_conditional:  # an unconditional model is asked with -1s
            bad = sorted({int(c) for c in asked if not 0 <= int(c) < self.model.num_classes})
            if bad:
                classes = f"0..{self.model.num_classes - 1}"
                raise ValueError(f"{name}: classes {bad} are not among the model's classes {classes}")
        return asked

    def _negative(self, negative: int | str | None, batch: int) -> torch.Tensor | list[str] | None:
        """``negative`` for ``batch`` samples, refused when this model cannot read it (naming what it reads)."""
        if negative is None:
            return None
        if not self.model.is_conditional:
            raise ValueError(f"negative={negative!r}: an unconditional checkpoint has no condition to steer from")
        if isinstance(negative, str) != self.takes_prompts:
            if self.takes_prompts:
                raise ValueError(f"negative_class={negative!r}: this checkpoint reads prompts; use negative_prompt")
            raise ValueError(f"negative_prompt={negative!r}: this checkpoint reads class labels; use negative_class")
        if isinstance(negative, str):
            return [negative] * batch
        return self._requests([negative] * batch, "negative_class")

    def _draw(
        self,
        requests: Any,
        negative: int | str | None,
        solver: Solver | None,
        guidance: ClassifierFreeGuidance | None,
        seed: int,
        batch_size: int,
        progress: Progress,
        sources: torch.Tensor | None = None,
        strength: float = 1.0,
        keep: torch.Tensor | None = None,
        resample_steps: int = 1,
    ) -> torch.Tensor:
        """The one loop over batches behind :meth:`generate` and the edits: one CPU generator for all of them."""
        solver, guidance = self._ready(solver, guidance)
        requests = self._requests(requests)
        if sources is not None and len(sources) != len(requests):
            raise ValueError(f"{len(requests)} targets for {len(sources)} source images: give one per image")
        self._negative(negative, 1)  # refused before the first batch
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        chunks = []
        for start in range(0, len(requests), batch_size):
            batch = requests[start : start + batch_size]  # (b,) labels or b prompts
            source = None
            if sources is not None:
                latents = sources[start : start + batch_size]  # (b, C, h, w)
                source = Source(latents, strength, None if keep is None else keep.to(latents.device), resample_steps)
            options = {"generator": generator, "solver": solver, "guidance": guidance, "progress": progress}
            options.update(negative=self._negative(negative, len(batch)), source=source)
            if self.model.is_conditional:
                images = self.model.sample(batch, **options)
            else:
                images = self.model.sample(None, num_samples=len(batch), **options)
            chunks.append(images.cpu())  # (b, 1, H, W)
        return torch.cat(chunks)

    def to_uint8(self, images: torch.Tensor) -> np.ndarray:
        """(N, 1, H, W) in [-1, 1] -> (N, 28, 28) uint8: the model's padding cropped, as the data were stored."""
        return to_uint8(images, pad=int(self.model.hparams.image_pad))


def _chosen(stored: Any, settings: Mapping[str, Any] | None) -> Any:
    """``stored`` (a solver or a guidance), replaced by a whole config or with some settings changed."""
    if not settings:
        return stored
    if "_target_" in settings:
        return build(dict(settings))
    return stored.replace(**settings)

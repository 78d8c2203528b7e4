"""The one inference path: a trained stage-2 model, loaded safely, turned into images.

``sample.py``, ``evaluate.py``, the end-of-training evaluation and the notebook all generate through
:class:`LatentDiffusionPipeline`, so a seed means the same images everywhere and a checkpoint from
someone else is read the same careful way everywhere (weights only, stored ``_target_``\\ s
checked against the allow-list: :mod:`tinyldm.utils.checkpoints`).

    pipeline = LatentDiffusionPipeline.from_checkpoint("runs/.../diffusion.ckpt", device="cpu")
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
from tinyldm.diffusion import ClassifierFreeGuidance, Solver
from tinyldm.lit.diffusion_module import LatentDiffusionModule
from tinyldm.utils.checkpoints import require_stage, restore_module
from tinyldm.utils.images import to_uint8
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

    def prompt_labels(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N,) the class each prompt names (-1: none or several), after :meth:`check_prompts`."""
        self.check_prompts(prompts)
        return torch.tensor(self.model.denoiser.conditioner.label_of(prompts), dtype=torch.long)

    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor | Sequence[str],
        *,
        solver: Solver | None = None,
        guidance: ClassifierFreeGuidance | None = None,
        seed: int = 0,
        batch_size: int = 250,
        progress: bool = False,
    ) -> torch.Tensor:
        """Images (N, 1, H, W) in [-1, 1] for ``labels`` (N,) (-1s for an unconditional model), or N prompts.

        ``solver`` and ``guidance`` default to the stored ones (:meth:`sampling_for` makes others). One CPU
        generator drives every batch, so ``seed`` fixes the images whatever the device and the same seed
        gives the same images in ``sample.py``, ``evaluate.py`` and training's evaluation.
        """
        solver, guidance = solver or self.solver, guidance or self.guidance
        solver.check_schedule(self.model.noise_schedule)  # e.g. steps > T: refused before any work
        self.model.guide_for(guidance)  # autoguidance asked of a model without a guide: refused before any work
        if not isinstance(labels, torch.Tensor):
            labels = list(labels)
            self.check_prompts(labels)  # every prompt checked before the first batch is sampled
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        chunks = []
        for start in range(0, len(labels), batch_size):
            batch = labels[start : start + batch_size]  # (b,) labels or b prompts
            options = {"generator": generator, "solver": solver, "guidance": guidance, "progress": progress}
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

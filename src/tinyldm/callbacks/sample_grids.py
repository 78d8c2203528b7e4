"""What stage 2 draws while and after it trains: class grids every N steps, then the run's final pictures.

Drawing is not training, so it lives here rather than in the LightningModule: the module only knows how to
sample (``sample_grid``, ``trajectory_strip``); this callback decides when, with which guidance scales, and
where the pictures go (the run's ``images/`` and the loggers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from tinyldm.evaluation.text import prompt_grid
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.utils.images import save_png
from tinyldm.utils.loggers import log_image_grid

log = logging.getLogger(__name__)


class SampleGrids(Callback):
    """Class x sample grids during stage 2 (``diffusion.grid``) and the final ones when it ends.

    Args:
        run_dir: the run directory: grids go to ``run_dir/images/``, the final class grid to ``run_dir/samples.png``.
        every_n_steps: draw at the first validation after every this many optimizer steps (0: never).
        samples_per_class: columns of each grid (one row per class).
        guidance_scales: the scales of the grids drawn during training (empty: the model's own).
        seed: the grids' sampling seed, the same at every draw, so grids of one run compare.
    """

    def __init__(
        self,
        run_dir: str | Path,
        every_n_steps: int = 1000,
        samples_per_class: int = 8,
        guidance_scales: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        self.run_dir, self.images = Path(run_dir), Path(run_dir) / "images"
        self.every_n_steps, self.samples_per_class = int(every_n_steps or 0), int(samples_per_class)
        self.guidance_scales, self.seed = [float(s) for s in guidance_scales or []], int(seed)
        self._next_step = self.every_n_steps

    def on_validation_epoch_end(self, trainer: L.Trainer, module: Any) -> None:
        if trainer.sanity_checking or self.every_n_steps <= 0 or trainer.global_step < self._next_step:
            return
        self._next_step = (trainer.global_step // self.every_n_steps + 1) * self.every_n_steps
        solver = f"{module.solver.name}-{module.solver.steps}"
        for scale in self.guidance_scales or [module.guidance.scale]:
            grid = module.sample_grid(self.samples_per_class, scale, seed=0)
            caption = f"rows: classes 0-{max(module.num_classes - 1, 0)}, guidance {scale:g}, {solver}"
            log_image_grid(trainer, f"ldm/samples/guidance_{scale:g}", grid, self.images, caption)

    def on_fit_end(self, trainer: L.Trainer, module: Any) -> None:
        """The final class grid at the model's own guidance, the denoising trajectory and, for text, the prompts."""
        if not trainer.is_global_zero:
            return
        scale = float(module.guidance.scale)
        path = save_png(module.sample_grid(self.samples_per_class, scale, seed=self.seed), self.run_dir / "samples.png")
        log.info("Final sample grid (rows = classes, guidance %g): %s", scale, path)
        strip = module.trajectory_strip(seed=self.seed)
        caption = "predicted x0 at t = 999, 750, 500, 250, 100, 0 and the final sample"
        log.info(
            "Denoising trajectory strip: %s",
            log_image_grid(trainer, "ldm/samples/trajectory", strip, self.images, caption),
        )
        pipeline = LatentDiffusionPipeline(module)
        if pipeline.takes_prompts:
            grid = prompt_grid(pipeline, seed=self.seed)  # every attribute the run's prompts can say
            caption = "rows: classes; columns: the prompt's attribute word (same noise along a row)"
            path = log_image_grid(trainer, "ldm/samples/prompts", grid, self.images, caption)
            log.info("Prompt grid (rows = classes, columns = attribute words): %s", path)

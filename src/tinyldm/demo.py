"""The interactive demo: generate and edit with a trained model in a web page (``python demo.py ckpt=...``).

Two layers, so the page holds no diffusion logic and everything it does is testable without a browser:

* :class:`Demo` turns what a page sends (strings and numbers, as widgets give them) into calls of
  :class:`~tinyldm.pipeline.LatentDiffusionPipeline` and its images into one enlarged grid, refusing every
  bad value first with the project's own message (:class:`DemoInputError`);
* :func:`build_app` lays it out with Gradio (the ``demo`` extra), which shows such a message in the page
  and keeps serving. The app runs offline: no analytics, no share link, no web fonts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from tinyldm.diffusion import SOLVERS
from tinyldm.masks import NAMED_MASKS, parse_mask
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.utils.images import grid_uint8

#: the sampler choice that keeps the model's own solver (what its run evaluated with)
OWN = "the model's own"
#: the class choice that draws one row per class
EVERY_CLASS = "every class"
NO_NEGATIVE = "none"
EDIT_MODES = {"image-to-image": "img2img", "inpainting": "inpaint"}
ENLARGE = 4  # the page shows each 28x28 image 4x, pixel for pixel (nearest neighbour)

Report = Callable[[int, int], None]


class DemoInputError(ValueError):
    """A value from the page the demo refuses, naming it and what is allowed (shown in the page)."""


@dataclass
class Demo:
    """What the page can ask of a model, each request checked before any sampling.

    Args:
        pipeline: the model to draw from.
        max_images: the most images one request may ask for (a CPU machine serves one request at a time).
    """

    pipeline: LatentDiffusionPipeline
    max_images: int = 64

    # ------------------------------------------------------------------ what the page offers
    @property
    def takes_prompts(self) -> bool:
        return self.pipeline.takes_prompts

    @property
    def class_choices(self) -> list[str]:
        return [EVERY_CLASS, *[str(c) for c in range(self.pipeline.model.num_classes)]]

    @property
    def sampler_choices(self) -> list[str]:
        return [f"{OWN} ({self.pipeline.solver.name})", *SOLVERS]

    @property
    def defaults(self) -> dict[str, Any]:
        """The widgets' starting values: the model's own sampler settings."""
        return {"steps": self.pipeline.solver.steps, "scale": self.pipeline.guidance.scale, "seed": 0, "n": 4}

    def describe(self) -> str:
        model = self.pipeline.model
        condition = (
            "text prompts"
            if self.takes_prompts
            else f"{model.num_classes} classes"
            if model.is_conditional
            else "no condition"
        )
        return (
            f"{type(model.autoencoder).__name__} stage 1, latents {tuple(model.latent_shape)}, {condition}; "
            f"drawing with {self.pipeline.solver!r} and {self.pipeline.guidance!r} unless changed below."
        )

    # ------------------------------------------------------------------ requests
    def generate(
        self,
        condition: str,
        negative: str,
        n: Any,
        scale: Any,
        steps: Any,
        sampler: str,
        seed: Any,
        report: Report | None = None,
    ) -> tuple[np.ndarray, str]:
        """A grid for ``condition`` (a class, every class, or a prompt), ``n`` images each; and a caption."""
        n = _integer(n, "images", 1, self.max_images)
        seed = _integer(seed, "seed", 0, 2**63 - 1)
        requests, rows = self._requests(condition, n)
        solver, guidance = self._sampling(sampler, steps, scale)
        negative = self._negative(negative)
        notes = self._unknown(requests, negative)
        images = self.pipeline.generate(
            requests,
            negative=negative,
            solver=solver,
            guidance=guidance,
            seed=seed,
            batch_size=len(requests),
            progress=report or False,
        )  # (rows * n, 1, H, W)
        caption = f"{rows} row(s) of {n}; {solver!r}, {guidance!r}, seed {seed}" + notes
        return self.grid(images, n), caption

    def edit(
        self,
        drawing: Any,
        mode: str,
        target: str,
        strength: Any,
        mask: str,
        n: Any,
        seed: Any,
        report: Report | None = None,
    ) -> tuple[np.ndarray, str]:
        """``n`` edits of the drawn or uploaded digit toward ``target``: the source first, then the results."""
        if mode not in EDIT_MODES:
            raise DemoInputError(f"mode {mode!r} is not allowed: one of {', '.join(EDIT_MODES)}")
        n = _integer(n, "images", 1, self.max_images)
        seed = _integer(seed, "seed", 0, 2**63 - 1)
        source = digit_from_drawing(drawing)  # (28, 28) uint8
        if target in ("", EVERY_CLASS, None):
            raise DemoInputError("target: choose the class (or type the prompt) the edit should draw")
        requests, _ = self._requests(target, n)
        notes = self._unknown(requests, None)
        sources = np.repeat(source[None], n, axis=0)  # (n, 28, 28)
        options = {"seed": seed, "batch_size": n, "progress": report or False}
        if EDIT_MODES[mode] == "img2img":
            strength = _number(strength, "strength", 0.0, 1.0)
            images = self.pipeline.img2img(sources, requests, strength, **options)
            setting = f"strength {strength:g}"
        else:
            if mask not in NAMED_MASKS:
                raise DemoInputError(f"mask {mask!r} is not allowed: one of {', '.join(NAMED_MASKS)}")
            images = self.pipeline.inpaint(sources, parse_mask(mask), requests, **options)
            setting = f"mask {mask}"
        shown = torch.cat([self.pipeline.from_uint8(source[None]), images])  # (1 + n, 1, H, W)
        return self.grid(shown, n + 1), f"source, then {n} result(s); {mode}, {setting}, seed {seed}" + notes

    def grid(self, images: torch.Tensor, per_row: int) -> np.ndarray:
        """(N, 1, H, W) in [-1, 1] -> the page's grid: :func:`grid_uint8` with each pixel shown ENLARGE x ENLARGE."""
        grid = grid_uint8(images, nrow=per_row, pad=int(self.pipeline.model.hparams.image_pad))  # (H', W', 3)
        return np.kron(grid, np.ones((ENLARGE, ENLARGE, 1), dtype=np.uint8))

    # ------------------------------------------------------------------ checks
    def _requests(self, condition: str, n: int) -> tuple[torch.Tensor | list[str], int]:
        """``n`` requests per row, and the number of rows."""
        if self.takes_prompts:
            prompt = str(condition or "").strip()
            if not prompt:
                raise DemoInputError("prompt: type what to draw, e.g. 'a thick seven slanted left'")
            return [prompt] * n, 1
        if not self.pipeline.model.is_conditional:
            return torch.full((n,), -1, dtype=torch.long), 1
        if condition == EVERY_CLASS:
            return self.pipeline.labels(n), self.pipeline.model.num_classes
        if condition not in self.class_choices:
            raise DemoInputError(f"class {condition!r} is not allowed: one of {', '.join(self.class_choices)}")
        return self.pipeline.labels(n, [int(condition)]), 1

    def _sampling(self, sampler: str, steps: Any, scale: Any) -> tuple[Any, Any]:
        if sampler not in self.sampler_choices:
            raise DemoInputError(f"sampler {sampler!r} is not allowed: one of {', '.join(self.sampler_choices)}")
        steps = _integer(steps, "steps", 1, self.pipeline.model.noise_schedule.num_train_timesteps)
        scale = _number(scale, "guidance scale", 0.0, math.inf)
        settings: dict[str, Any] = {"steps": steps}
        if sampler in SOLVERS:  # another solver, with its own defaults
            settings = {"_target_": f"{SOLVERS[sampler].__module__}.{SOLVERS[sampler].__name__}", "steps": steps}
        return self.pipeline.sampling_for(settings, {"scale": scale})

    def _negative(self, negative: str | None) -> int | str | None:
        if negative in (None, "", NO_NEGATIVE):
            return None
        if self.takes_prompts:
            return str(negative).strip() or None
        if negative not in self.class_choices[1:]:
            allowed = ", ".join([NO_NEGATIVE, *self.class_choices[1:]])
            raise DemoInputError(f"negative class {negative!r} is not allowed: one of {allowed}")
        return int(negative)

    def _unknown(self, requests: Any, negative: Any) -> str:
        """A note naming the words the model never saw (read as UNK), or nothing."""
        if not self.takes_prompts:
            return ""
        words = self.pipeline.unknown_words([*requests[:1], *([negative] if negative else [])])
        return f"; words the model never saw, read as unknown: {', '.join(words)}" if words else ""


def digit_from_drawing(drawing: Any) -> np.ndarray:
    """A drawing or upload -> a (28, 28) uint8 digit, white on black, framed as MNIST frames its digits.

    Sketchpads give dark strokes on a light canvas (or a transparent one); MNIST is light on dark, the
    digit scaled to fit 20x20 and centred by its centre of mass in 28x28 (LeCun et al. 1998). The
    drawing is inverted when its background is light, then framed the same way.
    """
    if isinstance(drawing, dict):  # an editor's value: the flattened image
        drawing = drawing.get("composite")
    if drawing is None:
        raise DemoInputError("image: draw a digit or upload one first")
    array = np.asarray(drawing)
    if array.ndim == 3 and array.shape[2] == 4:  # RGBA: transparent is background
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    gray = np.asarray(Image.fromarray(array.astype(np.uint8)).convert("L"), dtype=np.float32)  # (H, W)
    if np.median(gray) > 127:  # light background: dark strokes
        gray = 255.0 - gray
    ink = gray > 40
    if not ink.any():
        raise DemoInputError("image: no digit found (draw with a visible stroke, or upload a digit image)")
    rows, cols = np.where(ink)
    crop = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = 20.0 / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))  # (w, h)
    small = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(size, Image.LANCZOS), dtype=np.float32)
    ys, xs = np.indices(small.shape)  # (h, w) each
    cy, cx = (ys * small).sum() / small.sum(), (xs * small).sum() / small.sum()  # the centre of mass
    top, left = int(round(14 - cy)), int(round(14 - cx))
    top, left = min(max(top, 0), 28 - small.shape[0]), min(max(left, 0), 28 - small.shape[1])
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[top : top + small.shape[0], left : left + small.shape[1]] = small
    return digit.clip(0, 255).round().astype(np.uint8)


def _integer(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = _number(value, name, low, high)
    except DemoInputError:
        number = math.nan
    if not float(number).is_integer():
        raise DemoInputError(f"{name}={value!r} is not allowed: a whole number from {low} to {high}")
    return int(number)


def _number(value: Any, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or not low <= number <= high:
        top = "" if math.isinf(high) else f" to {high:g}"
        raise DemoInputError(f"{name}={value!r} is not allowed: a number from {low:g}{top}")
    return number


def build_app(demo: Demo, title: str = "tinyldm") -> Any:
    """The Gradio page for ``demo``: a Generate tab and an Edit tab; every error shown in the page."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as error:
        raise ImportError("the demo needs Gradio: pip install 'tinyldm[demo]'") from error

    def shown(task: Callable[..., tuple[np.ndarray, str]]) -> Callable[..., tuple[np.ndarray, str]]:
        """``task`` with its refusals as page errors (the server keeps serving) and its progress in the page."""

        # Gradio hands a request its progress tracker through this default (its documented idiom)
        def run(*values: Any, progress: Any = gr.Progress()) -> tuple[np.ndarray, str]:  # noqa: B008
            try:
                return task(*values, report=lambda done, total: progress((done, total), desc="denoising"))
            except (ValueError, TypeError) as error:  # the project's refusals (DemoInputError among them)
                raise gr.Error(str(error), title="Not drawn", print_exception=False) from None

        return run

    defaults = demo.defaults
    buttons = {"buttons": ["download", "fullscreen"]}  # no share button: nothing leaves the machine
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"# {title}\n{demo.describe()}")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column():
                    condition = _condition_input(gr, demo, "condition")
                    negative = _negative_input(gr, demo)
                    n = gr.Slider(
                        1, min(16, demo.max_images), value=defaults["n"], step=1, label="images per row", elem_id="n"
                    )
                    sampler = gr.Dropdown(demo.sampler_choices, value=demo.sampler_choices[0], label="sampler")
                    steps = gr.Number(defaults["steps"], label="steps", elem_id="steps")
                    scale = gr.Number(defaults["scale"], label="guidance scale", elem_id="scale")
                    seed = gr.Number(defaults["seed"], label="seed", elem_id="seed")
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column():
                    image = gr.Image(
                        label="samples", type="numpy", format="png", interactive=False, elem_id="samples", **buttons
                    )
                    caption = gr.Markdown(elem_id="caption")
            inputs = [condition, negative, n, scale, steps, sampler, seed]
            button.click(shown(demo.generate), inputs, [image, caption], concurrency_limit=1)
        with gr.Tab("Edit"):
            with gr.Row():
                with gr.Column():
                    drawing = gr.Sketchpad(
                        label="pick the brush and draw a digit, or upload one",
                        type="numpy",
                        image_mode="RGBA",
                        sources=("upload",),
                        canvas_size=(280, 280),
                        brush=gr.Brush(default_size=20, colors=["#000000"], color_mode="fixed"),
                        elem_id="drawing",
                    )
                    mode = gr.Radio(list(EDIT_MODES), value="image-to-image", label="edit")
                    target = _condition_input(gr, demo, "target")
                    strength = gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="strength (image-to-image)")
                    mask = gr.Dropdown(list(NAMED_MASKS), value=NAMED_MASKS[0], label="area to redraw (inpainting)")
                    edit_n = gr.Slider(1, min(16, demo.max_images), value=4, step=1, label="results")
                    edit_seed = gr.Number(0, label="seed")
                    edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
                with gr.Column():
                    edited = gr.Image(
                        label="source, then results",
                        type="numpy",
                        format="png",
                        interactive=False,
                        elem_id="edited",
                        **buttons,
                    )
                    edit_caption = gr.Markdown(elem_id="edit-caption")
            edit_inputs = [drawing, mode, target, strength, mask, edit_n, edit_seed]
            edit_button.click(shown(demo.edit), edit_inputs, [edited, edit_caption], concurrency_limit=1)
    return app


def _condition_input(gr: Any, demo: Demo, role: str) -> Any:
    if demo.takes_prompts:
        return gr.Textbox("a thick seven slanted left", label="prompt", elem_id=f"{role}-prompt")
    if not demo.pipeline.model.is_conditional:
        return gr.Dropdown([EVERY_CLASS], value=EVERY_CLASS, label="unconditional model", interactive=False)
    choices: Sequence[str] = demo.class_choices if role == "condition" else demo.class_choices[1:]
    return gr.Dropdown(list(choices), value=choices[0], label="class", elem_id=f"{role}-class")


def _negative_input(gr: Any, demo: Demo) -> Any:
    if demo.takes_prompts:
        return gr.Textbox("", label="negative prompt (steer away from; empty: none)", elem_id="negative")
    if not demo.pipeline.model.is_conditional:
        return gr.Dropdown([NO_NEGATIVE], value=NO_NEGATIVE, label="negative class", interactive=False)
    choices = [NO_NEGATIVE, *demo.class_choices[1:]]
    return gr.Dropdown(choices, value=NO_NEGATIVE, label="negative class (steer away from)", elem_id="negative")


def serve(app: Any, host: str, port: int, block: bool = True) -> Any:
    """Serve ``app`` offline: no share link, no analytics, no server-side rendering, the system's fonts."""
    import gradio as gr

    system = ["ui-sans-serif", "system-ui", "sans-serif"]  # Gradio's own theme fetches Google Fonts
    return app.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        show_error=True,
        ssr_mode=False,
        mcp_server=False,
        prevent_thread_lock=not block,
        theme=gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"]),
        footer_links=[],
    )

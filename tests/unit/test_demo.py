"""The demo's requests: every value from the page checked before sampling, images exactly the pipeline's."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from tests.helpers.modules import diffusion_module
from tinyldm.demo import EVERY_CLASS, Demo, DemoInputError, digit_from_drawing
from tinyldm.pipeline import LatentDiffusionPipeline


@pytest.fixture()
def demo(compose) -> Demo:
    cfg = compose(["model=vqvae", "+experiment=mnist_cond", "debug=smoke", "sampler.steps=2"])
    module = diffusion_module(cfg).eval()
    module.guide_taken_at.fill_(0)  # the main job's autoguidance needs its guide: taken at the start
    return Demo(LatentDiffusionPipeline(module), max_images=8)


@pytest.fixture()
def text_demo(compose) -> Demo:
    cfg = compose(["model=vqvae", "+experiment=mnist_text", "debug=smoke", "sampler.steps=2"])
    return Demo(LatentDiffusionPipeline(diffusion_module(cfg).eval()), max_images=8)


def _request(demo: Demo, **changes):
    values = {"condition": "3", "negative": "none", "n": 2, "scale": 2.0, "steps": 2, "seed": 0}
    values["sampler"] = demo.sampler_choices[0]
    values.update(changes)
    return demo.generate(**values)


def test_a_request_draws_the_pipelines_images(demo):
    grid, caption = _request(demo, condition=EVERY_CLASS, negative="5", n=1, seed=4)
    solver, guidance = demo.pipeline.sampling_for({"steps": 2}, {"scale": 2.0})
    images = demo.pipeline.generate(demo.pipeline.labels(1), negative=5, solver=solver, guidance=guidance, seed=4)
    assert np.array_equal(grid, demo.grid(images, 1))
    assert grid.shape == (4 * (10 * 30 + 2), 4 * 32, 3) and "10 row(s) of 1" in caption and "seed 4" in caption
    # another solver: its own defaults, the steps asked for
    _, caption = _request(demo, sampler="ddim", steps=3)
    assert "DDIMSolver(steps=3" in caption


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n": 0}, "images=0 is not allowed: a whole number from 1 to 8"),
        ({"n": 9}, "images=9 is not allowed: a whole number from 1 to 8"),
        ({"seed": -1}, "seed=-1 is not allowed: a whole number from 0"),
        ({"seed": 1.5}, "seed=1.5 is not allowed: a whole number"),
        ({"steps": 0}, "steps=0 is not allowed: a whole number from 1 to 1000"),
        ({"steps": None}, "steps=None is not allowed"),
        ({"scale": -1}, "guidance scale=-1 is not allowed: a number from 0"),
        ({"scale": float("nan")}, "guidance scale=nan is not allowed"),
        ({"sampler": "euler"}, "sampler 'euler' is not allowed: one of the model's own"),
        ({"condition": "10"}, "class '10' is not allowed: one of every class, 0, 1"),
        ({"negative": "x"}, "negative class 'x' is not allowed: one of none, 0, 1"),
    ],
)
def test_a_bad_value_is_refused_naming_it_and_what_is_allowed(demo, change, message):
    with pytest.raises(DemoInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _request(demo, **change)


def test_a_text_model_refuses_an_empty_or_long_prompt_and_names_words_it_never_saw(text_demo):
    with pytest.raises(DemoInputError, match="prompt: type what to draw"):
        _request(text_demo, condition="  ", negative="")
    with pytest.raises(ValueError, match="more than the limit 12 \\(conditioner.max_length\\)"):
        _request(text_demo, condition=" ".join(["seven"] * 20), negative="")
    grid, caption = _request(text_demo, condition="a thick zebra seven", negative="wobbly")
    assert "never saw, read as unknown: zebra, wobbly" in caption
    solver, guidance = text_demo.pipeline.sampling_for({"steps": 2}, {"scale": 2.0})
    images = text_demo.pipeline.generate(
        ["a thick zebra seven"] * 2, negative="wobbly", solver=solver, guidance=guidance, seed=0
    )
    assert np.array_equal(grid, text_demo.grid(images, 2))


def _stroke(background: int, ink: int, size: int = 280) -> np.ndarray:
    """A drawn 1 off to one side: a vertical bar in the left third of the canvas."""
    drawing = np.full((size, size, 3), background, dtype=np.uint8)
    drawing[60:220, 40:70] = ink
    return drawing


def test_a_drawing_is_framed_as_mnist_frames_its_digits():
    digit = digit_from_drawing(_stroke(255, 0))  # dark on light, as a sketchpad draws
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    rows, cols = np.nonzero(digit > 40)
    assert rows.max() - rows.min() + 1 <= 21 and rows.max() - rows.min() + 1 >= 19  # the long side fits 20
    ys, xs = np.indices(digit.shape)
    weight = digit.astype(float) / digit.sum()
    assert abs((ys * weight).sum() - 14) < 1 and abs((xs * weight).sum() - 14) < 1  # centred by mass
    assert np.array_equal(digit, digit_from_drawing(_stroke(0, 255)))  # light on dark reads the same
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)  # transparent canvas, black strokes
    rgba[60:220, 40:70] = (0, 0, 0, 255)
    assert np.array_equal(digit, digit_from_drawing({"composite": rgba}))
    with pytest.raises(DemoInputError, match="no digit found"):
        digit_from_drawing(np.full((280, 280, 3), 255, dtype=np.uint8))
    with pytest.raises(DemoInputError, match="draw a digit or upload one first"):
        digit_from_drawing({"composite": None})


def test_an_edit_is_the_pipelines_and_refuses_bad_values(demo):
    drawing = _stroke(255, 0)
    grid, caption = demo.edit(drawing, "image-to-image", "7", 0.5, "bottom_half", 2, 1)
    source = digit_from_drawing(drawing)
    sources = np.repeat(source[None], 2, axis=0)
    images = demo.pipeline.img2img(sources, demo.pipeline.labels(2, [7]), 0.5, seed=1, batch_size=2)
    assert np.array_equal(grid, demo.grid(torch.cat([demo.pipeline.from_uint8(source[None]), images]), 3))
    assert caption.startswith("source, then 2 result(s); image-to-image, strength 0.5")
    grid, caption = demo.edit(drawing, "inpainting", "7", 0.5, "top_half", 1, 0)
    assert "mask top_half" in caption and grid.shape == (4 * 32, 4 * (2 * 30 + 2), 3)
    for args, message in [
        ((None, "image-to-image", "7", 0.5, "top_half", 1, 0), "draw a digit or upload one first"),
        ((drawing, "outpainting", "7", 0.5, "top_half", 1, 0), "mode 'outpainting' is not allowed"),
        ((drawing, "image-to-image", "7", 1.5, "top_half", 1, 0), "strength=1.5 is not allowed: a number from 0 to 1"),
        ((drawing, "inpainting", "7", 0.5, "box", 1, 0), "mask 'box' is not allowed: one of bottom_half"),
        ((drawing, "inpainting", EVERY_CLASS, 0.5, "top_half", 1, 0), "target: choose the class"),
    ]:
        with pytest.raises(DemoInputError, match=message):
            demo.edit(*args)


@pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="the demo extra is not installed")
def test_the_page_builds_for_class_and_text_models(demo, text_demo):
    from tinyldm.demo import build_app

    for each in (demo, text_demo):
        app = build_app(each, title="t")
        labels = {getattr(block, "label", None) for block in app.blocks.values()}
        assert {"sampler", "steps", "guidance scale", "seed", "samples"} <= labels
        assert ("prompt" in labels) == each.takes_prompts and ("class" in labels) != each.takes_prompts


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("port=0", "port=0 is not allowed: it must be an integer >= 1"),
        ("port=70000", "port=70000 is not allowed: it must be an integer from 1 to 65535"),
        ("max_images=0", "max_images=0 is not allowed"),
        ("device=tpu", "device='tpu'"),
        ("host=''", "host='' is not allowed"),
    ],
)
def test_demo_py_refuses_a_bad_setting_before_reading_the_model(compose, override, message):
    from tinyldm.tasks import demo as task

    cfg = compose(["ckpt=/no/such/model", override], config_name="demo")
    with pytest.raises(ValueError, match=message):
        task.run(cfg)

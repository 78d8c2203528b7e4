"""The demo in a real browser: scripts/demo_screenshot.py drives ``python demo.py`` in Chromium on the smoke model,
and what the page showed is checked against the pipeline's images for the same settings."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.runs import run_repo_script

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = [name for name in ("gradio", "playwright") if importlib.util.find_spec(name) is None]
MISSING += [] if CHROMIUM else ["chromium (apt-get install chromium)"]
if MISSING and os.environ.get("TINYLDM_REQUIRE_BROWSER") == "1":  # .ci/run: the browser test must run
    raise RuntimeError(f"TINYLDM_REQUIRE_BROWSER=1, but the browser test lacks {', '.join(MISSING)}")

pytestmark = [pytest.mark.browser, pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}")]


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_the_page_draws_the_pipelines_images_refuses_a_bad_value_and_edits_a_drawing(smoke_main_job, tmp_path):
    from tinyldm.demo import ENLARGE, Demo
    from tinyldm.pipeline import LatentDiffusionPipeline

    out = tmp_path / "shots"
    result = run_repo_script("scripts/demo_screenshot.py", str(smoke_main_job["ckpt"]), str(out), timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    demo = Demo(LatentDiffusionPipeline.load(smoke_main_job["ckpt"]))
    own = demo.sampler_choices[0]
    scale = demo.defaults["scale"]
    for step, file in (("generate", "generated.png"), ("again", "generated_again.png")):
        asked = report[step]
        expected, caption = demo.generate(asked["class"], "none", asked["n"], scale, asked["steps"], own, asked["seed"])
        assert np.array_equal(_png(out / file), expected), step  # pixel for pixel: PNG, no resampling
        assert asked["caption"] == caption
    assert not np.array_equal(_png(out / "generated.png"), _png(out / "generated_again.png"))
    assert "steps=0 is not allowed: a whole number from 1 to 1000" in report["error"]
    # the edit: the drawn 7 as the page framed it (the grid's first tile), redrawn by the pipeline
    edited = _png(out / "edited.png")
    first = slice(2 * ENLARGE, (2 + 28) * ENLARGE, ENLARGE)  # the grid's 2-pixel border, then 28 pixels
    source = np.ascontiguousarray(edited[first, first, 0])  # (28, 28) uint8
    assert source.max() == 255 and source.mean() < 80  # a white stroke on black, as MNIST draws digits
    asked = report["edit"]
    images = demo.pipeline.img2img(
        np.repeat(source[None], asked["n"], axis=0),
        demo.pipeline.labels(asked["n"], [asked["class"]]),
        asked["strength"],
        seed=asked["seed"],
        batch_size=asked["n"],
    )
    expected = demo.grid(torch.cat([demo.pipeline.from_uint8(source[None]), images]), asked["n"] + 1)
    assert np.array_equal(edited, expected)
    for name in ("demo_generate.png", "demo_error.png", "demo_edit.png"):
        assert Image.open(out / name).size[0] == 1280, name  # the screenshots the docs show

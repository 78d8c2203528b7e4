"""Editing with a trained model: image-to-image, inpainting, interpolation and negative conditions, in the pipeline
and through edit.py, on the main job's checkpoint in its smoke form (SDE solver, APG, autoguidance)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.runs import run_script

HELD_OUT = ["dataset=mnist", "dataset.source=bundled", "dataset.max_train_samples=256"]


@pytest.fixture(scope="module")
def main_job(smoke_main_job) -> dict[str, Path]:
    return smoke_main_job


@pytest.fixture(scope="module")
def pipeline(main_job):
    from tinyldm.pipeline import LatentDiffusionPipeline

    return LatentDiffusionPipeline.from_checkpoint(main_job["ckpt"])


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, torch.Tensor]:
    """Six real held-out digits and their labels."""
    from tinyldm.data import DigitsDataModule
    from tinyldm.utils.images import to_uint8

    datamodule = DigitsDataModule(name="mnist", source="bundled", seed=0)
    datamodule.setup("fit")
    images, labels = datamodule.val_dataset.tensors
    return to_uint8(images[:6], datamodule.pad), labels[:6].clone()


def test_strength_zero_is_the_reconstruction_and_one_is_plain_sampling(pipeline, digits):
    images, labels = digits
    reconstruction = pipeline.model.decode_latents(pipeline.encode(images)).cpu()  # (6, 1, 32, 32)
    assert torch.equal(pipeline.img2img(images, labels, 0.0, seed=3), reconstruction)
    targets = (labels + 1) % 10
    assert torch.equal(pipeline.img2img(images, targets, 1.0, seed=3), pipeline.generate(targets, seed=3))
    halfway = pipeline.img2img(images, targets, 0.5, seed=3)
    assert torch.equal(halfway, pipeline.img2img(images, targets, 0.5, seed=3))  # seeded
    assert not torch.equal(halfway, pipeline.img2img(images, targets, 0.5, seed=4))
    # between the two: closer to the source than fresh samples are
    source = pipeline.from_uint8(images)
    assert (halfway - source).abs().mean() < (pipeline.generate(targets, seed=3) - source).abs().mean()


def test_inpainting_keeps_what_the_mask_keeps(pipeline, digits):
    from tinyldm.diffusion.editing import Source

    images, labels = digits
    latents = pipeline.encode(images)  # (6, C, h, w)
    model = pipeline.model.conditioned(labels, len(labels), pipeline.guidance)
    everything = Source(latents, keep=torch.ones(1, 1, *latents.shape[-2:]), resample_steps=2)
    kept = pipeline.model.sample_latents(
        model, pipeline.solver, pipeline.guidance, torch.Generator().manual_seed(0), source=everything
    )
    assert torch.equal(kept, latents)  # before decoding, exactly the source
    mask = np.zeros((28, 28), dtype=bool)
    mask[14:] = True  # the bottom half is drawn anew
    filled = pipeline.inpaint(images, mask, labels, seed=0)
    again = pipeline.inpaint(images, mask, labels, seed=0, resample_steps=2)
    assert filled.shape == (6, 1, 32, 32) and not torch.equal(filled, again)
    top = pipeline.from_uint8(images)[..., 2:14, :]  # the kept half (inside the padding)
    drawn = pipeline.generate(labels, seed=0)[..., 2:14, :]
    assert (filled[..., 2:14, :] - top).abs().mean() < (drawn - top).abs().mean()


def test_interpolation_ends_are_the_plain_samples_of_each_condition(pipeline):
    strip = pipeline.interpolate(3, 8, 4, seed=5)  # (4, 1, 32, 32)
    assert torch.equal(strip[0], pipeline.generate(torch.full((4,), 3), seed=5)[0])
    assert torch.equal(strip[-1], pipeline.generate(torch.full((4,), 8), seed=5)[-1])
    assert not torch.equal(strip[1], strip[0]) and not torch.equal(strip[2], strip[-1])
    moving = pipeline.interpolate(3, 3, 4, seed=5, end_seed=6)  # one condition, the noise moves
    assert torch.equal(moving[0], pipeline.generate(torch.full((4,), 3), seed=5)[0])


def test_a_negative_class_is_what_guidance_steers_from(pipeline):
    """Compared before decoding: the VQ decoder snaps small latent differences to the same codes."""
    labels, guidance = torch.arange(10), pipeline.guidance

    def latents(negative):
        model = pipeline.model.conditioned(labels, 10, guidance, negative)
        return pipeline.model.sample_latents(model, pipeline.solver, guidance, torch.Generator().manual_seed(0))

    plain, steered = latents(None), latents(torch.full((10,), 7))
    assert not torch.equal(plain, steered)
    assert torch.equal(steered, latents(torch.full((10,), 7)))


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda p, x, y: p.img2img(x, y, 1.5), r"strength must be a number in \[0, 1\]"),
        (lambda p, x, y: p.img2img(x.astype(np.float32), y, 0.5), r"images must be uint8 \(N, 28, 28\)"),
        (lambda p, x, y: p.img2img(x[:, :20], y, 0.5), r"images must be \(N, 28, 28\)"),
        (lambda p, x, y: p.img2img(x, y + 20, 0.5), r"classes \[2.*\] are not among the model's classes"),
        (lambda p, x, y: p.img2img(x, y[:2], 0.5), r"2 targets for 6 source images"),
        (lambda p, x, y: p.inpaint(x, np.zeros((28, 28), bool), y), r"some but not all pixels"),
        (lambda p, x, y: p.inpaint(x, np.ones((14, 14), bool), y), r"mask must be \(28, 28\)"),
        (lambda p, x, y: p.generate(y, negative="a thin seven"), r"negative_prompt='a thin seven': .*negative_class"),
        (lambda p, x, y: p.generate(y, negative=12), r"negative_class: classes \[12\]"),
        (lambda p, x, y: p.interpolate(3, "a seven", 4), r"prompts given, but this checkpoint is not text"),
        (lambda p, x, y: p.interpolate(3, 8, 1), r"n=1 must be an integer >= 2"),
    ],
)
def test_bad_edits_are_refused_before_any_work(pipeline, digits, monkeypatch, call, message):
    from tinyldm.lit.diffusion_module import LatentDiffusionModule

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before the request was checked")

    monkeypatch.setattr(LatentDiffusionModule, "sample_latents", no_sampling)
    images, labels = digits
    with pytest.raises(ValueError, match=message):
        call(pipeline, images, labels)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("middle", r"mask='middle' is not one of bottom_half"),
        ("box:0,0,40,10", r"0 <= x0 < x1 <= 28"),
        ("box:1,2,3", r"four whole numbers"),
        ("box:0,0,28,28", r"draws everything"),
        ("missing.png", r"no such file"),
    ],
)
def test_masks_are_refused_naming_what_is_allowed(spec, message):
    from tinyldm.masks import parse_mask

    with pytest.raises((ValueError, FileNotFoundError), match=message):
        parse_mask(spec)


def test_a_mask_maps_to_the_latent_cells_it_touches():
    from tinyldm.masks import latent_keep, parse_mask

    keep = latent_keep(parse_mask("bottom_half"), pad=2, latent_size=8)  # rows 14..27 of 28 -> padded 16..29
    assert keep.shape == (1, 1, 8, 8)
    assert keep[0, 0, :4].eq(1).all() and keep[0, 0, 4:].eq(0).all()  # cell rows 4..7 hold padded rows 16..31
    box = latent_keep(parse_mask("box:0,0,1,1"), pad=2, latent_size=8)  # one pixel: one cell drawn
    assert int((box == 0).sum()) == 1


def test_edit_py_writes_each_mode_and_never_overwrites(main_job, tmp_path, compose):
    from tinyldm.tasks import edit

    common = [f"ckpt={main_job['ckpt']}", "progress=false", *HELD_OUT, f"paths.cache_dir={main_job['tmp']}/cache"]
    runs = {
        "img2img": ["mode=img2img", "source=heldout", "n=4", "strength=0.5", "target_class=3"],
        "inpaint": ["mode=inpaint", "source=heldout", "n=4", "mask='box:4,4,20,20'", "negative_class=9"],
        "interpolate": ["mode=interpolate", "from_class=1", "to_class=7", "n=5"],
    }
    for mode, overrides in runs.items():
        out = tmp_path / f"{mode}.npz"
        edit.run(compose([*common, *overrides, f"out={out}"], config_name="edit"))
        with np.load(out) as data:
            metadata = json.loads(str(data["metadata"]))
            assert data["images"].dtype == np.uint8 and data["images"].shape[1:] == (28, 28)
            assert metadata["edit"]["mode"] == mode and metadata["sampler"]["_target_"].endswith("DPMSolver2MSDE")
            assert ("sources" in data.files) == (mode != "interpolate")
        assert out.with_suffix(".png").is_file()
    with np.load(tmp_path / "img2img.npz") as data:
        assert data["labels"].tolist() == [3, 3, 3, 3] and data["sources"].shape == (4, 28, 28)
    with pytest.raises(FileExistsError, match="overwrite=true"):
        edit.run(compose([*common, *runs["img2img"], f"out={tmp_path / 'img2img.npz'}"], config_name="edit"))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["mode=sketch"], r"mode='sketch' is not one of \['img2img', 'inpaint', 'interpolate'\]"),
        (["mode=img2img"], r"mode=img2img needs source="),
        (["mode=img2img", "source=heldout", "strength=-0.1"], r"strength must be a number in \[0, 1\]"),
        (["mode=inpaint", "source=heldout", "mask=sideways"], r"mask='sideways' is not one of"),
        (["mode=interpolate", "from_class=1"], r"mode=interpolate needs from_class= and to_class="),
        (["mode=interpolate", "from_class=1", "to_prompt=seven"], r"needs from_class= and to_class="),
        (["mode=img2img", "source=heldout", "negative_class=1", "negative_prompt=x"], r"not both"),
        (["mode=img2img", "source=heldout", "target_prompt=a seven"], r"target_prompt= needs a text checkpoint"),
        (["mode=img2img", "source=nowhere.png"], r"no such .npz or PNG file"),
    ],
)
def test_edit_py_refuses_bad_requests_naming_them(main_job, tmp_path, compose, overrides, message):
    from tinyldm.tasks import edit

    cfg = compose([f"ckpt={main_job['ckpt']}", *HELD_OUT, f"out={tmp_path}/x.npz", *overrides], config_name="edit")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        edit.run(cfg)
    assert not list(tmp_path.glob("x.*"))


def test_edit_py_reads_png_sources(main_job, tmp_path):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((28, 28), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "edited.npz"
    run_script(
        "edit.py",
        [f"ckpt={main_job['ckpt']}", "mode=img2img", f"source={folder}", "target_class=5", f"out={out}"],
        tmp_path / "run",
    )
    with np.load(out) as data:
        assert data["labels"].tolist() == [5, 5] and data["sources"][1].max() == 40


def test_the_measurement_script_writes_every_table(main_job, tmp_path):
    """scripts/edit_curves.py on the smoke checkpoint: every mode's CSV, grid and the img2img curve."""
    from tests.helpers.runs import run_repo_script

    out = tmp_path / "curves"
    common = ["--set", *HELD_OUT, f"paths.cache_dir={main_job['tmp']}/cache"]
    result = run_repo_script(
        "scripts/edit_curves.py",
        str(main_job["ckpt"]),
        str(out),
        "--per-class",
        "1",
        "--strengths",
        "0",
        "1",
        *common,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("img2img.csv", "img2img.png", "inpaint.csv", "interpolate.csv", "negative.csv", "tables.md"):
        assert (out / name).is_file(), name
    assert {p.name for p in out.glob("grid_*.png")} == {
        f"grid_{m}.png" for m in ("img2img", "inpaint", "interpolate", "negative")
    }
    rows = (out / "img2img.csv").read_text().splitlines()
    assert rows[0].startswith("strength,target_acc,source_acc,ssim_to_source") and len(rows) == 3
    refused = run_repo_script("scripts/edit_curves.py", str(main_job["ckpt"]), str(out), timeout=60)
    assert refused.returncode != 0  # the output folder exists: never written over

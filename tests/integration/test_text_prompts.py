"""`+experiment=mnist_text` end to end: train (smoke), sample from prompts, score prompts, refuse bad ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers.runs import path_overrides, read_metrics, run_script, sample_in_process


def _sample(compose, ckpt, out, **overrides):
    return sample_in_process(compose, ckpt, out, steps=3, **overrides)


def test_mnist_text_trains_then_draws_and_scores_prompts(tmp_path, compose):
    run_dir = tmp_path / "run"
    overrides = ["model=ae", "+experiment=mnist_text", "debug=smoke", "sampler.steps=3", "logger=none"]
    run_script("train.py", [*overrides, *path_overrides(tmp_path)], run_dir)
    metrics = read_metrics(run_dir)
    for family in ("held_out_phrasings", "held_out_combinations", "seen"):
        assert 0.0 <= metrics[f"eval/text/{family}/class_acc"] <= 1.0
        assert 0.0 <= metrics[f"eval/text/{family}/attribute_acc"] <= 1.0
    assert metrics["eval/text/held_out_combinations/num_samples"] == 5 * 2  # 5 held-out pairs x 2
    assert 0.0 <= metrics["eval/text/paired/thickness"] <= 1.0 and metrics["eval/text/paired/slant_pairs"] == 20
    assert list((run_dir / "images").glob("ldm_samples_prompts_*.png"))  # the captioned class x word grid
    ckpt = run_dir / "checkpoints" / "diffusion.ckpt"

    # one prompt, n images; the same seed gives the same images; the npz keeps the prompts without pickle
    prompt = "a thick seven slanted left"
    _sample(compose, ckpt, tmp_path / "a.npz", prompt=f"'{prompt}'", n=3, seed=0)
    _sample(compose, ckpt, tmp_path / "b.npz", prompt=f"'{prompt}'", n=3, seed=0)
    a, b = (np.load(tmp_path / f"{name}.npz", allow_pickle=False) for name in "ab")
    assert np.array_equal(a["images"], b["images"]) and a["images"].shape == (3, 28, 28)
    assert a["prompts"].dtype.kind == "U" and a["prompts"].tolist() == [prompt] * 3
    assert a["labels"].tolist() == [7, 7, 7]
    assert json.loads(str(a["metadata"]))["prompts_asked"] == [prompt]
    assert (tmp_path / "a.png").is_file()

    # a prompts file: one per line, blank lines skipped; a prompt naming no class is labelled -1
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("digit 3, thin\n\nthick and slanted right\n", encoding="utf-8")
    _sample(compose, ckpt, tmp_path / "c.npz", prompts=str(prompts), n=2)
    c = np.load(tmp_path / "c.npz", allow_pickle=False)
    assert c["labels"].tolist() == [3, 3, -1, -1]
    assert c["prompts"].tolist() == ["digit 3, thin"] * 2 + ["thick and slanted right"] * 2

    # refused before any sampling, naming the limit
    with pytest.raises(ValueError, match="max_length"):
        _sample(compose, ckpt, tmp_path / "d.npz", prompt="'" + "a thick " * 10 + "7'", n=1)
    assert not (tmp_path / "d.npz").exists()
    with pytest.raises(ValueError, match="not both"):
        _sample(compose, ckpt, tmp_path / "e.npz", prompt="'a 7'", prompts=str(prompts))

    # negative prompts: the empty one is plain classifier-free guidance; another one changes the samples;
    # a negative class is refused (this checkpoint reads prompts), as is a class target for an edit
    from tinyldm.pipeline import LatentDiffusionPipeline

    pipeline = LatentDiffusionPipeline.from_checkpoint(ckpt)
    asked = ["a thick seven", "a thin three"]
    plain = pipeline.generate(asked, seed=1)
    assert torch.equal(pipeline.generate(asked, negative="", seed=1), plain)
    assert not torch.equal(pipeline.generate(asked, negative="thick", seed=1), plain)
    with pytest.raises(ValueError, match="negative_class=3: this checkpoint reads prompts; use negative_prompt"):
        pipeline.generate(asked, negative=3)
    _sample(compose, ckpt, tmp_path / "f.npz", prompt="'a seven'", n=2, negative_prompt="thick")
    assert json.loads(str(np.load(tmp_path / "f.npz")["metadata"]))["negative"] == "thick"
    images = pipeline.to_uint8(plain)
    edited = pipeline.img2img(images, ["a thin seven", "a thick three"], 0.5, seed=0)
    strip = pipeline.interpolate("a thick seven", "a thin seven", 3, seed=2)
    assert torch.equal(strip[0], pipeline.generate(["a thick seven"] * 3, seed=2)[0])
    assert torch.equal(strip[-1], pipeline.generate(["a thin seven"] * 3, seed=2)[-1])
    assert edited.shape == (2, 1, 32, 32)

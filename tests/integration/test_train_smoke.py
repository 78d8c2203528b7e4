"""End-to-end runs of the real entry point (`python train.py ...`) on the smoke config."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.runs import path_overrides, read_metrics, run_script


@pytest.mark.parametrize("model", ["ae", "vae", "vqvae"])
def test_stage1_smoke_run_leaves_checkpoint_and_metrics(compose, tmp_path, model):
    """In-process (the script is a three-line wrapper; the main-job test below runs it for real)."""
    from tinyldm.tasks import train

    run_dir = tmp_path / "run"  # the compose fixture's paths.output_dir
    train.run(compose(["stage=autoencoder", f"model={model}", "debug=smoke", "logger=csv"]))
    metrics = read_metrics(run_dir)
    assert (run_dir / "checkpoints" / "autoencoder.ckpt").is_file()
    assert metrics["stage"] == "autoencoder" and metrics["model"] == model
    assert metrics["ae/val/psnr"] > 0 and metrics["ae/scale_factor"] > 0
    assert metrics["dataset_source"].startswith("bundled")
    assert (run_dir / "resolved_config.yaml").is_file()
    assert list((run_dir / "images").glob("ae_val_reconstructions_*.png"))
    if model == "vqvae":
        assert 0 < metrics["ae/val/codebook_usage"] <= 1 and metrics["ae/val/perplexity"] >= 1


def test_main_job_form_runs_both_stages_then_reuses_stage1(tmp_path, compose, caplog):
    cache = tmp_path / "cache"  # the compose fixture's paths.cache_dir too
    # sampler.steps: +experiment is applied after debug=smoke, so it would restore its 20 steps
    overrides = [
        "model=vqvae",
        "+experiment=mnist_cond",
        "debug=smoke",
        "sampler.steps=5",
        *path_overrides(tmp_path, cache),
    ]
    first = tmp_path / "first"
    result = run_script("train.py", overrides, first)
    metrics = read_metrics(first)
    # Lightning logs "`weights_only` was not set" when a stage file is written without saying what it holds
    assert "weights_only" not in result.stdout + result.stderr
    assert (first / "checkpoints" / "autoencoder.ckpt").is_file()
    assert (first / "checkpoints" / "diffusion.ckpt").is_file()
    assert (first / "samples.png").is_file()
    assert list((first / "images").glob("ldm_samples_guidance_3_*.png"))  # the main job guides at s = 3
    assert metrics["autoencoder_reused"] is False
    assert metrics["dataset"] == "mnist" and metrics["dataset_source"].startswith("bundled")
    assert metrics["ldm/val/loss"] > 0
    assert metrics["eval/autoguidance_scale"] == 3  # the main job samples with autoguidance
    assert metrics["eval/guidance_method"] == "apg"  # and adaptive projected guidance
    assert metrics["eval/guidance_scale"] == 3.0 and metrics["eval/sampler_kind"] == "dpmpp_2m_sde"  # SDE solver
    assert metrics["eval/timestep_spacing"] == "trailing" and metrics["eval/logsnr_range"] is None  # DPM++'s own grid
    assert metrics["eval/noise_interval"] is None  # the SDE's noise on every step

    second = tmp_path / "second"  # in-process: the same task the script runs, without a second interpreter start
    from tinyldm.tasks import train

    with caplog.at_level("INFO", logger="tinyldm.training.stage1"):
        again = train.run(
            compose(
                [
                    "model=vqvae",
                    "+experiment=mnist_cond",
                    "debug=smoke",
                    "sampler.steps=5",
                    "evaluation.enabled=false",
                    f"paths.output_dir={second}",
                ]
            )
        )
    assert again["autoencoder_reused"] is True
    assert "Reusing the cached stage-1 checkpoint" in caplog.text
    assert not (second / "checkpoints" / "autoencoder.ckpt").exists()
    # stage 2 starts from the seed's random state however stage 1 came about: the re-run trains the same weights
    trained, retrained = (
        torch.load(run / "checkpoints" / "diffusion.ckpt", weights_only=True)["state_dict"] for run in (first, second)
    )
    assert trained.keys() == retrained.keys()
    assert all(torch.equal(trained[key], retrained[key]) for key in trained)

    # the stage-2 checkpoint is self-contained and samples identically for a fixed seed
    from tinyldm.pipeline import LatentDiffusionPipeline

    model = LatentDiffusionPipeline.from_checkpoint(first / "checkpoints" / "diffusion.ckpt").model
    assert model.guide_ready and 0 < int(model.guide_taken_at) < int(metrics["ldm/steps"])  # its guide came along
    labels = torch.tensor([0, 3, 7])
    a = model.sample(labels, generator=torch.Generator().manual_seed(0))
    b = model.sample(labels, generator=torch.Generator().manual_seed(0))
    c = model.sample(labels, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 1, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_multirun_with_default_paths_reuses_stage1_and_writes_summary(tmp_path):
    """The documented sweep form, launched from a fresh directory with no path overrides.

    Every path derives from the launch directory, so this also checks that the sweeper can resolve
    ``hydra.sweep.dir`` before any job exists.
    """
    import csv
    import subprocess
    import sys

    from tests.helpers.runs import REPO, subprocess_env

    command = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "model=ae,vae",
        "unet.transformer_depth=0,1",
        "+experiment=mnist_cond",
        "debug=smoke",
        "sampler.steps=5",
        "evaluation.enabled=false",
        "diffusion.grid.every_n_steps=0",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]

    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    with (sweep_dir / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["override:model"], r["override:unet.transformer_depth"]) for r in rows] == [
        ("ae", "0"),
        ("ae", "1"),
        ("vae", "0"),
        ("vae", "1"),
    ]
    assert all(r["status"] == "ok" and float(r["ldm/val/loss"]) > 0 for r in rows)
    # each autoencoder type is trained once; the second depth reuses it from the shared cache
    assert [r["autoencoder_reused"] for r in rows] == ["False", "True", "False", "True"]
    assert len([p for p in (tmp_path / ".cache" / "tinyldm" / "autoencoders").iterdir() if p.is_dir()]) == 2
    for job in range(4):
        assert (sweep_dir / str(job) / "checkpoints" / "diffusion.ckpt").is_file()


def test_a_run_builds_its_stage1_model_once_and_hands_it_to_stage2(compose, tmp_path, monkeypatch):
    """Trained here, or read from ``autoencoder_ckpt``: one stage-1 build per run (stage 2 gets it in memory)."""
    from tinyldm.autoencoders import ConvAutoencoder
    from tinyldm.tasks import train

    builds = []
    build_once = ConvAutoencoder.__init__

    def counted(self, *args, **kwargs):
        builds.append(type(self).__name__)
        build_once(self, *args, **kwargs)

    monkeypatch.setattr(ConvAutoencoder, "__init__", counted)
    smoke = ["model=ae", "debug=smoke", "logger=none", "evaluation.enabled=false", "diffusion.max_epochs=1"]
    first = train.run(compose([*smoke, f"paths.output_dir={tmp_path}/first"]))
    assert builds == ["ConvAutoencoder"] and first["autoencoder_reused"] is False

    builds.clear()
    train.run(
        compose(
            [
                *smoke,
                "stage=diffusion",
                f"autoencoder_ckpt={first['autoencoder_ckpt']}",
                f"paths.output_dir={tmp_path}/second",
            ]
        )
    )
    assert builds == ["ConvAutoencoder"]

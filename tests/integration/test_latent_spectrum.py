"""scripts/latent_spectrum.py: the share of a stage-1 latent's DCT power in each radial frequency band."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from tests.helpers.runs import load_script, run_repo_script
from tests.unit.test_autoencoders import OPTIMIZER, ae_config, fit
from tinyldm.data import DigitsDataModule
from tinyldm.lit.autoencoder_module import AutoencoderModule


def _script():
    return load_script("scripts/latent_spectrum.py")


def test_band_shares_put_fine_and_coarse_patterns_at_the_two_ends():
    band_shares = _script().band_shares
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")

    def basis(k: int, m: int) -> np.ndarray:  # the DCT-II basis function (k, m) on an 8x8 grid: (1, 1, 8, 8)
        return (np.cos(np.pi * k * (i + 0.5) / 8) * np.cos(np.pi * m * (j + 0.5) / 8))[None, None]

    fine, coarse = band_shares(basis(7, 7)), band_shares(basis(0, 1) + 5.0)  # the finest; the coarsest, plus DC
    assert fine.sum() == pytest.approx(1.0) and coarse.sum() == pytest.approx(1.0)
    assert fine[-1] == pytest.approx(1.0)  # all power in the top band
    assert coarse[0] == pytest.approx(1.0)  # the DC term (5.0) is left out, the rest is the lowest band


def test_script_tabulates_images_and_a_latent(tmp_path):
    dm = DigitsDataModule(name="mnist_5k", source="bundled", seed=0)
    dm.setup()
    torch.manual_seed(0)
    module = AutoencoderModule(autoencoder=ae_config("vqvae"), optimizer=OPTIMIZER)  # f = 4: 8x8 latents
    trainer = fit(module, dm.train_dataset.tensors[0][:32], max_steps=2)
    checkpoint = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(checkpoint)

    result = run_repo_script("scripts/latent_spectrum.py", f"tiny={checkpoint}", timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"images (32, 32)", "images pooled to (8, 8)", "latent: tiny"}
    shares = [float(v) for v in re.findall(r"([\d.]+) %", rows["latent: tiny"])]
    assert len(shares) == 5 and sum(shares[:4]) == pytest.approx(100.0, abs=0.3)
    assert shares[4] == pytest.approx(shares[2] + shares[3], abs=0.15)  # "high" = bands 3 and 4

    refused = run_repo_script("scripts/latent_spectrum.py", f"x={tmp_path / 'missing.ckpt'}", timeout=60)
    assert refused.returncode == 2 and "expected LABEL=PATH to an existing autoencoder checkpoint" in refused.stderr

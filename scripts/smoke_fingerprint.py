"""Fingerprint a fixed-seed ``debug=smoke`` run: SHA-256 of its weights and of its samples.

A refactor that should change no numbers is checked by running this before and after it and
comparing the two JSON files (``diff``): the trained weights of both stages and the samples of every
sampler must hash the same. ``--ckpt`` also samples an existing stage-2 checkpoint (e.g. one written
before the refactor) with the current code.

    python scripts/smoke_fingerprint.py OUT_DIR [--ckpt PATH]    # writes OUT_DIR/fingerprint.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN = [
    "+experiment=mnist_cond",
    "debug=smoke",
    "logger=none",
    "evaluation.enabled=false",
    "seed=0",
    "reuse_autoencoder=false",
]
#: sample.py overrides per fingerprinted setting: the stored solver and guidance, each solver, and their options
SAMPLERS = {
    "stored": [],
    "stored_changed": ["sampler.steps=7", "guidance.scale=2.5"],
    "ddpm": ["sampler=ddpm", "sampler.steps=10", "guidance=cfg", "guidance.scale=3"],
    "ddim": ["sampler=ddim", "sampler.steps=10", "sampler.eta=0.5", "guidance=cfg", "guidance.scale=3"],
    "dpmpp_2m": ["sampler=dpmpp_2m", "sampler.steps=10", "guidance=cfg"],
    "dpmpp_2m_logsnr": [
        "sampler=dpmpp_2m",
        "sampler.steps=10",
        "sampler.timestep_spacing=logsnr",
        "sampler.logsnr_range=[-3,3]",
        "guidance=cfg",
    ],
    "dpmpp_2m_sde": ["sampler=dpmpp_2m_sde", "sampler.steps=10", "sampler.noise_interval=[300,999]", "guidance=cfg"],
    "cfg_interval": [
        "sampler=dpmpp_2m",
        "sampler.steps=10",
        "guidance=cfg",
        "guidance.interval=[200,800]",
        "guidance.autoguidance=2",
    ],
}


def run(script: str, overrides: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    subprocess.run([sys.executable, str(REPO / script), *overrides], cwd=REPO, check=True, env=env)


def weights_digest(path: Path) -> str:
    """SHA-256 over a checkpoint's state dict, tensor by tensor in key order."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def sample_digests(ckpt: Path, out: Path) -> dict[str, str]:
    digests = {}
    out.mkdir(parents=True, exist_ok=True)
    for name, overrides in SAMPLERS.items():
        npz = out / f"{name}.npz"
        run(
            "sample.py",
            [
                f"ckpt={ckpt}",
                "n_per_class=2",
                "seed=0",
                f"out={npz}",
                "progress=false",
                "device=cpu",
                f"hydra.run.dir={out}/hydra-{name}",
                *overrides,
            ],
        )
        with np.load(npz, allow_pickle=False) as data:
            digests[name] = hashlib.sha256(data["images"].tobytes() + data["labels"].tobytes()).hexdigest()
    return digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--ckpt", type=Path, help="also sample this existing stage-2 checkpoint")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=False)
    run_dir = out / "run"
    run("train.py", [*TRAIN, f"hydra.run.dir={run_dir}", f"paths.log_dir={out}/logs", f"paths.cache_dir={out}/cache"])
    result = {
        "autoencoder_weights": weights_digest(run_dir / "checkpoints" / "autoencoder.ckpt"),
        "diffusion_weights": weights_digest(run_dir / "checkpoints" / "diffusion.ckpt"),
        "samples": sample_digests(run_dir / "checkpoints" / "diffusion.ckpt", out / "samples"),
    }
    if args.ckpt:
        result["samples_of_given_ckpt"] = sample_digests(args.ckpt.resolve(), out / "given")
    (out / "fingerprint.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

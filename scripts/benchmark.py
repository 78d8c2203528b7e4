"""Stage-2 benchmark: latent vs pixel-space throughput at equal UNet config, and sampling speed.

    python scripts/benchmark.py [--models ae vae vqvae identity] [--unet small] [--json out.json]
    python scripts/benchmark.py --loop [--loop-epochs 24]     # the whole stage-2 loop, A/B of its settings

``--loop`` runs the real stage-2 task (``train.py stage=diffusion``, Lightning loop, validation,
grids) of the main job on the same cached latents under several loop settings, one after the
other in this process, and reports training images per second of wall time (validation and
grids included): the 0.1 loop (validation every epoch on the whole split, grids every 12 epochs)
against the step-budgeted loop and its options. Every variant sees the same number of images.

For each stage-1 model the real ``LatentDiffusionModule`` is built from the composed configs
(weights are untrained: speed does not depend on them) and timed on:
* training: forward + backward + AdamW step of the UNet on a batch of (cached) latents;
* sampling: DDPM-1000, DDIM-50 and DDIM-20 with classifier-free guidance, including the decode.
Figures are medians over repeats, measured in this one process, so ratios are comparable.
Pixel-space DDPM-1000 is extrapolated from a shorter run (the table says so).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tinyldm.lit.diffusion_module import LatentDiffusionModule
from tinyldm.training.stage2 import module_from_config
from tinyldm.utils.instantiate import build

REPO = Path(__file__).resolve().parents[1]


def compose_train(overrides: list[str]):
    """The composed ``train`` config with ``overrides`` (the benchmark scripts build modules from it, write nothing)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["paths.root_dir=.", "paths.output_dir=.", *overrides])


def build_module(model: str, unet: str, device: torch.device) -> LatentDiffusionModule:
    cfg = compose_train([f"model={model}", f"unet={unet}"])
    latent_shape = build(cfg.model.net).latent_shape((1, 32, 32))
    return module_from_config(cfg, latent_shape).to(device)


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_images_per_second(module: LatentDiffusionModule, batch: int, repeats: int) -> float:
    device = module.device
    latents = torch.randn(batch, *module.latent_shape, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.AdamW(module.denoiser.parameters(), lr=1e-4)
    module.denoiser.train()

    def step() -> None:
        loss = module.loss(module.denoiser, module.noise_schedule, latents, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return batch / median_seconds(step, repeats)


def sample_images_per_second(
    module: LatentDiffusionModule, kind: str, steps: int, batch: int, measure_steps: int | None = None
) -> tuple[float, bool]:
    """Images/s for a full ``steps``-step run; if ``measure_steps`` < steps, extrapolate linearly."""
    from tinyldm.diffusion import SOLVERS, ClassifierFreeGuidance

    run_steps = min(steps, measure_steps or steps)
    solver, guidance = SOLVERS[kind](steps=run_steps), ClassifierFreeGuidance(scale=3.0)
    labels = torch.arange(batch, device=module.device) % 10
    seconds = median_seconds(
        lambda: module.sample(labels, solver=solver, guidance=guidance, generator=torch.Generator().manual_seed(0)),
        repeats=1,
    )
    seconds *= steps / run_steps
    return batch / seconds, run_steps < steps


BASE_128 = ["diffusion.batch_size=128", "diffusion.channels_last=false", "diffusion.optimizer.fused=false"]
LOOP_VARIANTS = {
    # name: overrides; {steps} (batch 128) and {epochs} are filled in for the same number of training images
    "0.1 loop: validate every epoch on the whole split, grids every 12 epochs": [
        *BASE_128,
        "diffusion.max_steps=null",
        "diffusion.max_epochs={epochs}",
        "trainer.limit_val_batches=1.0",
        "diffusion.grid.every_n_steps={grid_steps}",
    ],
    "step loop: validate every 250 steps on <= 8 batches, grids every 1000": [*BASE_128, "diffusion.max_steps={steps}"],
    "+ channels_last + fused AdamW": ["diffusion.batch_size=128", "diffusion.max_steps={steps}"],
    "+ batch 256 (half the steps): the default": ["diffusion.max_steps={half_steps}"],
}


def loop_benchmark(epochs: int, workdir: Path) -> list[dict]:
    """Run stage 2 of the main job under each of LOOP_VARIANTS; images/s over the fit's wall time."""
    import math

    from tinyldm.lit.autoencoder_module import AutoencoderModule
    from tinyldm.tasks import train

    def config(overrides: list[str]):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose(
                "train",
                overrides=[
                    "model=vqvae",
                    "+experiment=mnist_cond",
                    "logger=none",
                    "evaluation.enabled=false",
                    f"paths.root_dir={workdir}",
                    *overrides,
                ],
            )

    base = config([])
    stage1 = AutoencoderModule(
        autoencoder=OmegaConf.to_container(base.model.net, resolve=True),
        optimizer=OmegaConf.to_container(base.model.training.optimizer, resolve=True),
    )
    ckpt = workdir / "stage1.ckpt"  # untrained weights: speed does not depend on them
    torch.save(
        {
            "state_dict": stage1.state_dict(),
            "hyper_parameters": dict(stage1.hparams),
            "tinyldm": {"stage": "autoencoder", "version": "benchmark"},
        },
        ckpt,
    )
    train_size = build(base.dataset)
    train_size.setup()
    steps_per_epoch = math.ceil(len(train_size.train_dataset) / 128)
    fill = {
        "epochs": epochs,
        "steps": epochs * steps_per_epoch,
        "half_steps": epochs * steps_per_epoch // 2,
        "grid_steps": 12 * steps_per_epoch,
    }
    rows = []
    for i, (name, overrides) in enumerate(LOOP_VARIANTS.items()):
        cfg = config(
            [
                "stage=diffusion",
                f"autoencoder_ckpt={ckpt}",
                f"paths.output_dir={workdir}/run{i}",
                *(o.format(**fill) for o in overrides),
            ]
        )
        metrics = train.run(cfg)
        rows.append(
            {
                "variant": name,
                "steps": metrics["ldm/steps"],
                "batch": int(cfg.diffusion.batch_size),
                "fit_seconds": metrics["ldm/wall_seconds"],
                "img_s": metrics["ldm/train_images_per_second"],
            }
        )
        print(f"measured {rows[-1]}", file=sys.stderr)
    print(
        f"\nStage-2 loop on {train_size.name} ({len(train_size.train_dataset)} images), {torch.get_num_threads()} "
        "threads, "
        f"{fill['steps'] * 128} training images per variant\n"
    )
    print("| loop | steps x batch | fit wall s | train img/s (wall) | vs 0.1 loop |\n|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | {row['steps']} x {row['batch']} | {row['fit_seconds']:.0f} | {row['img_s']:.0f} "
            f"| {row['img_s'] / rows[0]['img_s']:.2f}x |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vqvae", "ae", "vae", "identity"])
    parser.add_argument("--unet", default="small")
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--sample-batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--loop", action="store_true", help="A/B the whole stage-2 loop instead (see the docstring)")
    parser.add_argument("--loop-epochs", type=int, default=24, help="length of each loop variant, in 0.1-loop epochs")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.loop:
        import tempfile

        with tempfile.TemporaryDirectory() as workdir:
            rows = loop_benchmark(args.loop_epochs, Path(workdir))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return

    results = {}
    for model in args.models:
        module = build_module(model, args.unet, device)
        pixel = model == "identity"
        row = {
            "latent_shape": list(module.latent_shape),
            "unet_parameters": sum(p.numel() for p in module.denoiser.unet.parameters()),
        }
        # pixel space is ~50x slower: fewer repeats, shorter measured runs (extrapolated)
        row["train_img_s"] = train_images_per_second(
            module, args.train_batch, max(2, args.repeats // (3 if pixel else 1))
        )
        for kind, steps in (("ddpm", 1000), ("ddim", 50), ("ddim", 20)):
            measure = (10 if pixel else 100) if steps == 1000 else (10 if pixel else None)
            batch = args.sample_batch // (4 if pixel else 1)
            row[f"sample_img_s_{kind}{steps}"], row[f"extrapolated_{kind}{steps}"] = sample_images_per_second(
                module, kind, steps, batch, measure
            )
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if device.type == "cuda":
            row["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        results[model] = row
        print(f"measured {model}: {row}", file=sys.stderr)

    print(
        f"\nStage-2 throughput on {device} ({torch.get_num_threads()} threads), unet={args.unet}, guidance on (2x "
        "batch)\n"
    )
    print(
        "| stage-1 | latent | UNet params | train img/s | DDPM-1000 img/s | DDIM-50 img/s | DDIM-20 img/s | peak RSS "
        "MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model, r in results.items():
        mark = lambda key, r=r: "*" if r.get(f"extrapolated_{key}") else ""  # noqa: E731
        print(
            f"| {model} | {'x'.join(map(str, r['latent_shape']))} | {r['unet_parameters'] / 1e6:.2f}M | "
            f"{r['train_img_s']:.1f} "
            f"| {r['sample_img_s_ddpm1000']:.2f}{mark('ddpm1000')} | {r['sample_img_s_ddim50']:.1f}{mark('ddim50')} "
            f"| {r['sample_img_s_ddim20']:.1f}{mark('ddim20')} | {r['peak_rss_mb']:.0f} |"
        )
    if "identity" in results:
        pixel = results["identity"]
        for model, r in results.items():
            if model != "identity":
                print(
                    f"\n{model} vs pixels: training {r['train_img_s'] / pixel['train_img_s']:.1f}x, "
                    f"DDIM-50 sampling {r['sample_img_s_ddim50'] / pixel['sample_img_s_ddim50']:.1f}x, "
                    f"DDPM-1000 sampling {r['sample_img_s_ddpm1000'] / pixel['sample_img_s_ddpm1000']:.1f}x",
                    end="",
                )
        print("\n(* extrapolated linearly from a shorter run of the same sampler)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

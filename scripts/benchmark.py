"""Stage-2 benchmark: latent vs pixel-space throughput at equal UNet config, and sampling speed.

    python scripts/benchmark.py [--models ae vae vqvae identity] [--unet small] [--json out.json]

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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tinyldm.lit.diffusion_module import LatentDiffusionModule  # noqa: E402
from tinyldm.tasks.validation import unet_config_for  # noqa: E402
from tinyldm.utils.instantiate import build  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402


def build_module(model: str, unet: str, device: torch.device) -> LatentDiffusionModule:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", f"unet={unet}", "paths.root_dir=.", "paths.output_dir=."])
    autoencoder = build(cfg.model.net)
    latent_shape = autoencoder.latent_shape((1, 32, 32))
    container = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731
    module = LatentDiffusionModule(
        autoencoder=container(cfg.model.net), unet=unet_config_for(cfg.unet, latent_shape) | {"context_dim": cfg.conditioner.context_dim},
        conditioner=container(cfg.conditioner), scheduler=container(cfg.scheduler), sampler=container(cfg.sampler),
        optimizer=container(cfg.diffusion.optimizer), latent_shape=list(latent_shape),
    )
    return module.to(device)


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
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
        loss = module.diffusion_loss(module.denoiser, latents, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return batch / median_seconds(step, repeats)


def sample_images_per_second(module: LatentDiffusionModule, kind: str, steps: int, batch: int, measure_steps: int | None = None) -> tuple[float, bool]:
    """Images/s for a full ``steps``-step run; if ``measure_steps`` < steps, extrapolate linearly."""
    from tinyldm.diffusion import DiffusionSampler

    run_steps = min(steps, measure_steps or steps)
    sampler = DiffusionSampler(kind=kind, steps=run_steps, guidance_scale=3.0)
    labels = torch.arange(batch, device=module.device) % 10
    seconds = median_seconds(lambda: module.sample(labels, sampler=sampler, generator=torch.Generator().manual_seed(0)), repeats=1)
    seconds *= steps / run_steps
    return batch / seconds, run_steps < steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vqvae", "ae", "vae", "identity"])
    parser.add_argument("--unet", default="small")
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--sample-batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    results = {}
    for model in args.models:
        module = build_module(model, args.unet, device)
        pixel = model == "identity"
        row = {"latent_shape": list(module.latent_shape),
               "unet_parameters": sum(p.numel() for p in module.denoiser.unet.parameters())}
        # pixel space is ~50x slower: fewer repeats, shorter measured runs (extrapolated)
        row["train_img_s"] = train_images_per_second(module, args.train_batch, max(2, args.repeats // (3 if pixel else 1)))
        for kind, steps in (("ddpm", 1000), ("ddim", 50), ("ddim", 20)):
            measure = (10 if pixel else 100) if steps == 1000 else (10 if pixel else None)
            batch = args.sample_batch // (4 if pixel else 1)
            row[f"sample_img_s_{kind}{steps}"], row[f"extrapolated_{kind}{steps}"] = sample_images_per_second(module, kind, steps, batch, measure)
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if device.type == "cuda":
            row["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        results[model] = row
        print(f"measured {model}: {row}", file=sys.stderr)

    print(f"\nStage-2 throughput on {device} ({torch.get_num_threads()} threads), unet={args.unet}, guidance on (2x batch)\n")
    print("| stage-1 | latent | UNet params | train img/s | DDPM-1000 img/s | DDIM-50 img/s | DDIM-20 img/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for model, r in results.items():
        mark = lambda key: "*" if r.get(f"extrapolated_{key}") else ""  # noqa: E731
        print(f"| {model} | {'x'.join(map(str, r['latent_shape']))} | {r['unet_parameters'] / 1e6:.2f}M | {r['train_img_s']:.1f} "
              f"| {r['sample_img_s_ddpm1000']:.2f}{mark('ddpm1000')} | {r['sample_img_s_ddim50']:.1f}{mark('ddim50')} "
              f"| {r['sample_img_s_ddim20']:.1f}{mark('ddim20')} | {r['peak_rss_mb']:.0f} |")
    if "identity" in results:
        pixel = results["identity"]
        for model, r in results.items():
            if model != "identity":
                print(f"\n{model} vs pixels: training {r['train_img_s'] / pixel['train_img_s']:.1f}x, "
                      f"DDIM-50 sampling {r['sample_img_s_ddim50'] / pixel['sample_img_s_ddim50']:.1f}x, "
                      f"DDPM-1000 sampling {r['sample_img_s_ddpm1000'] / pixel['sample_img_s_ddpm1000']:.1f}x", end="")
        print("\n(* extrapolated linearly from a shorter run of the same sampler)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

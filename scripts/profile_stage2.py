"""Where one stage-2 training step spends its time: a torch.profiler table (docs/experiments/stage2-throughput.md).

    python scripts/profile_stage2.py [--batch 128] [--steps 5] [--channels-last] [--fused] [--compile] [--rows 12]
    python scripts/profile_stage2.py --experiment mnist_text ...   # the text conditioner's step (prompts per step)
    python scripts/profile_stage2.py --batch 256 --channels-last --fused unet.base_channels=48   # a UNet variant

Profiles the real ``LatentDiffusionModule`` of the main job (``model=vqvae +experiment=mnist_cond``):
the loss (noise, UNet forward, min-SNR weighting), backward, the AdamW step and the EMA update, on
random latents (speed does not depend on the data). Prints the top operators by self CPU time and
the share of each phase. ``--compile`` compiles the UNet in place (``diffusion.compile_unet``) and
reports the first step's time, which includes the compilation. Trailing ``key=value`` arguments are
Hydra overrides of the main job's config (``unet.*``, ``diffusion.*``): what a variant costs per step.
"""

from __future__ import annotations

import argparse
import time

import torch
from benchmark import compose_train  # scripts/benchmark.py
from torch.profiler import ProfilerActivity, profile, record_function

from tinyldm.conditioners import TextConditioner
from tinyldm.training.stage2 import module_from_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--fused", action="store_true", help="fused AdamW")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (diffusion.compile_unet)")
    parser.add_argument("--experiment", default="mnist_cond", help="mnist_text: the text conditioner's training step")
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. unet.base_channels=48")
    args = parser.parse_args()

    experiment = f"+experiment={args.experiment}"
    cfg = compose_train(["model=vqvae", experiment, f"diffusion.channels_last={args.channels_last}", *args.overrides])
    module = module_from_config(cfg, (4, 8, 8))
    module.denoiser.train()
    if args.compile:
        module.denoiser.unet.compile()
    optimizer = torch.optim.AdamW(module.denoiser.parameters(), lr=1e-3, fused=args.fused or None)
    latents, labels = torch.randn(args.batch, 4, 8, 8), torch.randint(0, 10, (args.batch,))
    if isinstance(module.denoiser.conditioner, TextConditioner):  # label + a bin per attribute, as the data hand it
        bins = torch.randint(0, 3, (args.batch, len(module.denoiser.conditioner.bank.attributes)))
        labels = torch.cat([labels[:, None], bins], dim=1)  # (B, 1 + A)

    def step(seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        with record_function("phase: loss (noise + UNet forward)"):
            loss = module.loss(module.denoiser, module.noise_schedule, latents, labels, generator=generator)
        with record_function("phase: backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("phase: AdamW step"):
            optimizer.step()
        with record_function("phase: EMA update"):
            module.ema.update_parameters(module.denoiser)

    first = time.perf_counter()
    step(0)
    first = time.perf_counter() - first  # includes the compilation with --compile
    for seed in range(1, 3):  # warm-up: oneDNN picks its kernels on the first calls
        step(seed)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for seed in range(args.steps):
            step(seed)
    seconds = (time.perf_counter() - start) / args.steps
    averages = prof.key_averages()
    print(
        f"{args.experiment}: batch {args.batch}, {torch.get_num_threads()} threads, "
        f"channels_last={args.channels_last}, fused={args.fused}, "
        f"compile={args.compile}{''.join(' ' + o for o in args.overrides)}, "
        f"{sum(p.numel() for p in module.denoiser.unet.parameters()) / 1e6:.2f}M UNet parameters: "
        f"first step {first:.1f} s; {seconds * 1000:.0f} ms per step under the profiler "
        f"({args.batch / seconds:.0f} img/s)\n"
    )
    phases = [e for e in averages if e.key.startswith("phase:")]
    total = sum(e.cpu_time_total for e in phases)
    print("| phase | ms per step | share |\n|---|---|---|")
    for e in sorted(phases, key=lambda e: -e.cpu_time_total):
        print(
            f"| {e.key.removeprefix('phase: ')} | {e.cpu_time_total / 1000 / args.steps:.1f} | "
            f"{e.cpu_time_total / total:.0%} |"
        )
    ops = sorted((e for e in averages if not e.key.startswith("phase:")), key=lambda e: -e.self_cpu_time_total)
    self_total = sum(e.self_cpu_time_total for e in ops)
    print("\n| operator | self ms per step | share | calls per step |\n|---|---|---|---|")
    for e in ops[: args.rows]:
        print(
            f"| `{e.key[:60]}` | {e.self_cpu_time_total / 1000 / args.steps:.1f} | "
            f"{e.self_cpu_time_total / self_total:.0%} "
            f"| {e.count // args.steps} |"
        )


if __name__ == "__main__":
    main()

"""How far a few-step sampler lands from the many-step solution of the same guided ODE, per setting.

    python scripts/solver_error.py DIFFUSION_CKPT [--set sampler.KEY=VALUE ...] \
        --arm LABEL sampler.KEY=VALUE [...] [--arm ...] [--per-class 20] [--seed 0]

Why: a sample's quality has two sources of error, the model's (what it learned) and the solver's
(how coarsely its ODE is integrated). This measures the second alone: every arm starts from the same
noise as a reference run that visits every training timestep, and the table gives the root-mean-square
distance of each decoded sample from the reference's, in pixel units of [-1, 1]. The reference is itself
checked against a run with every second timestep (printed first): an arm's distance means something only
well above that. The reference costs as much as 50 runs of 20 steps, hence the few samples by default.

``--set`` applies to every arm and the reference (e.g. the guidance); ``--arm`` adds an arm's own
settings (e.g. ``sampler.steps=20 sampler.timestep_spacing=logsnr 'sampler.logsnr_range=[-3.5,3.0]'``).
Deterministic solvers only: a stochastic one has no single solution to compare with.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import torch
from omegaconf import OmegaConf

from tinyldm.diffusion import DiffusionSampler
from tinyldm.pipeline import LatentDiffusionPipeline


def sampler_settings(overrides: list[str]) -> dict[str, Any]:
    """``sampler.KEY=VALUE`` strings -> ``{KEY: VALUE}`` (values parsed as YAML); anything else is refused."""
    bad = [o for o in overrides if not o.startswith("sampler.") or "=" not in o]
    if bad:
        raise SystemExit(f"{bad} not allowed: each setting is sampler.KEY=VALUE, e.g. sampler.steps=20")
    parsed = OmegaConf.to_container(OmegaConf.from_dotlist([o.removeprefix("sampler.") for o in overrides]))
    assert isinstance(parsed, dict)
    return parsed


def build(base: DiffusionSampler, settings: dict[str, Any]) -> DiffusionSampler:
    """``base`` with ``settings``; unknown keys and bad values are refused with the sampler's own error."""
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(DiffusionSampler)})
    if unknown:
        raise SystemExit(f"unknown sampler settings {unknown}")
    try:
        return dataclasses.replace(base, **settings)
    except ValueError as error:
        raise SystemExit(f"sampler: {error}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", help="a stage-2 checkpoint (checkpoints/diffusion.ckpt of a run)")
    parser.add_argument("--set", nargs="+", default=[], metavar="sampler.KEY=VALUE", help="settings of every run")
    parser.add_argument("--arm", nargs="+", action="append", required=True, metavar="LABEL sampler.KEY=VALUE")
    parser.add_argument("--per-class", type=int, default=20, help="samples per class (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.per_class < 1:
        raise SystemExit(f"--per-class must be >= 1, got {args.per_class}")

    pipeline = LatentDiffusionPipeline.from_checkpoint(args.ckpt)
    schedule = pipeline.model.noise_schedule
    base = build(pipeline.sampler, sampler_settings(args.set))
    if base.kind != "dpmpp_2m":
        raise SystemExit(f"sampler.kind={base.kind!r}: the reference is a DPM-Solver++ run; use kind=dpmpp_2m")
    arms = {}
    for label, *overrides in args.arm:
        if label in arms:
            raise SystemExit(f"arm {label!r} is given twice")
        arms[label] = build(base, sampler_settings(overrides))
        arms[label].check_schedule(schedule)
        if arms[label].kind in ("ddpm", "dpmpp_2m_sde") or (arms[label].kind == "ddim" and arms[label].eta > 0):
            raise SystemExit(
                f"arm {label!r}: a stochastic solver (ddpm, dpmpp_2m_sde, ddim eta > 0) has no single solution"
            )
    every = dataclasses.replace(base, steps=None, timestep_spacing=None, logsnr_range=None)  # all T timesteps
    half = dataclasses.replace(every, steps=schedule.num_train_timesteps // 2)
    labels = pipeline.labels(args.per_class)  # (N,)

    def generate(sampler: DiffusionSampler) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        images = pipeline.generate(labels, sampler=sampler, seed=args.seed)  # (N, 1, H, W) in [-1, 1]
        return images, time.perf_counter() - start

    def distance(images: torch.Tensor, to: torch.Tensor) -> torch.Tensor:
        return (images - to).flatten(1).pow(2).mean(dim=1).sqrt()  # (N,) per-sample RMS

    target, _ = generate(every)
    halfway, _ = generate(half)
    print(f"{len(labels)} samples; reference: every one of the {schedule.num_train_timesteps} training timesteps")
    print("| arm | steps | grid | RMS to reference | p95 | share > 0.1 | sampling s |")
    print("|---|---|---|---|---|---|---|")

    def report(label: str, sampler: DiffusionSampler, rms: torch.Tensor, seconds: float | None) -> None:
        grid = sampler.grid_spacing + (f" {list(sampler.logsnr_range)}" if sampler.logsnr_range else "")
        timing = f"{seconds:.0f}" if seconds is not None else "-"
        steps = sampler.steps or schedule.num_train_timesteps
        print(
            f"| {label} | {steps} | {grid} | {rms.mean():.4f} | {rms.quantile(0.95):.4f} | "
            f"{(rms > 0.1).float().mean():.3f} | {timing} |",
            flush=True,
        )

    report("every second timestep", half, distance(halfway, target), None)
    for label, sampler in arms.items():
        images, seconds = generate(sampler)
        report(label, sampler, distance(images, target), seconds)


if __name__ == "__main__":
    main()

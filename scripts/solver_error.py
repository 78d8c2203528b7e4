"""How far a few-step sampler lands from the many-step solution of the same guided ODE, per setting.

    python scripts/solver_error.py DIFFUSION_CKPT [--set sampler.KEY=VALUE guidance.KEY=VALUE ...] \
        --arm LABEL sampler.KEY=VALUE [...] [--arm ...] [--per-class 20] [--seed 0]

Why: a sample's quality has two sources of error, the model's (what it learned) and the solver's
(how coarsely its ODE is integrated). This measures the second alone: every arm starts from the same
noise as a reference run that visits every training timestep, and the table gives the root-mean-square
distance of each decoded sample from the reference's, in pixel units of [-1, 1]. The reference is itself
checked against a run with every second timestep (printed first): an arm's distance means something only
well above that. The reference costs as much as 50 runs of 20 steps, hence the few samples by default.

Settings start from the checkpoint's own solver and guidance. ``--set`` applies to every arm and the
reference (``sampler=NAME`` / ``guidance=NAME`` take ``conf/<group>/NAME.yaml``, ``sampler.KEY=VALUE`` /
``guidance.KEY=VALUE`` change one setting); ``--arm`` adds an arm's own solver settings (e.g. ``sampler.steps=20
sampler.timestep_spacing=logsnr 'sampler.logsnr_range=[-3.5,3.0]'``). The reference is DPM-Solver++(2M)
(``sampler=dpmpp_2m``); deterministic solvers only: a stochastic one has no single solution to compare with.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from tinyldm.diffusion import ClassifierFreeGuidance, DDIMSolver, DDPMSolver, DPMSolver2M, DPMSolver2MSDE, Solver
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.utils.instantiate import build

CONF = Path(__file__).resolve().parents[1] / "conf"


def apply(
    solver: Solver, guidance: ClassifierFreeGuidance, overrides: list[str]
) -> tuple[Solver, ClassifierFreeGuidance]:
    """``solver`` and ``guidance`` with ``overrides``: ``group=NAME`` replaces one in order, then each group's
    ``group.KEY=VALUE`` settings change it together (so a grid and its range are set at once); a bad one is
    refused naming it."""
    built: dict[str, Any] = {"sampler": solver, "guidance": guidance}
    changes: dict[str, dict[str, Any]] = {"sampler": {}, "guidance": {}}
    for item in overrides:
        key, sep, value = item.partition("=")
        group, _, setting = key.partition(".")
        if not sep or group not in built:
            raise SystemExit(
                f"{item!r} not allowed: use sampler=NAME, guidance=NAME, sampler.KEY=VALUE or guidance.KEY=VALUE"
            )
        if setting:
            changes[group].update(OmegaConf.to_container(OmegaConf.from_dotlist([f"{setting}={value}"])))
            continue
        path = CONF / group / f"{value}.yaml"
        if not path.is_file():
            raise SystemExit(f"{item!r}: no {path.relative_to(CONF.parent)}")
        built[group] = build(OmegaConf.to_container(OmegaConf.load(path)))
    for group, settings in changes.items():
        try:
            built[group] = built[group].replace(**settings) if settings else built[group]
        except (TypeError, ValueError) as error:
            raise SystemExit(f"{group}: {error}") from None
    return built["sampler"], built["guidance"]


def stochastic(solver: Solver) -> bool:
    """Whether ``solver`` draws noise while it steps (then it has no single solution to compare with)."""
    return isinstance(solver, (DDPMSolver, DPMSolver2MSDE)) or (isinstance(solver, DDIMSolver) and solver.eta > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", help="a stage-2 checkpoint (checkpoints/diffusion.ckpt of a run)")
    parser.add_argument("--set", nargs="+", default=[], metavar="GROUP.KEY=VALUE", help="settings of every run")
    parser.add_argument("--arm", nargs="+", action="append", required=True, metavar="LABEL GROUP.KEY=VALUE")
    parser.add_argument("--per-class", type=int, default=20, help="samples per class (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.per_class < 1:
        raise SystemExit(f"--per-class must be >= 1, got {args.per_class}")

    pipeline = LatentDiffusionPipeline.from_checkpoint(args.ckpt)
    schedule = pipeline.model.noise_schedule
    base, guidance = apply(pipeline.solver, pipeline.guidance, args.set)
    if type(base) is not DPMSolver2M:
        raise SystemExit(f"the solver is {base.name}: the reference is a DPM-Solver++ run; --set sampler=dpmpp_2m")
    arms: dict[str, tuple[Solver, ClassifierFreeGuidance]] = {}
    for label, *overrides in args.arm:
        if label in arms:
            raise SystemExit(f"arm {label!r} is given twice")
        if any(not item.startswith("sampler") for item in overrides):
            raise SystemExit(f"arm {label!r}: arms change the solver only (sampler...); the guidance is --set's")
        arms[label] = apply(base, guidance, overrides)
        try:
            arms[label][0].check_schedule(schedule)
        except ValueError as error:
            raise SystemExit(f"arm {label!r}: sampler: {error}") from None
        if stochastic(arms[label][0]):
            raise SystemExit(
                f"arm {label!r}: a stochastic solver (ddpm, dpmpp_2m_sde, ddim eta > 0) has no single solution"
            )
    every = base.replace(steps=None, timestep_spacing="trailing", logsnr_range=None)  # all T timesteps
    half = every.replace(steps=schedule.num_train_timesteps // 2)
    labels = pipeline.labels(args.per_class)  # (N,)

    def generate(solver: Solver, with_guidance: ClassifierFreeGuidance) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        images = pipeline.generate(labels, solver=solver, guidance=with_guidance, seed=args.seed)  # (N, 1, H, W)
        return images, time.perf_counter() - start

    def distance(images: torch.Tensor, to: torch.Tensor) -> torch.Tensor:
        return (images - to).flatten(1).pow(2).mean(dim=1).sqrt()  # (N,) per-sample RMS

    target, _ = generate(every, guidance)
    halfway, _ = generate(half, guidance)
    print(f"{len(labels)} samples; reference: every one of the {schedule.num_train_timesteps} training timesteps")
    print("| arm | steps | grid | RMS to reference | p95 | share > 0.1 | sampling s |")
    print("|---|---|---|---|---|---|---|")

    def report(label: str, solver: Any, rms: torch.Tensor, seconds: float | None) -> None:
        spacing, span = getattr(solver, "timestep_spacing", "leading"), getattr(solver, "logsnr_range", None)
        grid = spacing + (f" {list(span)}" if span else "")
        timing = f"{seconds:.0f}" if seconds is not None else "-"
        steps = solver.steps or schedule.num_train_timesteps
        print(
            f"| {label} | {steps} | {grid} | {rms.mean():.4f} | {rms.quantile(0.95):.4f} | "
            f"{(rms > 0.1).float().mean():.3f} | {timing} |",
            flush=True,
        )

    report("every second timestep", half, distance(halfway, target), None)
    for label, (solver, arm_guidance) in arms.items():
        images, seconds = generate(solver, arm_guidance)
        report(label, solver, distance(images, target), seconds)


if __name__ == "__main__":
    main()

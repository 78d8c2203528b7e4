"""Quality per minute: the main job's recipe at several stage-2 budgets, latent vs pixel space.

    python scripts/quality_curve.py [--minutes 1 2 5 10] [--pixel-minutes 2 5] [--models vqvae identity] [--seed 0]
                                    [--calibration-steps 60] [--out outputs/quality_curve] [--n-per-class 100]
                                    [-- EXTRA OVERRIDES]

For each model (``vqvae``: the main job; ``identity``: the same UNet on pixels) the script first
measures how many stage-2 optimizer steps per second this machine runs (a short calibration run),
then trains the main job (``train.py model=M +experiment=mnist_cond``) once per budget
(``--pixel-minutes`` for ``identity``, whose evaluation alone takes minutes: 1,000 images sampled in pixel space) with
``diffusion.max_steps`` = minutes x 60 x that rate, each with its own full learning-rate schedule,
and the end-of-training evaluation on ``10 x n_per_class`` samples. Stage 1 is trained once per
model and reused from the cache (the x-axis is stage-2 training time, as measured by the run).

Writes ``curve.csv`` (one row per point) and ``curve.png`` (conditional accuracy and FID / real
floor against training minutes) into ``--out``. Points already in ``--out`` are reused, so an
interrupted script continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = (
    "model",
    "target_minutes",
    "steps",
    "train_minutes",
    "eval/cond_acc",
    "eval/fid",
    "eval/fid_floor",
    "eval/fid_ratio",
    "eval/fid_recon",
    "eval/recon_acc",
    "eval/diversity",
    "eval/num_samples",
)


def run_main_job(run_dir: Path, model: str, overrides: list[str], cache_dir: Path) -> dict:
    """``train.py model=M +experiment=mnist_cond ...`` into ``run_dir`` (reused if it already finished)."""
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        command = [
            sys.executable,
            str(REPO / "train.py"),
            f"model={model}",
            "+experiment=mnist_cond",
            "logger=csv",
            f"paths.cache_dir={cache_dir}",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ]
        print("+", " ".join(command[1:]), file=sys.stderr, flush=True)
        subprocess.run(command, cwd=REPO, check=True)
    return json.loads(metrics_file.read_text())


def steps_per_second(out: Path, model: str, extra: list[str], cache_dir: Path, steps: int) -> float:
    """Stage-2 optimizer steps per second of fit wall time on this machine (validation and grids included)."""
    metrics = run_main_job(
        out / f"{model}-calibration",
        model,
        [
            *extra,
            f"diffusion.max_steps={steps}",
            "evaluation.enabled=false",
            f"diffusion.val_every_n_steps={max(1, steps // 2)}",
        ],
        cache_dir,
    )
    return metrics["ldm/steps"] / metrics["ldm/wall_seconds"]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from tinyldm.utils.files import atomic_write

    fig, (acc_ax, fid_ax) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for model in sorted({r["model"] for r in rows}):
        points = sorted((r for r in rows if r["model"] == model), key=lambda r: r["train_minutes"])
        label = "pixel space (identity)" if model == "identity" else f"latent ({model})"
        minutes = [p["train_minutes"] for p in points]
        acc_ax.plot(minutes, [100 * p["eval/cond_acc"] for p in points], marker="o", label=label)
        fid_ax.plot(minutes, [p["eval/fid_ratio"] for p in points], marker="o", label=label)
    acc_ax.set(xlabel="stage-2 training minutes (2 CPU cores)", ylabel="conditional accuracy %", xscale="log")
    fid_ax.set(
        xlabel="stage-2 training minutes (2 CPU cores)",
        ylabel="FID / real floor (lower is better)",
        xscale="log",
        yscale="log",
    )
    fid_ax.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
    minutes = sorted({r["train_minutes"] for r in rows})
    ticks = [t for t in (0.25, 0.5, 1, 2, 5, 10, 20, 50) if min(minutes) / 1.5 <= t <= max(minutes) * 1.5]
    for ax in (acc_ax, fid_ax):
        # plain numbers at round minutes: a log axis spanning less than a decade otherwise labels its
        # minor ticks in scientific notation, on top of each other
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("quality per minute: the main job's recipe at several stage-2 budgets", fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument(
        "--pixel-minutes", type=float, nargs="+", default=None, help="budgets for identity (default: --minutes)"
    )
    parser.add_argument("--models", nargs="+", default=["vqvae", "identity"])
    parser.add_argument("--calibration-steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-per-class", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "quality_curve")
    parser.add_argument("extra", nargs="*", help="more train.py overrides, applied to every run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache_dir = args.out / "cache"
    extra = [f"seed={args.seed}", f"evaluation.n_per_class={args.n_per_class}", *args.extra]

    rows = []
    for model in args.models:
        rate = steps_per_second(args.out, model, extra, cache_dir, args.calibration_steps)
        print(f"{model}: {rate:.2f} stage-2 steps/s", file=sys.stderr, flush=True)
        for minutes in (args.pixel_minutes or args.minutes) if model == "identity" else args.minutes:
            steps = max(10, round(minutes * 60 * rate))
            metrics = run_main_job(
                args.out / f"{model}-{minutes:g}min", model, [*extra, f"diffusion.max_steps={steps}"], cache_dir
            )
            rows.append(
                {
                    "model": model,
                    "target_minutes": minutes,
                    "steps": metrics["ldm/steps"],
                    "train_minutes": metrics["ldm/wall_seconds"] / 60,
                    **{key: metrics.get(key) for key in COLUMNS if key.startswith("eval/")},
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)

    from tinyldm.utils.files import atomic_write

    with atomic_write(args.out / "curve.csv", "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "curve.png")
    print(
        "| model | budget min | steps | trained min | cond. acc | FID | floor | FID / floor | recon FID "
        "|\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['model']} | {r['target_minutes']:g} | {r['steps']} | {r['train_minutes']:.1f} | "
            f"{100 * r['eval/cond_acc']:.1f} % "
            f"| {r['eval/fid']:.2f} | {r['eval/fid_floor']:.2f} | {r['eval/fid_ratio']:.2f} | "
            f"{r['eval/fid_recon']:.2f} |"
        )
    print(f"\nwrote {args.out / 'curve.csv'} and {args.out / 'curve.png'}")


if __name__ == "__main__":
    main()

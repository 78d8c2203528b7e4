"""Hydra callback: at the end of a multirun, gather every job's metrics into one CSV.

One row per job: its job number, directory, the command-line overrides that made it, and the
final metrics from its ``metrics.json`` (jobs that crashed get a row with ``status=failed``, so
a sweep table never silently drops points).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tinyldm.utils.files import atomic_write

log = logging.getLogger(__name__)


def collect_sweep(sweep_dir: str | Path) -> list[dict[str, Any]]:
    rows = []
    for job_dir in sorted(
        (p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.exists() else []
        row: dict[str, Any] = {"job": int(job_dir.name), "dir": str(job_dir), "overrides": " ".join(overrides)}
        for item in overrides:
            key, _, value = str(item).partition("=")
            row[f"override:{key.lstrip('+~')}"] = value
        metrics_file = job_dir / "metrics.json"
        if metrics_file.exists():
            metrics = json.loads(metrics_file.read_text())
            row["status"] = "ok"
            row.update({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))})
        else:
            row["status"] = "failed"
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


class SweepSummary(Callback):
    def __init__(self, filename: str = "summary.csv") -> None:
        self.filename = filename

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        rows = collect_sweep(sweep_dir)
        if rows:
            path = write_csv(rows, sweep_dir / self.filename)
            log.info("Sweep summary (%d jobs): %s", len(rows), path)
            plot = plot_fid_vs_accuracy(rows, path.with_suffix(".png"))
            if plot is not None:
                log.info("Sweep plot (FID vs conditional accuracy): %s", plot)
            if "wandb" in (config.get("logger") or {}):
                log_wandb_table(rows, plot, config, sweep_dir)


def log_wandb_table(rows: list[dict[str, Any]], plot: Path | None, config: DictConfig, sweep_dir: Path) -> None:
    """One extra W&B run for the sweep as a whole: the summary as a table (+ the plot)."""
    import wandb

    from tinyldm.utils.loggers import resolve_wandb_mode

    spec = config.logger.wandb
    columns = [c for c in dict.fromkeys(k for row in rows for k in row) if not c.startswith("dir")]
    table = wandb.Table(
        columns=columns,
        data=[
            [row.get(c) if not isinstance(row.get(c), (list, dict)) else str(row.get(c)) for c in columns]
            for row in rows
        ],
    )
    run = wandb.init(
        project=spec.get("project"),
        entity=spec.get("entity"),
        group=spec.get("group") or sweep_dir.name,
        name=f"sweep-summary-{sweep_dir.name}",
        dir=str(sweep_dir),
        mode=resolve_wandb_mode(spec.get("mode", "auto")),
        job_type="sweep_summary",
        reinit="finish_previous",
    )
    payload: dict[str, Any] = {"sweep/summary": table}
    if plot is not None:
        payload["sweep/fid_vs_accuracy"] = wandb.Image(str(plot))
    run.log(payload)
    run.finish()
    log.info("Logged the sweep table to W&B (%s mode)", run.settings.mode)


def point_labels(rows: list[dict[str, Any]]) -> list[str]:
    """Per-row label from the overrides that differ between rows, e.g. ``model=ae, transformer_depth=1``."""
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k.startswith("override:")]
    varying = [k for k in keys if len({str(row.get(k)) for row in rows}) > 1]
    return [
        ", ".join(f"{k.rsplit('.', 1)[-1].removeprefix('override:')}={row.get(k)}" for k in varying)
        or f"job {row.get('job')}"
        for row in rows
    ]


def plot_fid_vs_accuracy(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Scatter of eval/fid against eval/cond_acc, each point labelled with the overrides that vary."""
    points = [
        r
        for r in rows
        if isinstance(r.get("eval/fid"), (int, float)) and isinstance(r.get("eval/cond_acc"), (int, float))
    ]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    ax.scatter([p["eval/cond_acc"] for p in points], [p["eval/fid"] for p in points])
    for p, label in zip(points, point_labels(points), strict=True):
        ax.annotate(label, (p["eval/cond_acc"], p["eval/fid"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    floors = [p["eval/fid_floor"] for p in points if isinstance(p.get("eval/fid_floor"), (int, float))]
    if floors:
        ax.axhline(float(np.median(floors)), linestyle="--", color="gray", label="real-data floor")
        ax.legend(loc="best", fontsize=7)
    ax.set_xlabel("conditional accuracy")
    ax.set_ylabel("classifier-feature FID (lower is better)")
    ax.set_title("sweep: FID vs conditional accuracy")
    fig.tight_layout()
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return path

"""Print a lever screen (``experiments/lever_screen.sh``) as a table, with the four quality targets checked.

    python experiments/lever_table.py OUT [ARM...]

One row per arm (in the order given; default: every ``<arm>_s<seed>`` directory in OUT, sorted), one
column per seed, each cell "accuracy / FID÷floor / FID÷reconstruction / diversity" from that run's
end-of-training ``metrics.json``, in bold where all four targets are met (the marks of
``experiments/grid_table.py``). The last columns are the median of each figure over the seeds and how
many seeds meet all four. A run without a ``metrics.json`` shows "–" and is said so.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from grid_table import cell, meets

RUN_DIR = re.compile(r"^(?P<arm>[A-Za-z0-9_.-]+)_s(?P<seed>\d+)$")
FIGURES = ("eval/cond_acc", "eval/fid_ratio", "eval/fid_recon_ratio", "eval/diversity")


def read_runs(out: Path) -> dict[tuple[str, int], dict | None]:
    """``(arm, seed) -> metrics`` for every run directory in ``out`` (``None`` where it has no metrics.json)."""
    runs = {}
    for path in sorted(out.iterdir()):
        match = RUN_DIR.match(path.name)
        if not (match and path.is_dir()):
            continue
        metrics = path / "metrics.json"
        runs[(match["arm"], int(match["seed"]))] = json.loads(metrics.read_text()) if metrics.is_file() else None
    return runs


def median_cell(rows: list[dict]) -> str:
    acc, floor, recon, diversity = (statistics.median(float(row[key]) for row in rows) for key in FIGURES)
    return f"{100 * acc:.2f} % / {floor:.2f} / {recon:.2f} / {diversity:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("arms", nargs="*")
    args = parser.parse_args()
    if not args.out.is_dir():
        parser.error(f"{args.out}: no such directory")
    runs = read_runs(args.out)
    arms = args.arms or sorted({arm for arm, _ in runs})
    unknown = [arm for arm in arms if not any(key[0] == arm for key in runs)]
    if not runs or unknown:
        parser.error(f"no <arm>_s<seed> run directories in {args.out} for {unknown or 'any arm'}")
    seeds = sorted({seed for _, seed in runs})
    print(f"| arm | {' | '.join(f'seed {seed}' for seed in seeds)} | median | all four met |")
    print(f"|---|{'---|' * len(seeds)}---|---|")
    for arm in arms:
        rows = [runs.get((arm, seed)) for seed in seeds]
        for seed, row in zip(seeds, rows, strict=True):
            if row is None:
                print(f"<!-- {arm}_s{seed}: no metrics.json (not run, failed or cut) -->")
        done = [row for row in rows if row is not None]
        cells = " | ".join("–" if row is None else cell(row) for row in rows)
        median = median_cell(done) if done else "–"
        print(f"| {arm} | {cells} | {median} | {sum(meets(row) for row in done)} of {len(rows)} |")


if __name__ == "__main__":
    main()

"""Print guidance grids of several models side by side, with the four quality targets checked.

    python experiments/grid_table.py LABEL=SWEEP_DIR/summary.csv [LABEL=...] [--spread]

Each argument is one ``evaluate.py -m`` sweep (its ``summary.csv``), e.g. one per seed; a LABEL given
more than once merges its sweeps into one column (e.g. a CFG and an APG sweep of one checkpoint). The
table has one row per sampler setting (guidance s, autoguidance w, and the guidance method when it is
APG: "2.5, 3, APG η 0 β -0.5") and one column per label, holding
"accuracy / FID÷floor / FID÷reconstruction / diversity", in bold where all four targets are met:
accuracy >= 99.5 %, FID <= 2.5x the real floor and <= 1.5x the reconstruction ceiling, diversity >= 0.9.
The last column counts the sweeps that meet all four at that setting.

Sweeps evaluated with several classifiers (``evaluation.classifier_members=k``) show the mean figures,
then "m/k" for how many of the k classifiers, each on its own, read that run as meeting all four; the
last column then also gives the sum over runs of those member readings. This is how much of a
pass or a miss is the instrument (docs/experiments/classifier-share.md). ``--spread``
prints, instead, one row per setting and label with each figure's range over the classifiers.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

TARGETS = {"accuracy": 0.995, "fid_floor": 2.5, "fid_recon": 1.5, "diversity": 0.9}


def meets(row: dict[str, str]) -> bool:
    """All four quality targets at once, on the figures as printed (the rounding the table shows)."""
    return (
        round(float(row["eval/cond_acc"]), 3) >= TARGETS["accuracy"]
        and round(float(row["eval/fid_ratio"]), 2) <= TARGETS["fid_floor"]
        and round(float(row["eval/fid_recon_ratio"]), 2) <= TARGETS["fid_recon"]
        and round(float(row["eval/diversity"]), 3) >= TARGETS["diversity"]
    )


def member_readings(row: dict[str, str]) -> list[dict[str, str]]:
    """Each classifier's own figures of a several-classifier evaluation, under the keys :func:`meets` reads."""
    readings = []
    while f"eval/member{len(readings)}_cond_acc" in row:
        prefix = f"eval/member{len(readings)}_"
        keys = ("cond_acc", "fid_ratio", "fid_recon_ratio", "diversity")
        readings.append({f"eval/{k}": row[prefix + k] for k in keys})
    return readings


def cell(row: dict[str, str]) -> str:
    text = (
        f"{100 * float(row['eval/cond_acc']):.1f} % / {float(row['eval/fid_ratio']):.2f} / "
        f"{float(row['eval/fid_recon_ratio']):.2f} / {float(row['eval/diversity']):.3f}"
    )
    text = f"**{text}**" if meets(row) else text
    readings = member_readings(row)
    return f"{text} ({sum(map(meets, readings))}/{len(readings)})" if readings else text


def method(row: dict[str, str]) -> str:
    """The row label of a setting's method: empty for classifier-free guidance (and older sweeps), "APG η E β M"."""
    if row.get("guidance_method", "cfg") in ("cfg", ""):
        return ""
    return f"{row['guidance_method'].upper()} η {float(row['apg_eta']):g} β {float(row['apg_momentum']):g}"


def setting_label(key: tuple[str, float, float]) -> str:
    """A row's setting as printed: "s, w", then the method when it is not plain CFG."""
    name, s, w = key
    return f"{s:g}, {w:g}{', ' + name if name else ''}"


#: how a sweep point was sampled: under ``eval/`` in sweeps since 0.3.0, bare in earlier ones
SAMPLING_KEYS = ("guidance_method", "guidance_scale", "autoguidance_scale", "apg_eta", "apg_momentum", "sampler_kind")


def read_sweep(path: Path) -> dict[tuple[str, float, float], dict[str, str]]:
    """``(method, s, w) -> row`` of the sweep's finished points (failed points are left out, and said so)."""
    points = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("status") != "ok":
                print(f"<!-- {path}: job {row.get('job')} did not finish ({row.get('status')}) -->")
                continue
            row = {**row, **{key: row[f"eval/{key}"] for key in SAMPLING_KEYS if f"eval/{key}" in row}}
            points[(method(row), float(row["guidance_scale"]), float(row["autoguidance_scale"] or 1))] = row
    return points


def spread_row(row: dict[str, str]) -> str:
    """Each figure's lowest and highest reading over the classifiers, and how many read all four as met."""
    readings = member_readings(row)
    if not readings:
        return "– | – | – | – | one classifier"

    def span(key: str, fmt: str, scale: float = 1.0) -> str:
        values = [scale * float(r[key]) for r in readings]
        return f"{min(values):{fmt}}–{max(values):{fmt}}"

    return (
        f"{span('eval/cond_acc', '.1f', 100)} % | {span('eval/fid_ratio', '.2f')} | "
        f"{span('eval/fid_recon_ratio', '.2f')} | {span('eval/diversity', '.3f')} | "
        f"{sum(map(meets, readings))} of {len(readings)}"
    )


def print_spread(sweeps: dict[str, dict[tuple[str, float, float], dict[str, str]]]) -> None:
    print("| s, w | run | accuracy | FID ÷ floor | FID ÷ recon | diversity | classifiers reading all four met |")
    print("|---|---|---|---|---|---|---|")
    settings = sorted({key for points in sweeps.values() for key in points})
    for key in settings:
        for label, points in sweeps.items():
            if key in points:
                print(f"| {setting_label(key)} | {label} | {spread_row(points[key])} |")
    print()
    for key in settings:
        per_member: dict[int, list[bool]] = {}
        for points in sweeps.values():
            for i, reading in enumerate(member_readings(points.get(key, {}))):
                per_member.setdefault(i, []).append(meets(reading))
        counts = ", ".join(f"seed {i}: {sum(met)} of {len(met)}" for i, met in per_member.items())
        if counts:
            print(f"* {setting_label(key)}: runs meeting all four as read by classifier {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", metavar="LABEL=SUMMARY_CSV")
    parser.add_argument("--spread", action="store_true", help="each figure's range over the classifiers")
    args = parser.parse_args()
    sweeps = {}
    for item in args.sweeps:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            parser.error(f"{item!r}: expected LABEL=PATH/summary.csv with an existing file")
        sweeps.setdefault(label, {}).update(read_sweep(Path(path)))
    if args.spread:
        print_spread(sweeps)
        return
    settings = sorted({key for points in sweeps.values() for key in points})
    print(f"| s, w | {' | '.join(sweeps)} | all four met |")
    print(f"|---|{'---|' * len(sweeps)}---|")
    for key in settings:
        rows = [points.get(key) for points in sweeps.values()]
        met = sum(row is not None and meets(row) for row in rows)
        cells = " | ".join("–" if row is None else cell(row) for row in rows)
        readings = [m for row in rows if row is not None for m in member_readings(row)]
        by_member = f"; by one classifier {sum(map(meets, readings))} of {len(readings)}" if readings else ""
        print(f"| {setting_label(key)} | {cells} | {met} of {len(rows)}{by_member} |")


if __name__ == "__main__":
    main()

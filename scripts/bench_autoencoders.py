"""Stage-1 benchmark: train each autoencoder with the shipped defaults and print a table.

    python scripts/bench_autoencoders.py [--models ae vae vqvae] [--dataset mnist_5k] [-- extra overrides]

Each variant runs the real entry point (`train.py stage=autoencoder`) in its own process, one at
a time (two torch processes on a 2-core machine slow each other far more than 2x). Reports
held-out PSNR / SSIM (28x28, [0, 1] scale), VQ codebook usage and perplexity, training images/s
and wall time, as a Markdown table and JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"ae": 28.0, "vae": 27.0, "vqvae": 24.0}  # PSNR targets (dB) on held-out data


def run_variant(model: str, dataset: str, extra: list[str], workdir: Path) -> dict:
    run_dir = workdir / model
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "stage=autoencoder",
        f"model={model}",
        f"dataset={dataset}",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={workdir}/cache",
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    total = time.perf_counter() - start
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["process_seconds"] = total
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ae", "vae", "vqvae"])
    parser.add_argument("--dataset", default="mnist_5k")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            rows[model] = run_variant(model, args.dataset, args.overrides, Path(tmp))
            print(f"finished {model}: PSNR {rows[model].get('ae/val/psnr', float('nan')):.2f} dB", file=sys.stderr)

    print(f"\nStage-1 autoencoders on {args.dataset} (held-out split, 28x28, [0,1] scale)\n")
    print("| model | params | PSNR dB (target) | SSIM | codes used | perplexity | train img/s | fit wall s | epochs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, m in rows.items():
        usage = m.get("ae/val/codebook_usage")
        perplexity = m.get("ae/val/perplexity")
        print(
            f"| {model} | {m['ae/num_parameters'] / 1e6:.2f}M | {m['ae/val/psnr']:.2f} (≥ {TARGETS.get(model, 0):g}) "
            f"| {m['ae/val/ssim']:.3f} | {'-' if usage is None else f'{usage:.0%}'} "
            f"| {'-' if perplexity is None else f'{perplexity:.0f}'} | {m['ae/train_images_per_second']:.0f} "
            f"| {m['ae/wall_seconds']:.0f} | {m['ae/epochs']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

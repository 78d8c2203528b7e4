"""The docs' text-prompt figure: rows = classes, columns = attribute words, same noise along each row.

    python scripts/text_grid.py CKPT docs/images/text_prompts.png [--attributes thickness slant]
        [--per-cell 3] [--seed 0]

Each column asks every class with one word ("a thick 7"); column k of every cell group shares its initial
noise with the same slot in the other columns, so moving along a row changes only the words.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tinyldm.evaluation.text import prompt_grid
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.utils.images import save_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt")
    parser.add_argument("out")
    parser.add_argument("--attributes", nargs="+", default=["thickness", "slant"])
    parser.add_argument("--per-cell", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pipeline = LatentDiffusionPipeline.from_checkpoint(args.ckpt)
    if not pipeline.takes_prompts:
        raise SystemExit(f"{args.ckpt} is not a text-conditioned checkpoint (conditioner=text)")
    figure = prompt_grid(pipeline, args.attributes, args.per_cell, args.seed)
    print(save_png(figure, Path(args.out)))


if __name__ == "__main__":
    main()

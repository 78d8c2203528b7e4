"""The README's text-prompt figure: rows = classes, columns = attribute words, same noise along each row.

    python scripts/text_grid.py CKPT docs/text_prompts.png [--attributes thickness slant] [--per-cell 3] [--seed 0]

Each column asks every class with one word ("a thick 7"); column k of every cell group shares its initial
noise with the same slot in the other columns, so moving along a row changes only the words.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tinyldm.evaluation.text import grid_prompts
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.utils.images import captioned_grid, grid_uint8, save_png


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
    bank = pipeline.model.denoiser.conditioner.bank
    columns, prompts = grid_prompts(bank, args.attributes)
    cells = []
    for column in prompts:  # same seed per column: slot (class, k) starts from the same noise in every column
        asked = [prompt for prompt in column for _ in range(args.per_cell)]
        cells.append(pipeline.generate(asked, seed=args.seed).unflatten(0, (len(column), args.per_cell)))
    images = torch.stack(cells, dim=1).flatten(0, 2)  # (classes * columns * per_cell, 1, H, W), row = class
    grid = grid_uint8(images, nrow=len(columns) * args.per_cell, pad=int(pipeline.model.hparams.image_pad))
    rows = [column for column in prompts[0]]
    figure = captioned_grid(grid, rows, column_captions=columns)
    print(save_png(figure, Path(args.out)))


if __name__ == "__main__":
    main()

"""Inpainting masks: which pixels of a 28x28 image the model draws anew, and the latent cells that follow.

A mask is given in pixels, as the user sees the image (``mask=bottom_half``, ``box:x0,y0,x1,y1`` or a PNG);
stage 2 works on the latent grid, each cell of which covers ``f x f`` pixels of the padded image. A cell is
drawn anew when any of its pixels is, so the drawn region is the mask grown to whole cells; the padding
around the 28x28 content is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

#: the masks that have a name: the half of the image that is drawn anew
NAMED_MASKS = ("bottom_half", "top_half", "left_half", "right_half")
SIZE = 28


def parse_mask(spec: str, size: int = SIZE) -> np.ndarray:
    """``(size, size)`` bool, True where the model draws: a name in :data:`NAMED_MASKS`, ``box:x0,y0,x1,y1``
    (columns ``x0 <= x < x1``, rows ``y0 <= y < y1``, in pixels) or a ``size x size`` PNG (non-black: draw).

    A mask that draws nothing (the source as it is) or everything (plain sampling) is refused, as is any
    other value, each naming what is allowed.
    """
    allowed = f"one of {', '.join(NAMED_MASKS)}, box:x0,y0,x1,y1 or a {size}x{size} PNG file"
    spec = str(spec)
    mask = np.zeros((size, size), dtype=bool)
    half = size // 2
    if spec in NAMED_MASKS:
        rows, columns = {
            "bottom_half": (slice(half, None), slice(None)),
            "top_half": (slice(None, half), slice(None)),
            "left_half": (slice(None), slice(None, half)),
            "right_half": (slice(None), slice(half, None)),
        }[spec]
        mask[rows, columns] = True
    elif spec.startswith("box:"):
        try:
            x0, y0, x1, y1 = (int(v) for v in spec.removeprefix("box:").split(","))
        except ValueError:
            raise ValueError(f"mask={spec!r}: a box is box:x0,y0,x1,y1, four whole numbers") from None
        if not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
            raise ValueError(f"mask={spec!r}: a box needs 0 <= x0 < x1 <= {size} and 0 <= y0 < y1 <= {size}")
        mask[y0:y1, x0:x1] = True
    elif spec.lower().endswith(".png"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"mask={spec!r}: no such file ({allowed})")
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
        if pixels.shape != (size, size):
            raise ValueError(f"mask={spec!r} is {pixels.shape[1]}x{pixels.shape[0]} pixels; it must be {size}x{size}")
        mask = pixels > 0
    else:
        raise ValueError(f"mask={spec!r} is not {allowed}")
    if not mask.any():
        raise ValueError(f"mask={spec!r} draws nothing: the source would come back as it is")
    if mask.all():
        raise ValueError(f"mask={spec!r} draws everything: that is plain sampling (sample.py)")
    return mask


def latent_keep(draw: np.ndarray, pad: int, latent_size: int) -> torch.Tensor:
    """``(1, 1, h, w)`` float, 1 on the latent cells kept from the source, 0 on those drawn anew.

    ``draw`` is a pixel mask of the unpadded image; the padded image is ``latent_size * f`` pixels wide, and
    a cell is drawn when any of its ``f x f`` pixels is (max-pooling).
    """
    drawn = torch.from_numpy(np.pad(draw, pad, constant_values=False)).float()[None, None]  # (1, 1, S, S)
    if drawn.shape[-1] % latent_size:
        raise ValueError(f"a {drawn.shape[-1]}-pixel image does not map onto a {latent_size}-cell latent grid")
    factor = drawn.shape[-1] // latent_size
    return 1.0 - torch.nn.functional.max_pool2d(drawn, factor)  # (1, 1, h, w)

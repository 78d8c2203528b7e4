"""Image conversions: the model works in [-1, 1] floats; people and loggers want uint8.

Float images in [0, 1] are rendered black by some loggers (W&B), so everything leaving the
model for a file or a dashboard goes through :func:`to_uint8` first.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from tinyldm.utils.files import write_bytes


def crop(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Remove ``pad`` pixels of border: (B, C, H, W) -> (B, C, H - 2 pad, W - 2 pad)."""
    if pad <= 0:
        return images
    return images[..., pad:-pad, pad:-pad]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (samples can overshoot)."""
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


#: the background of the data after scaling to [-1, 1] (black), which pads 28x28 images to 32x32
BACKGROUND = -1.0


def from_uint8(images: np.ndarray, pad: int = 0) -> torch.Tensor:
    """uint8 ``(N, H, W)`` -> float32 ``(N, 1, H + 2 pad, W + 2 pad)`` in [-1, 1], padded with background:
    the inverse of :func:`to_uint8`, and how the data were stored."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float()  # (N, H, W)
    x = x.div(127.5).sub(1.0).unsqueeze(1)  # (N, 1, H, W)
    if pad:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=BACKGROUND)  # (N, 1, H + 2 pad, W + 2 pad)
    return x


def to_uint8(images: torch.Tensor, pad: int = 0) -> np.ndarray:
    """(B, 1, H, W) floats in [-1, 1] -> (B, H - 2 pad, W - 2 pad) uint8 array."""
    unit = to_unit(crop(images.detach().cpu(), pad))
    return (unit * 255.0).round().to(torch.uint8)[:, 0].numpy()


def grid_uint8(images: torch.Tensor, nrow: int, pad: int = 0) -> np.ndarray:
    """(B, 1, H, W) in [-1, 1] -> one (H', W', 3) uint8 grid image, ``nrow`` images per row."""
    unit = to_unit(crop(images.detach().cpu(), pad))
    grid = make_grid(unit, nrow=nrow, padding=2, pad_value=1.0)  # (3, H', W')
    return (grid * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def captioned_grid(
    grid: np.ndarray, captions: list[str], scale: int = 2, column_captions: list[str] | None = None
) -> np.ndarray:
    """A :func:`grid_uint8` (H', W', 3) with a caption left of each row (and above each column), enlarged.

    Text-conditioned samples mean little without the prompt that asked for them; PIL's built-in font
    keeps this offline and dependency-free.
    """
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    font = ImageFont.load_default(size=10 * scale)
    measure = ImageDraw.Draw(image)
    margin = 8 * scale + max((int(measure.textlength(c, font=font)) for c in captions), default=0)
    header = 16 * scale if column_captions else 0
    out = Image.new("RGB", (image.width + margin, image.height + header), "white")
    out.paste(image, (margin, header))
    draw = ImageDraw.Draw(out)
    row_height = image.height / max(len(captions), 1)
    for row, caption in enumerate(captions):
        draw.text((4 * scale, header + (row + 0.5) * row_height), caption, fill="black", font=font, anchor="lm")
    for column, caption in enumerate(column_captions or []):
        x = margin + (column + 0.5) * image.width / len(column_captions)
        draw.text((x, header / 2), caption, fill="black", font=font, anchor="mm")
    return np.asarray(out)


def png_bytes(array: np.ndarray) -> bytes:
    """An (H, W[, 3]) uint8 array encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W[, 3]) uint8 array as a PNG, atomically."""
    return write_bytes(path, png_bytes(array))

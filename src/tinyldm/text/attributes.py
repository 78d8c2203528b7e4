"""Drawing attributes measured on the image itself: stroke thickness, slant, size and brightness.

Text prompts say *how* a digit is drawn ("a thick seven slanted left"). The words come from measurements
of each training image, and the same functions later score generated samples (does the sample have the
attribute its prompt asked for?). That double use sets the requirements:

* deterministic and label-free, so a sample is judged exactly like the training image it imitates;
* robust to what samples look like (faint haze, an empty canvas, overshoot past [-1, 1]): every division
  is guarded and every measure returns a finite number;
* cheap: plain vectorised torch on whole batches, so 70k images of 32x32 take a few seconds on a CPU.

A measure maps ink ``(N, H, W)`` in [0, 1] to one float per image. Words come from bins, not from fixed
cut-offs: :func:`fit_thresholds` puts the bin edges at the 1/3 and 2/3 quantiles of the training set, so
each word covers about a third of the images whatever the dataset (MNIST strokes, Fashion-MNIST garments)
and whatever the unit of the measure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ATTRIBUTES", "Attribute", "check_names", "fit_thresholds", "ink", "measure", "to_bins"]

_OBJECT_INK = 0.1  # brightness: pixels above this are part of the object; fainter ones are haze or background
_SHAPE_INK = 0.5  # size: pixels above this count for the bounding box (half ink: the stroke's drawn edge)
_SIZE_TRIM = 0.02  # size: each side of the box drops rows/columns holding at most this share of the shape's pixels
_MIN_HEIGHT_VAR = 1.0  # slant: floor of the vertical variance (px^2), so flat shapes do not divide by ~0
_CHUNK = 4096  # images per chunk in measure(): about 4 MB of float32 per (chunk, 32, 32) temporary
_MAX_QUANTILE_ROWS = 1 << 20  # fit_thresholds(): torch.quantile refuses inputs above 2**24 elements


@dataclass(frozen=True)
class Attribute:
    """One measurable property and the three words for its low, middle and high bin."""

    name: str
    words: tuple[str, str, str]  # low, middle, high bin
    measure: Callable[[Tensor], Tensor]  # ink (N, H, W) float in [0, 1] -> (N,) float32
    description: str  # one line: what is measured and how


def ink(images: Tensor) -> Tensor:
    """Images in the data convention -> ink ``(N, H, W)`` float32 in [0, 1] (0 background, 1 full ink).

    Float images are model space, [-1, 1] with -1 the background; uint8 images are raw pixels in [0, 255].
    Floats are clamped because samples overshoot, and an overshoot must not count as extra ink.
    """
    if images.dim() == 4:
        if images.shape[1] != 1:
            raise ValueError(f"expected one channel, got images of shape {tuple(images.shape)}")
        images = images[:, 0]  # (N, H, W)
    elif images.dim() != 3:
        raise ValueError(f"expected images of shape (N, 1, H, W) or (N, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0  # (N, H, W)
    if images.is_floating_point():
        return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)  # (N, H, W)
    raise TypeError(f"expected float images in [-1, 1] or uint8 images in [0, 255], got dtype {images.dtype}")


# --------------------------------------------------------------------------- measures


def _thickness(x: Tensor) -> Tensor:
    """Mean stroke width in pixels: ``2 * sum(ink) / sum(|grad ink|)``.

    A stroke of width w and length l holds ink w * l, and its two long edges add up to about 2 l of
    gradient magnitude (any soft edge that rises from 0 to the stroke's level and falls back contributes
    twice that level per unit of length). The ratio is therefore w, whatever the stroke's path, its
    antialiasing or its brightness: a dim stroke has less ink and proportionally weaker edges, so thickness
    does not echo brightness. The end caps add 2 w of edge, so short strokes read a little thin
    (w * l / (l + w)); that bias is shared by the training images and the samples scored against them.

    Forward differences on the image padded with background, so edges on the border count too.
    """
    padded = F.pad(x, (1, 1, 1, 1))  # (N, H + 2, W + 2), zero ink outside the frame
    dx = padded[:, :-1, 1:] - padded[:, :-1, :-1]  # (N, H + 1, W + 1)
    dy = padded[:, 1:, :-1] - padded[:, :-1, :-1]  # (N, H + 1, W + 1), same anchor pixel as dx
    edge = torch.sqrt(dx * dx + dy * dy).sum(dim=(1, 2))  # (N,)
    mass = x.sum(dim=(1, 2))  # (N,)
    return torch.where(edge > 1e-6, 2.0 * mass / edge.clamp_min(1e-6), torch.zeros_like(mass))  # (N,)


def _slant(x: Tensor) -> Tensor:
    """Horizontal shear per unit of height, ``-mu11 / mu02`` of the ink distribution; > 0 leans right.

    The second-order central moments fit a line x = a + b y through the ink by least squares, and its
    slope is b = mu11 / mu02. Image rows grow downwards, so a digit whose top leans right has x falling
    as y grows (mu11 < 0): the sign is flipped to make "slanted right" positive. Shear is unitless, so
    it does not depend on the image size. The vertical variance is floored at one pixel^2: a flat shape
    (a dash, an empty canvas) then reads as upright instead of dividing by ~0.
    """
    _, h, w = x.shape
    mass = x.sum(dim=(1, 2)).clamp_min(1e-6)  # (N,)
    ys = torch.arange(h, dtype=x.dtype, device=x.device)  # (H,)
    xs = torch.arange(w, dtype=x.dtype, device=x.device)  # (W,)
    rows, cols = x.sum(dim=2), x.sum(dim=1)  # (N, H), (N, W): the ink's marginals
    my = (rows * ys).sum(dim=1) / mass  # (N,)
    mx = (cols * xs).sum(dim=1) / mass  # (N,)
    cy = ys[None, :] - my[:, None]  # (N, H), centred row coordinates
    cx = xs[None, :] - mx[:, None]  # (N, W), centred column coordinates
    mu02 = (rows * cy * cy).sum(dim=1) / mass  # (N,), variance of y
    mu11 = torch.einsum("nhw,nh,nw->n", x, cy, cx) / mass  # (N,), covariance of x and y
    return -mu11 / mu02.clamp_min(_MIN_HEIGHT_VAR)  # (N,)


def _extent(counts: Tensor) -> Tensor:
    """Length of the span of ``counts`` (N, L) left after trimming up to ``_SIZE_TRIM`` of the mass per end."""
    length = counts.shape[1]
    cut = _SIZE_TRIM * counts.sum(dim=1, keepdim=True)  # (N, 1)
    # Leading (trailing) entries whose running total stays within the cut are dropped: the empty margin,
    # plus a speck or two far from the shape. With nothing drawn both ends drop everything -> clamped to 0.
    head = (counts.cumsum(dim=1) <= cut).sum(dim=1)  # (N,)
    tail = (counts.flip(1).cumsum(dim=1) <= cut).sum(dim=1)  # (N,)
    return (length - head - tail).clamp_min(0).float()  # (N,)


def _size(x: Tensor) -> Tensor:
    """Geometric mean ``sqrt(height * width)`` in pixels of the box around the pixels with ink > 0.5.

    The bounding box is what a reader means by "a large seven": how much of the frame the drawing spans,
    not how much ink it uses (that is thickness). The geometric mean lets a tall narrow "1" and a wide "0"
    of the same area compare. Each side of the box is trimmed of rows/columns holding at most 2% of the
    shape's pixels, so an isolated speck in a generated sample does not stretch the box to the corner.
    An empty image has size 0.
    """
    shape = (x > _SHAPE_INK).float()  # (N, H, W)
    height = _extent(shape.sum(dim=2))  # (N,) from row counts (N, H)
    width = _extent(shape.sum(dim=1))  # (N,) from column counts (N, W)
    return torch.sqrt(height * width)  # (N,)


def _brightness(x: Tensor) -> Tensor:
    """Mean ink over the object's pixels (ink > 0.1); 0 when there are none.

    Averaging only over the object makes brightness the stroke's intensity, independent of how much of
    the frame the object covers; the 0.1 floor keeps background haze of samples out of the average.
    """
    obj = x > _OBJECT_INK  # (N, H, W)
    count = obj.sum(dim=(1, 2))  # (N,)
    total = torch.where(obj, x, torch.zeros_like(x)).sum(dim=(1, 2))  # (N,)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))  # (N,)


ATTRIBUTES: dict[str, Attribute] = {
    a.name: a
    for a in (
        Attribute(
            "thickness",
            ("thin", "regular", "thick"),
            _thickness,
            "mean stroke width in px: 2 * total ink / total gradient magnitude (forward differences)",
        ),
        Attribute(
            "slant",
            ("slanted left", "upright", "slanted right"),
            _slant,
            "x shear per unit of height from the ink's central moments, -mu11 / mu02 (> 0: top leans right)",
        ),
        Attribute(
            "size",
            ("small", "medium", "large"),
            _size,
            "sqrt(height * width) in px of the bounding box of pixels with ink > 0.5, 2% trimmed per side",
        ),
        Attribute(
            "brightness",
            ("dark", "grey", "bright"),
            _brightness,
            "mean ink in [0, 1] over the object's pixels (ink > 0.1)",
        ),
    )
}


# --------------------------------------------------------------------------- batch API


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validate attribute names early (configs, prompt banks) and return them as a tuple.

    A bare string is refused: ``"size"`` is a sequence of one-letter names, never what was meant.
    """
    allowed = ", ".join(repr(n) for n in ATTRIBUTES)
    if isinstance(names, str):
        raise ValueError(f"attribute names must be a list of names, not the string {names!r}; allowed: {allowed}")
    names = tuple(names)
    if not names:
        raise ValueError(f"no attribute names given; allowed: {allowed}")
    unknown = [n for n in names if n not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"unknown attribute name(s) {', '.join(repr(n) for n in unknown)}; allowed: {allowed}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate attribute name(s) {', '.join(repr(n) for n in duplicates)}; allowed: {allowed}")
    return names


@torch.no_grad()
def measure(images: Tensor, names: Sequence[str], *, chunk_size: int = _CHUNK) -> Tensor:
    """Measure the named attributes: images (N, 1, H, W) or (N, H, W) -> ``(N, A)`` float32, columns as ``names``.

    Images are converted to ink chunk by chunk, so a uint8 training set of 70k images never exists as a
    float copy with all its temporaries at once. Each image's values depend only on that image, so the
    result does not depend on ``chunk_size``. The result lives on the images' device.
    """
    names = check_names(names)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if images.dim() not in (3, 4):
        raise ValueError(f"expected images of shape (N, 1, H, W) or (N, H, W), got {tuple(images.shape)}")
    out = torch.empty(images.shape[0], len(names), dtype=torch.float32, device=images.device)  # (N, A)
    for start in range(0, images.shape[0], chunk_size):
        x = ink(images[start : start + chunk_size])  # (n, H, W)
        for column, name in enumerate(names):
            out[start : start + x.shape[0], column] = ATTRIBUTES[name].measure(x)  # (n,)
    return out


def fit_thresholds(values: Tensor) -> Tensor:
    """Bin edges per attribute: ``(N, A)`` values -> ``(A, 2)`` float32, the 1/3 and 2/3 quantiles per column.

    Quantile edges give each word about a third of the training images. torch.quantile refuses inputs
    above 2**24 elements, so each column is read on its own, and a column longer than 2**20 values is
    thinned to 2**20 evenly spaced rows: deterministic, spread over the whole set (also when it is ordered
    by label), and far more values than two quantiles need.
    """
    if values.dim() != 2 or values.shape[0] == 0:
        raise ValueError(f"expected values of shape (N, A) with N >= 1, got {tuple(values.shape)}")
    values = values.float()
    n = values.shape[0]
    if n > _MAX_QUANTILE_ROWS:
        rows = torch.linspace(0, n - 1, _MAX_QUANTILE_ROWS, device=values.device).round().long()  # (M,)
        values = values[rows]  # (M, A)
    q = torch.tensor([1.0 / 3.0, 2.0 / 3.0], dtype=torch.float32, device=values.device)  # (2,)
    return torch.stack([torch.quantile(values[:, a], q) for a in range(values.shape[1])])  # (A, 2)


def to_bins(values: Tensor, thresholds: Tensor) -> Tensor:
    """Bin each value: ``(N, A)`` -> ``(N, A)`` long, 0 below the first edge, 1 between, 2 at/above the second.

    Both edges are inclusive on their upper side (``value >= edge`` moves it up), so a value equal to a
    quantile lands in the higher bin, and equal edges (a column with many ties) leave the middle bin empty.
    """
    if values.dim() != 2 or thresholds.shape != (values.shape[1], 2):
        raise ValueError(
            f"expected values (N, A) and thresholds (A, 2), got {tuple(values.shape)} and {tuple(thresholds.shape)}"
        )
    thresholds = thresholds.to(device=values.device, dtype=torch.float32)  # (A, 2)
    if bool((thresholds[:, 0] > thresholds[:, 1]).any()):
        raise ValueError(f"thresholds must be ascending per attribute, got {thresholds.tolist()}")
    values = values.float()  # (N, A)
    low = (values >= thresholds[None, :, 0]).long()  # (N, A)
    high = (values >= thresholds[None, :, 1]).long()  # (N, A)
    return low + high  # (N, A) in {0, 1, 2}

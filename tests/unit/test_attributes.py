"""Tests for the drawing attributes: each measure on synthetic strokes whose answer is known by construction.

Images are 32x32 in the data convention ([-1, 1], -1 background) and drawn here: a stroke is a run of
rows whose ink is a 1-pixel linear ramp around a centre line, so widths and leans are exact and
fractional positions come out antialiased like real digits.
"""

from __future__ import annotations

import math

import pytest
import torch

from tinyldm.text.attributes import ATTRIBUTES, Attribute, check_names, fit_thresholds, ink, measure, to_bins

S = 32  # image side
NAMES = ("thickness", "slant", "size", "brightness")


def _stroke(
    width: float = 2.0,
    top_x: float = 15.5,
    bottom_x: float = 15.5,
    top: int = 6,
    bottom: int = 26,
    level: float = 1.0,
) -> torch.Tensor:
    """One straight stroke as ink (S, S) in [0, 1]: rows ``top..bottom - 1``, centre moving from top_x to bottom_x.

    Pixel (y, x) gets ``level * clamp(width / 2 + 1/2 - |x - centre(y)|, 0, 1)``: exactly ``width`` pixels of
    full ink per row when the centre sits on a pixel centre (odd width) or between two (even width).
    """
    x = torch.zeros(S, S)  # (S, S)
    cols = torch.arange(S, dtype=torch.float32)  # (S,)
    for y in range(top, bottom):
        t = (y - top) / max(bottom - 1 - top, 1)
        centre = top_x + t * (bottom_x - top_x)
        x[y] = level * (width / 2 + 0.5 - (cols - centre).abs()).clamp(0.0, 1.0)
    return x


def _outline(side: int, width: int = 2) -> torch.Tensor:
    """A centred square outline as ink (S, S): ``side`` pixels across, ``width`` pixels thick."""
    x = torch.zeros(S, S)  # (S, S)
    a = (S - side) // 2
    b = a + side
    x[a:b, a:b] = 1.0
    x[a + width : b - width, a + width : b - width] = 0.0
    return x


def _images(*inks: torch.Tensor) -> torch.Tensor:
    """Ink (S, S) each -> a batch (N, 1, S, S) in [-1, 1], the model's data convention."""
    return torch.stack(inks)[:, None] * 2.0 - 1.0  # (N, 1, S, S)


def _column(images: torch.Tensor, name: str) -> torch.Tensor:
    return measure(images, [name])[:, 0]  # (N,)


# --------------------------------------------------------------------------- ink and the registry


def test_registry_names_words_and_types():
    assert list(ATTRIBUTES) == list(NAMES)
    assert ATTRIBUTES["thickness"].words == ("thin", "regular", "thick")
    assert ATTRIBUTES["slant"].words == ("slanted left", "upright", "slanted right")
    assert ATTRIBUTES["size"].words == ("small", "medium", "large")
    assert ATTRIBUTES["brightness"].words == ("dark", "grey", "bright")
    x = ink(_images(_stroke(), _outline(12)))  # (2, S, S)
    for name, attribute in ATTRIBUTES.items():
        assert isinstance(attribute, Attribute) and attribute.name == name and attribute.description
        out = attribute.measure(x)
        assert out.shape == (2,) and out.dtype == torch.float32


def test_ink_conventions_and_shapes():
    floats = torch.tensor([[[-1.0, 0.0], [1.0, 1.5]]])  # (1, 2, 2); 1.5 overshoots like a sample can
    assert torch.equal(ink(floats), torch.tensor([[[0.0, 0.5], [1.0, 1.0]]]))
    assert torch.equal(ink(floats[:, None]), ink(floats))  # (N, 1, H, W) and (N, H, W) alike
    raw = torch.tensor([[[0, 51], [255, 102]]], dtype=torch.uint8)  # (1, 2, 2)
    assert torch.allclose(ink(raw), torch.tensor([[[0.0, 0.2], [1.0, 0.4]]]))
    assert ink(raw).dtype == torch.float32
    with pytest.raises(ValueError, match="one channel"):
        ink(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        ink(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="dtype"):
        ink(torch.zeros(1, 4, 4, dtype=torch.int64))


# --------------------------------------------------------------------------- the measures


def test_thickness_increases_with_stroke_width():
    images = _images(*(_stroke(width=w, top_x=15.5 + (w % 2) / 2, bottom_x=15.5 + (w % 2) / 2) for w in (1, 2, 3, 4)))
    thickness = _column(images, "thickness")  # (4,)
    assert bool((thickness.diff() > 0.5).all()), thickness
    # A width-w stroke of length l = 20 reads w * l / (l + w): the end caps are edge too.
    expected = torch.tensor([w * 20 / (20 + w) for w in (1, 2, 3, 4)])
    assert torch.allclose(thickness, expected, atol=0.05), thickness


def test_thickness_ignores_brightness_and_position():
    base = _stroke(width=3, top_x=15.0, bottom_x=15.0)
    dim = _stroke(width=3, top_x=15.0, bottom_x=15.0, level=0.4)
    shifted = _stroke(width=3, top_x=5.0, bottom_x=5.0)
    thickness = _column(_images(base, dim, shifted), "thickness")
    assert torch.allclose(thickness, thickness[:1].expand(3), atol=1e-4), thickness


def test_slant_sign_and_order():
    left = _stroke(width=2, top_x=10.0, bottom_x=20.0)  # top of the stroke to the left
    upright = _stroke(width=2)
    right = _stroke(width=2, top_x=20.0, bottom_x=10.0)  # top of the stroke to the right
    slightly_right = _stroke(width=2, top_x=17.5, bottom_x=13.5)
    slant = _column(_images(left, upright, slightly_right, right), "slant")  # (4,)
    assert slant[0] < 0.0 < slant[2] < slant[3], slant
    assert abs(slant[1].item()) < 1e-4, slant
    # A straight stroke's moments recover its shear: 10 px across 19 px of height, 4 px for the slight one.
    assert math.isclose(slant[3].item(), 10 / 19, rel_tol=0.03), slant
    assert math.isclose(slant[2].item(), 4 / 19, rel_tol=0.03), slant
    assert math.isclose(slant[0].item(), -slant[3].item(), rel_tol=1e-4), slant


def test_slant_of_a_flat_shape_is_finite():
    dash = torch.zeros(S, S)
    dash[16, 4:28] = 1.0  # one row: no height to shear over
    slant = _column(_images(dash), "slant")
    assert torch.isfinite(slant).all() and abs(slant.item()) < 1e-4, slant


def test_size_increases_with_extent_and_ignores_specks():
    small, large = _outline(8), _outline(24)
    size = _column(_images(small, large), "size")
    assert torch.allclose(size, torch.tensor([8.0, 24.0])), size
    rectangle = torch.zeros(S, S)
    rectangle[4:28, 12:18] = 1.0  # 24 tall, 6 wide
    assert math.isclose(_column(_images(rectangle), "size").item(), 12.0, rel_tol=1e-5)
    specked = large.clone()
    specked[0, 0] = 1.0  # one stray pixel in the corner of a sample
    assert math.isclose(_column(_images(specked), "size").item(), 24.0, rel_tol=1e-5)
    faint = small.clone()
    faint[faint == 0] = 0.3  # haze below half ink does not count as drawing
    assert math.isclose(_column(_images(faint), "size").item(), 8.0, rel_tol=1e-5)


def test_brightness_increases_with_stroke_level():
    levels = (0.3, 0.6, 1.0)
    brightness = _column(_images(*(_stroke(width=2, level=v) for v in levels)), "brightness")
    assert bool((brightness.diff() > 0.2).all()), brightness
    assert torch.allclose(brightness, torch.tensor(levels), atol=1e-5), brightness


def test_empty_image_gives_finite_zeros():
    empty = -torch.ones(2, 1, S, S)  # all background
    values = measure(empty, NAMES)
    assert values.shape == (2, 4) and values.dtype == torch.float32
    assert torch.equal(values, torch.zeros(2, 4)), values


def test_uint8_and_float_inputs_agree():
    strokes = [_stroke(width=w, top_x=12.3, bottom_x=18.9, level=v) for w, v in ((1.5, 0.7), (3.2, 1.0))]
    floats = _images(*strokes, _outline(14))  # (3, 1, S, S) in [-1, 1]
    raw = ((floats[:, 0] + 1.0) * 127.5).round().to(torch.uint8)  # (3, S, S), the pixels a dataset stores
    from_raw = raw.float() / 127.5 - 1.0  # (3, S, S), how the data module scales them
    torch.testing.assert_close(measure(raw, NAMES), measure(from_raw, NAMES))


def test_background_padding_does_not_change_measurements():
    # Training images are padded 28 -> 32 with background; evaluation measures samples cropped back to 28.
    floats = _images(_stroke(width=2.5, top_x=12.0, bottom_x=19.0, top=3, bottom=29, level=0.8), _outline(20))
    cropped = floats[..., 2:-2, 2:-2]  # (2, 1, 28, 28): only background removed
    torch.testing.assert_close(measure(cropped, NAMES), measure(floats, NAMES))


def test_measure_columns_follow_names_and_chunking_does_not_matter():
    gen = torch.Generator().manual_seed(0)
    strokes = [
        _stroke(
            width=1 + 3 * torch.rand(1, generator=gen).item(),
            top_x=8 + 16 * torch.rand(1, generator=gen).item(),
            bottom_x=8 + 16 * torch.rand(1, generator=gen).item(),
            level=0.3 + 0.7 * torch.rand(1, generator=gen).item(),
        )
        for _ in range(9)
    ]
    images = _images(*strokes, _outline(10), torch.zeros(S, S))  # (11, 1, S, S), the last one blank
    whole = measure(images, NAMES)  # (11, 4)
    assert whole.shape == (11, 4)
    torch.testing.assert_close(measure(images, NAMES, chunk_size=4), whole)
    one_by_one = torch.cat([measure(images[i : i + 1], NAMES) for i in range(len(images))])  # (11, 4)
    torch.testing.assert_close(one_by_one, whole)
    torch.testing.assert_close(measure(images, ["size", "thickness"]), whole[:, [2, 0]])
    with pytest.raises(ValueError, match="chunk_size"):
        measure(images, NAMES, chunk_size=0)


# --------------------------------------------------------------------------- thresholds and bins


def test_fit_thresholds_and_bins_split_in_thirds():
    gen = torch.Generator().manual_seed(1)
    values = torch.cat([torch.rand(3000, 1, generator=gen), 5.0 * torch.randn(3000, 1, generator=gen)], dim=1)
    thresholds = fit_thresholds(values)  # (2, 2)
    assert thresholds.shape == (2, 2) and thresholds.dtype == torch.float32
    assert math.isclose(thresholds[0, 0].item(), 1 / 3, abs_tol=0.03)
    assert math.isclose(thresholds[0, 1].item(), 2 / 3, abs_tol=0.03)
    bins = to_bins(values, thresholds)  # (3000, 2)
    assert bins.dtype == torch.long and bins.shape == values.shape
    for column in range(2):
        counts = torch.bincount(bins[:, column], minlength=3)
        assert counts.tolist() == pytest.approx([1000, 1000, 1000], abs=2), counts


def test_fit_thresholds_subsamples_long_columns_deterministically(monkeypatch):
    import tinyldm.text.attributes as attributes

    monkeypatch.setattr(attributes, "_MAX_QUANTILE_ROWS", 1000)  # as if N were past torch.quantile's limit
    sizes = []
    quantile = torch.quantile

    def _recording_quantile(input, *args, **kwargs):
        sizes.append(input.numel())
        return quantile(input, *args, **kwargs)

    monkeypatch.setattr(torch, "quantile", _recording_quantile)
    values = torch.arange(6000, dtype=torch.float32)[:, None]  # (6000, 1), sorted: a thinned head would show
    thresholds = fit_thresholds(values)
    assert sizes == [1000]
    assert torch.allclose(thresholds, torch.tensor([[2000.0, 4000.0]]), rtol=2e-3), thresholds
    assert torch.equal(fit_thresholds(values), thresholds)
    with pytest.raises(ValueError, match="shape"):
        fit_thresholds(torch.zeros(0, 2))


def test_to_bins_edges():
    thresholds = torch.tensor([[1.0, 2.0], [0.0, 0.0]])  # second attribute: tied edges
    values = torch.tensor([[0.999, -1.0], [1.0, 0.0], [1.5, 1e-6], [2.0, -1e-6], [7.0, 5.0]])  # (5, 2)
    assert to_bins(values, thresholds).tolist() == [[0, 0], [1, 2], [1, 2], [2, 0], [2, 2]]
    with pytest.raises(ValueError, match="ascending"):
        to_bins(values, torch.tensor([[2.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="thresholds"):
        to_bins(values, torch.zeros(3, 2))


# --------------------------------------------------------------------------- names


def test_check_names_accepts_and_refuses():
    assert check_names(["slant", "size"]) == ("slant", "size")
    assert check_names(NAMES) == NAMES
    with pytest.raises(ValueError, match=r"'colour'.*allowed: 'thickness', 'slant', 'size', 'brightness'"):
        check_names(["size", "colour"])
    with pytest.raises(ValueError, match=r"no attribute names.*allowed"):
        check_names([])
    with pytest.raises(ValueError, match=r"duplicate.*'size'"):
        check_names(["size", "slant", "size"])
    with pytest.raises(ValueError, match=r"string 'size'"):
        check_names("size")
    with pytest.raises(ValueError, match="'colour'"):
        measure(torch.zeros(1, S, S), ["colour"])

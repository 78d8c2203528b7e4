"""Which device an entry point runs on: the one place ``device=auto|cpu|cuda`` is checked and resolved."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: object) -> torch.device:
    """``auto`` is CUDA when there is one, else the CPU; anything but :data:`DEVICE_CHOICES` is refused."""
    if name not in DEVICE_CHOICES:
        raise ValueError(f"device={name!r} is not one of {list(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(str(name))

"""Conditioners turn class labels into the context tokens the UNet cross-attends to."""

from .class_tokens import ClassConditioner
from .null import NullConditioner

__all__ = ["ClassConditioner", "NullConditioner"]

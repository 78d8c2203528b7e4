"""Conditioners turn class labels or text prompts into the context tokens the UNet cross-attends to."""

from .class_tokens import ClassConditioner
from .null import NullConditioner
from .text_prompts import TextConditioner

__all__ = ["ClassConditioner", "NullConditioner", "TextConditioner"]

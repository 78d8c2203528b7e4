"""The prompt bank: how a class and measured attribute bins become words, and what training never says.

Every training image is described by its class and its attribute bins (thickness, slant, size, ...,
measured on the image by :mod:`tinyldm.text.attributes`). Each time the image is drawn into a batch,
:meth:`PromptBank.training_prompts` picks a fresh phrasing: a random subset of its attributes in a
random order, a random way of naming the class ("7", "seven", "digit 7", "number seven"), and a random
template ("a thick 7", "seven, thick, slanted left", "digit 7 that is thick and upright"). A prompt
therefore never says more than the image shows, and the text encoder sees many phrasings of one fact.

Two things are held out of training to measure generalisation:

* **phrasings**: :data:`HELD_OUT_TEMPLATES` re-order words the model has seen ("the thick 7",
  "a 7 that is thin", "thick, slanted left, 7") but never in that arrangement;
* **combinations**: ``held_out`` pairs of a class and an attribute word ("7:thick"): a thick seven is
  still in the training data, but its prompts never mention its thickness, although "thick" (with
  other classes) and "7" (with other attributes) are both seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tinyldm.text.attributes import ATTRIBUTES, check_names

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: the ways each class may be named, per vocabulary; the first is the canonical, class-only prompt
CLASS_FORMS: dict[str, tuple[tuple[str, ...], ...]] = {
    "digits": tuple((str(d), word, f"digit {d}", f"number {word}") for d, word in enumerate(DIGIT_WORDS)),
    "fashion": (
        ("t-shirt", "top"),
        ("trousers", "pants"),
        ("pullover", "sweater"),
        ("dress",),
        ("coat", "jacket"),
        ("sandal",),
        ("shirt",),
        ("sneaker", "trainer"),
        ("bag", "handbag"),
        ("ankle boot", "boot"),
    ),
}

# {adj}: attribute words before the class; {list}: after it, comma-separated; {and}: after "that is", "and"-joined
TRAIN_TEMPLATES = ("a {adj} {cls}", "{adj} {cls}", "{cls}, {list}", "{cls} that is {and}")
#: class-only prompts (no attribute mentioned); they also put "a" and "the" into the vocabulary
CLASS_ONLY_TEMPLATES = ("{cls}", "a {cls}", "the {cls}")
#: seen words in arrangements training never uses
HELD_OUT_TEMPLATES = ("the {adj} {cls}", "a {cls} that is {and}", "{list}, {cls}")


def render(template: str, class_form: str, words: Sequence[str]) -> str:
    """Fill ``template`` with a class name and attribute words (in the given order)."""
    return template.format(cls=class_form, adj=" ".join(words), list=", ".join(words), **{"and": " and ".join(words)})


@dataclass(frozen=True)
class Request:
    """What a prompt asks for: a class, and a bin (0, 1, 2) per named attribute; -1 = not asked."""

    prompt: str
    label: int
    bins: tuple[int, ...]


class PromptBank:
    """Prompts for one dataset's classes and attributes, with phrasings and combinations held out.

    Args:
        vocabulary: ``digits`` or ``fashion``: how the classes are named (:data:`CLASS_FORMS`).
        attributes: the measured attributes the prompts may mention, in the order of the
            condition columns (e.g. ``[thickness, slant, size]``).
        held_out: ``"CLASS:WORD"`` pairs never said in training, e.g. ``"7:thick"``; ``CLASS`` is
            the class index and ``WORD`` one of the attributes' bin words.
    """

    def __init__(self, vocabulary: str, attributes: Sequence[str], held_out: Sequence[str] = ()) -> None:
        if vocabulary not in CLASS_FORMS:
            raise ValueError(f"conditioner.vocabulary={vocabulary!r} is not one of {sorted(CLASS_FORMS)}")
        self.vocabulary = vocabulary
        self.class_forms = CLASS_FORMS[vocabulary]
        self.attributes = check_names(attributes)
        self.words = tuple(ATTRIBUTES[name].words for name in self.attributes)  # (A, 3) words per bin
        self.held_out = frozenset(self._parse_held_out(held_out))  # {(class, attribute index, bin)}

    @property
    def num_classes(self) -> int:
        return len(self.class_forms)

    def _parse_held_out(self, pairs: Sequence[str]) -> Iterator[tuple[int, int, int]]:
        allowed = sorted({word for words in self.words for word in words})
        for pair in pairs:
            label, _, word = str(pair).partition(":")
            if not label.strip().isdigit() or not 0 <= int(label) < self.num_classes:
                raise ValueError(
                    f"conditioner.held_out entry {pair!r}: the class before ':' must be an index in "
                    f"[0, {self.num_classes})"
                )
            found = [(a, b) for a, words in enumerate(self.words) for b, w in enumerate(words) if w == word.strip()]
            if not found:
                raise ValueError(f"conditioner.held_out entry {pair!r}: {word.strip()!r} is not one of {allowed}")
            yield int(label), *found[0]

    # ------------------------------------------------------------------ training
    def training_prompts(self, conditions: Tensor, generator: torch.Generator | None = None) -> list[str]:
        """One freshly drawn prompt per row of ``conditions`` ``(B, 1 + A)`` = (label, bin per attribute).

        All randomness comes from one ``(B, 3 + A)`` uniform draw on ``generator`` (CPU), so a seed
        fixes the prompts; held-out combinations are never mentioned.
        """
        conditions = conditions.cpu()
        num_attributes = len(self.attributes)
        u = torch.rand(conditions.shape[0], 3 + num_attributes, generator=generator)  # (B, 3 + A)
        order = u[:, 3:].argsort(dim=1).tolist()  # (B, A): a random order of the attributes per row
        prompts = []
        for row, draw, attribute_order in zip(conditions.tolist(), u.tolist(), order, strict=True):
            label, bins = row[0], row[1:]
            allowed = [a for a in attribute_order if (label, a, bins[a]) not in self.held_out]
            count = min(int(draw[0] * (len(allowed) + 1)), len(allowed))  # 0 .. len(allowed), uniform
            words = [self.words[a][bins[a]] for a in allowed[:count]]
            forms = self.class_forms[label]
            form = forms[min(int(draw[1] * len(forms)), len(forms) - 1)]
            templates = TRAIN_TEMPLATES if words else CLASS_ONLY_TEMPLATES
            template = templates[min(int(draw[2] * len(templates)), len(templates) - 1)]
            prompts.append(render(template, form, words))
        return prompts

    def class_prompts(self, labels: Sequence[int]) -> list[str]:
        """The canonical class-only prompt of each label ("7", "ankle boot"): how a label is asked for."""
        return [self.class_forms[int(label)][0] for label in labels]

    def corpus(self) -> list[str]:
        """Prompts that together use every word any prompt can contain (the tokenizer's vocabulary)."""
        every_word = [word for words in self.words for word in words]
        templates = TRAIN_TEMPLATES + CLASS_ONLY_TEMPLATES + HELD_OUT_TEMPLATES
        return [render(t, form, every_word) for forms in self.class_forms for form in forms for t in templates]

    def longest_prompt(self) -> str:
        """The longest prompt (in words) any template can produce: the tokenizer's length must fit it."""
        all_words = [max(words, key=lambda w: len(w.split())) for words in self.words]
        forms = [max(forms, key=lambda f: len(f.split())) for forms in self.class_forms]
        templates = TRAIN_TEMPLATES + HELD_OUT_TEMPLATES
        candidates = [render(t, f, all_words) for t in templates for f in forms]
        return max(candidates, key=lambda p: len(p.replace(",", " ,").split()))

    # ------------------------------------------------------------------ evaluation
    def request(self, template: str, label: int, asked: dict[int, int], form: int = 0) -> Request:
        """The prompt for ``label`` asking bin ``asked[a]`` of attribute ``a`` (in the order of the dict)."""
        words = [self.words[a][b] for a, b in asked.items()]
        bins = tuple(asked.get(a, -1) for a in range(len(self.attributes)))
        forms = self.class_forms[label]
        return Request(render(template, forms[form % len(forms)], words), int(label), bins)

    def attribute_index(self, name: str) -> int:
        if name not in self.attributes:
            raise ValueError(f"attribute {name!r} is not one of this model's attributes {list(self.attributes)}")
        return self.attributes.index(name)

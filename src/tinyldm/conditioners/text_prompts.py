"""Text prompts as context tokens: a word-level tokenizer and a small Transformer encoder, trained here.

Where :class:`~tinyldm.conditioners.ClassConditioner` looks up learned tokens per label, this
conditioner reads a prompt ("a thick seven slanted left") and hands the UNet's cross-attention the
encoder's whole token sequence with its padding mask, as Stable Diffusion does with CLIP. Prompts
can say more than the label: each training image is described by attributes measured on it
(:mod:`tinyldm.text.attributes`) and phrased afresh every time it is drawn (:mod:`tinyldm.text.prompts`).

Classifier-free guidance uses the empty prompt (the ``<bos>`` token alone) as the unconditional
input; a fraction ``p_uncond`` of the training prompts is replaced by it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tinyldm.text.attributes import fit_thresholds, measure, to_bins
from tinyldm.text.encoder import TextEncoder
from tinyldm.text.prompts import PromptBank
from tinyldm.text.tokenizer import PromptTokenizer

#: what conditions look like here: a (B,) label per sample, a (B, 1 + A) row of label and attribute bins,
#: or the prompts themselves
Conditions = Tensor | Sequence[str]


class TextConditioner(nn.Module):
    """Prompts (or labels + attribute bins, phrased by the prompt bank) -> ``(B, L, D)`` tokens + ``(B, L)`` mask.

    Args:
        vocabulary: how classes are named: ``digits`` or ``fashion``.
        attributes: measured attributes prompts may mention (``thickness``, ``slant``, ``size``,
            ``brightness``), in the order of the condition columns.
        held_out: ``"CLASS:WORD"`` combinations never said in training (``"7:thick"``).
        context_dim: token width ``D`` (the UNet's ``context_dim``).
        depth: Transformer layers of the text encoder.
        num_heads: attention heads of the text encoder.
        max_length: tokens per prompt, ``<bos>`` included; longer prompts are refused.
        p_uncond: probability, per sample, of training on the empty prompt instead; in ``[0, 1)``.
        dropout: dropout inside the text encoder.
    """

    is_conditional = True

    def __init__(
        self,
        vocabulary: str = "digits",
        attributes: Sequence[str] = ("thickness", "slant", "size"),
        held_out: Sequence[str] = (),
        context_dim: int = 64,
        depth: int = 1,
        num_heads: int = 4,
        max_length: int = 12,
        p_uncond: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"conditioner.p_uncond={p_uncond} is invalid: it must lie in [0, 1)")
        self.bank = PromptBank(vocabulary, list(attributes), list(held_out))
        self.tokenizer = PromptTokenizer.train(self.bank.corpus(), max_length)
        longest = self.bank.longest_prompt()
        if len(self.tokenizer.tokens(longest)) + 1 > max_length:
            raise ValueError(
                f"conditioner.max_length={max_length} is too small: the prompt bank can say {longest!r}, "
                f"{len(self.tokenizer.tokens(longest)) + 1} tokens with <bos>"
            )
        self.encoder = TextEncoder(self.tokenizer.vocab_size, context_dim, depth, num_heads, max_length, dropout)
        self.num_classes = self.bank.num_classes
        self.context_dim = context_dim
        self.num_tokens = max_length
        self.p_uncond = p_uncond
        # (A, 2) bin edges fitted on the training images; kept out of the state's tensors on purpose: the EMA
        # averages float buffers, and edges are data about the training set, not weights
        self.thresholds: Tensor | None = None

    # ------------------------------------------------------------------ data
    def conditions_for(self, images: Tensor, labels: Tensor, fit: bool = False) -> Tensor:
        """``(N, 1 + A)`` long: each image's label and the bin of each attribute measured on it.

        ``fit=True`` (the training split) first sets the bin edges to the tertiles of these images.
        """
        values = measure(images, self.bank.attributes)  # (N, A)
        if fit:
            self.thresholds = fit_thresholds(values)  # (A, 2)
        return torch.cat([labels.long()[:, None], to_bins(values, self.attribute_thresholds())], dim=1)

    def attribute_thresholds(self) -> Tensor:
        """The ``(A, 2)`` bin edges of the training set (what "thick" meant for the run's data)."""
        if self.thresholds is None:
            raise RuntimeError(
                "this text conditioner has no attribute bins yet: conditions_for(..., fit=True) sets them"
            )
        return self.thresholds

    # ------------------------------------------------------------------ tokens
    def forward(
        self, conditions: Conditions, drop_labels: bool | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Context tokens ``(B, L, D)`` and keep-mask ``(B, L)`` for a batch of conditions.

        Args:
            conditions: ``(B,)`` labels (asked as their class-only prompt), ``(B, 1 + A)`` training
                rows (a fresh phrasing per row, drawn with ``generator``) or ``B`` prompts.
            drop_labels: ``True`` gives every sample the empty prompt, ``False`` none; ``None``
                drops each with probability ``p_uncond`` in training mode only.
            generator: draws the phrasings and the drops (any device; the draws happen on the CPU).
        """
        cpu_generator = _on_cpu(generator)
        prompts = self.prompts(conditions, cpu_generator)
        if drop_labels is None:
            drop_labels = self.training and self.p_uncond > 0
            if drop_labels:
                dropped = (torch.rand(len(prompts), generator=cpu_generator) < self.p_uncond).tolist()  # (B,)
                prompts = ["" if drop else prompt for prompt, drop in zip(prompts, dropped, strict=True)]
        elif drop_labels:
            prompts = [""] * len(prompts)
        return self.encode(prompts)

    def prompts(self, conditions: Conditions, generator: torch.Generator | None = None) -> list[str]:
        """The prompt each condition stands for (see :meth:`forward`)."""
        if not isinstance(conditions, Tensor):
            return [str(prompt) for prompt in conditions]
        if conditions.ndim == 1:
            return self.bank.class_prompts(conditions.tolist())
        if conditions.ndim == 2 and conditions.shape[1] == 1 + len(self.bank.attributes):
            return self.bank.training_prompts(conditions, generator)
        width = 1 + len(self.bank.attributes)
        raise ValueError(
            f"conditions of shape {tuple(conditions.shape)}: expected (B,) labels or (B, {width}) rows of label "
            "and attribute bins"
        )

    def label_of(self, prompts: Sequence[str]) -> list[int]:
        """The class each prompt names (-1 when it names none or several): how its samples are scored.

        Longest names first, so "t-shirt" is a t-shirt and not a shirt.
        """
        names = sorted(
            (
                (tuple(self.tokenizer.tokens(form)), label)
                for label, forms in enumerate(self.bank.class_forms)
                for form in forms
            ),
            key=lambda name: -len(name[0]),
        )
        labels = []
        for prompt in prompts:
            words, found, i = self.tokenizer.tokens(prompt), set(), 0
            while i < len(words):
                match = next(((n, c) for n, c in names if tuple(words[i : i + len(n)]) == n), None)
                if match is None:
                    i += 1
                    continue
                found.add(match[1])
                i += len(match[0])
            labels.append(found.pop() if len(found) == 1 else -1)
        return labels

    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``B`` prompts -> ``(B, L, D)`` tokens and ``(B, L)`` mask (unknown words warn; too long is an error)."""
        ids, mask = self.tokenizer.encode(list(prompts))  # (B, L), (B, L)
        device = self.encoder.token_embedding.weight.device
        ids, mask = ids.to(device), mask.to(device)
        return self.encoder(ids, mask), mask

    def unconditional(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """The empty prompt's tokens and mask for ``batch_size`` samples (classifier-free guidance)."""
        context, mask = self.encode([""])  # (1, L, D), (1, L)
        if device is not None:
            context, mask = context.to(device), mask.to(device)
        return context.expand(batch_size, -1, -1), mask.expand(batch_size, -1)

    # ------------------------------------------------------------------ checkpoint
    def get_extra_state(self) -> Tensor:
        """The tokenizer (its JSON) and the bin edges, as UTF-8 JSON bytes in a uint8 tensor.

        A tensor because a checkpoint's state dict holds tensors only (anything else is refused as
        malformed by :mod:`tinyldm.utils.checkpoints`); JSON because it is data, never code.
        """
        thresholds = None if self.thresholds is None else self.thresholds.tolist()
        state = json.dumps({"tokenizer": self.tokenizer.to_json(), "thresholds": thresholds})
        return torch.frombuffer(bytearray(state.encode("utf-8")), dtype=torch.uint8)

    def set_extra_state(self, state: Tensor) -> None:
        try:
            data = json.loads(bytes(state.cpu().numpy()).decode("utf-8"))
            tokenizer_json, thresholds = str(data["tokenizer"]), data["thresholds"]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"the text conditioner's saved state is not its JSON ({error})") from error
        tokenizer = PromptTokenizer.from_json(tokenizer_json, self.tokenizer.max_length)
        if tokenizer.vocab_size != self.encoder.token_embedding.num_embeddings:
            raise ValueError(
                f"the checkpoint's tokenizer has {tokenizer.vocab_size} tokens, but this conditioner's encoder "
                f"embeds {self.encoder.token_embedding.num_embeddings}"
            )
        self.tokenizer = tokenizer
        self.thresholds = None if thresholds is None else torch.tensor(thresholds, dtype=torch.float32)

    def extra_repr(self) -> str:
        return (
            f"vocabulary={self.bank.vocabulary}, attributes={list(self.bank.attributes)}, "
            f"vocab_size={self.tokenizer.vocab_size}, max_length={self.num_tokens}, p_uncond={self.p_uncond}"
        )


def _on_cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """A CPU generator seeded from ``generator`` (prompts are drawn on the CPU whatever the device)."""
    if generator is None or generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device).item())
    return torch.Generator().manual_seed(seed)

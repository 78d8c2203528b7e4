"""Word-level tokenizer for the generated prompts of the text conditioner.

The prompts ("a thick seven slanted left") come from a small, closed prompt bank, so the text
encoder learns its token embeddings from scratch and a word-level vocabulary is all it needs:
sub-word merges (BPE, WordPiece) would only split words the model never has to generalise over.
The vocabulary is therefore "trained" -- collected -- from the prompt bank at start-up with the
Hugging Face ``tokenizers`` WordLevel model, and travels inside the checkpoint as the tokenizer's
JSON string. JSON is data, never code: it is read back with ``tokenizers.Tokenizer.from_str``,
so loading a checkpoint's tokenizer cannot execute anything.

Every prompt is encoded as ``[BOS] + words``, padded with ``PAD`` to a fixed length. The BOS token
makes the empty prompt -- the classifier-free-guidance unconditional input -- a sequence of one
real token, so the text encoder's attention always has at least one key that is not masked out
(a softmax over only masked keys is NaN).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence

import tokenizers
import torch
from tokenizers import models, normalizers, pre_tokenizers, trainers
from torch import Tensor

log = logging.getLogger(__name__)

PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SPECIAL_TOKENS = (PAD, UNK, BOS)  # ids 0, 1, 2: the order is part of the checkpoint format


def _check_max_length(max_length: int) -> int:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2 (BOS plus at least one word), got {max_length!r}")
    return max_length


def _check_prompt(prompt: object, index: int) -> str:
    """Refuse non-strings and prompts that spell a special token.

    ``tokenizers`` matches special tokens in the *raw* text before normalisation, so a prompt
    containing "<pad>" would encode to the PAD id (and be masked out as padding) although
    training had split the same text into "<", "pad", ">". No generated prompt needs them.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt {index} must be a str, got {type(prompt).__name__}: {prompt!r}")
    for special in SPECIAL_TOKENS:
        if special in prompt:
            raise ValueError(f"prompt {index} {prompt!r} contains the reserved token {special!r}")
    return prompt


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):  # a str is a Sequence[str] of characters: almost surely a missing [...]
        raise TypeError(f"prompts must be a sequence of str, not a single str: {prompts!r}")
    return [_check_prompt(prompt, i) for i, prompt in enumerate(prompts)]


class PromptTokenizer:
    """Prompts to fixed-length ``[BOS] + words + PAD...`` id tensors and a keep-mask, and back.

    Wraps a ``tokenizers.Tokenizer`` (WordLevel model, lowercasing normaliser, whitespace and
    punctuation pre-tokenizer) and adds what the text conditioner needs on top: the BOS token,
    padding to a fixed length as tensors, a loud error for prompts that do not fit (silent
    truncation would train on a different prompt than the one asked for) and a warning for
    words outside the vocabulary (they all collapse onto UNK, so the model cannot tell them apart).

    Args:
        tokenizer: a WordLevel tokenizer whose special tokens ``PAD``, ``UNK``, ``BOS`` have ids
            0, 1, 2 (as built by :meth:`train`).
        max_length: the default sequence length ``L`` of :meth:`encode`, BOS included; the text
            encoder sizes its positional embeddings with it (``conditioner.max_length``).
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer, max_length: int):
        self.max_length = _check_max_length(max_length)
        if not isinstance(tokenizer, tokenizers.Tokenizer):
            raise TypeError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        if not isinstance(tokenizer.model, models.WordLevel) or tokenizer.model.unk_token != UNK:
            # Without unk_token a WordLevel model raises on unknown words instead of mapping them to UNK.
            raise ValueError(f"expected a WordLevel model with unk_token {UNK!r}, got {tokenizer.model!r}")
        added = tokenizer.get_added_tokens_decoder()  # {id: AddedToken}
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            found = tokenizer.token_to_id(token)
            if found != expected_id or expected_id not in added or not added[expected_id].special:
                # The ids are baked into the checkpoint (PAD masks, BOS starts every sequence) and
                # decode() drops them only if they are registered as special tokens.
                raise ValueError(
                    f"special token {token!r} must be a special token with id {expected_id}, found id {found}"
                )
        if tokenizer.truncation is not None or tokenizer.padding is not None:
            # encode() pads and checks lengths itself; the tokenizer's own truncation would hide over-long prompts.
            raise ValueError("the tokenizer must have truncation and padding disabled")
        self._tokenizer = tokenizer
        self._warned_unknown: set[str] = set()  # unknown words already reported by this instance

    @classmethod
    def train(cls, prompts: Iterable[str], max_length: int) -> PromptTokenizer:
        """Build the vocabulary from a prompt bank: every word seen at least once becomes a token.

        The vocabulary is deterministic for the same multiset of prompts whatever their order:
        ``WordLevelTrainer`` sorts words by descending count, then by the word itself. That
        matters because a checkpoint's embedding rows are tied to these ids.
        """
        _check_max_length(max_length)  # fail before training
        if isinstance(prompts, str):
            raise TypeError(f"prompts must be an iterable of str, not a single str: {prompts!r}")
        bank = [_check_prompt(prompt, i) for i, prompt in enumerate(prompts)]
        tokenizer = tokenizers.Tokenizer(models.WordLevel(unk_token=UNK))
        # NFKC folds look-alike characters (full-width letters, ligatures) onto the plain ones.
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        # \w+|[^\w\s]+ : "7," -> "7", ","  (a run of punctuation such as "!!" stays one token).
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(
            special_tokens=list(SPECIAL_TOKENS),
            min_frequency=1,
            vocab_size=sys.maxsize,  # the default (30 000, specials included) silently drops the rarest words
            show_progress=False,
        )
        tokenizer.train_from_iterator(bank, trainer=trainer, length=len(bank))
        if tokenizer.get_vocab_size() <= len(SPECIAL_TOKENS):
            raise ValueError(f"the prompt bank has no words ({len(bank)} prompts): nothing to build a vocabulary from")
        return cls(tokenizer, max_length)

    def to_json(self) -> str:
        """The tokenizer as a JSON string, to store in the checkpoint (``max_length`` is stored by the caller)."""
        return self._tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str, max_length: int) -> PromptTokenizer:
        """Rebuild a tokenizer from :meth:`to_json`'s string; parsing JSON runs no code."""
        if not isinstance(text, str):
            raise TypeError(f"text must be the tokenizer's JSON str, got {type(text).__name__}")
        try:
            tokenizer = tokenizers.Tokenizer.from_str(text)
        except Exception as err:  # tokenizers raises a bare Exception for malformed JSON
            raise ValueError(f"not a valid tokenizer JSON: {err}") from err
        return cls(tokenizer, max_length)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included: the text encoder's embedding table size."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def bos_id(self) -> int:
        return 2

    def tokens(self, prompt: str) -> list[str]:
        """The prompt's word tokens as the model sees them (normalised; unknown words as ``UNK``), without BOS."""
        return self._tokenizer.encode(_check_prompt(prompt, 0), add_special_tokens=False).tokens

    def encode(self, prompts: Sequence[str], length: int | None = None) -> tuple[Tensor, Tensor]:
        """Encode prompts as ``[BOS] + words``, padded with ``PAD`` to ``L = length or max_length``.

        Returns:
            ``ids`` (B, L) long and ``keep`` (B, L) bool, True for real tokens (BOS included) and
            False for padding -- the key mask the text encoder's attention needs.

        Raises:
            ValueError: a prompt has more than ``L`` tokens (BOS included), or ``length < max_length``
                (the text encoder is built for ``max_length`` positions and every prompt of the
                bank must fit them; a shorter ``length`` would refuse prompts it accepts elsewhere).
        """
        if length is None:
            length = self.max_length
        elif isinstance(length, bool) or not isinstance(length, int) or length < self.max_length:
            raise ValueError(f"length must be an int >= max_length={self.max_length}, got {length!r}")
        batch = _check_prompts(prompts)
        # add_special_tokens=False: BOS is added here, not by a post-processor a foreign JSON might carry.
        encodings = self._tokenizer.encode_batch(batch, add_special_tokens=False)
        bos, pad, unk = self.bos_id, self.pad_id, self.unk_id
        rows: list[list[int]] = []
        lengths: list[int] = []
        for prompt, encoding in zip(batch, encodings, strict=True):
            word_ids = encoding.ids  # each attribute access converts from Rust: read it once
            n = 1 + len(word_ids)
            if n > length:
                raise ValueError(
                    f"prompt {prompt!r} has {n} tokens (BOS included), more than the limit {length} "
                    f"(conditioner.max_length): shorten the prompt or raise conditioner.max_length"
                )
            if unk in word_ids:
                self._warn_unknown(prompt, encoding)
            lengths.append(n)
            rows.append([bos, *word_ids, *([pad] * (length - n))])
        ids = torch.tensor(rows, dtype=torch.long).reshape(len(rows), length)  # (B, L); reshape covers B = 0
        keep = torch.arange(length) < torch.tensor(lengths, dtype=torch.long).unsqueeze(1)  # (B, L)
        return ids, keep

    def unknown_words(self, prompt: str) -> list[str]:
        """The words of ``prompt`` the vocabulary lacks (normalised, in order): what :meth:`encode` maps to UNK."""
        return self._unknown_in(prompt, self._tokenizer.encode(_check_prompt(prompt, 0), add_special_tokens=False))

    def _unknown_in(self, prompt: str, encoding: tokenizers.Encoding) -> list[str]:
        normalizer = self._tokenizer.normalizer
        words = []
        for token_id, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
            if token_id == self.unk_id:
                word = prompt[start:end]  # offsets index the original prompt
                words.append(normalizer.normalize_str(word) if normalizer is not None else word)
        return words

    def _warn_unknown(self, prompt: str, encoding: tokenizers.Encoding) -> None:
        """Warn once per distinct unknown word, so a large batch of the same prompts does not flood the log."""
        unknown = self._unknown_in(prompt, encoding)
        new = list(dict.fromkeys(word for word in unknown if word not in self._warned_unknown))
        self._warned_unknown.update(new)
        if new:
            log.warning(
                "words not in the tokenizer vocabulary, encoded as %s: %s (prompt %r); "
                "the prompt bank the tokenizer was built from never contains them",
                UNK,
                ", ".join(repr(word) for word in new),
                prompt,
            )

    def decode(self, ids: Tensor) -> list[str]:
        """(B, L) ids -> prompts: words joined by single spaces, special tokens (BOS, PAD, UNK) dropped."""
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(f"ids must be an integer tensor of shape (B, L), got {ids!r}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}), got range [{ids.min()}, {ids.max()}]")
        return self._tokenizer.decode_batch(ids.tolist(), skip_special_tokens=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, max_length={self.max_length})"

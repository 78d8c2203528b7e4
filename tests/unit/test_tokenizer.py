"""Tests for the word-level prompt tokenizer of the text conditioner."""

from __future__ import annotations

import json
import logging
import random

import pytest
import torch

from tinyldm.text.tokenizer import BOS, PAD, UNK, PromptTokenizer

BANK = [
    "a thick seven slanted left",
    "a thin seven, upright",
    "A small zero slanted right!",
    "a large one",
    "a thick two",
    "",  # the unconditional prompt belongs to the bank too
]
LOGGER = "tinyldm.text.tokenizer"


@pytest.fixture()
def tok() -> PromptTokenizer:
    return PromptTokenizer.train(BANK, max_length=8)


def test_special_token_ids_and_vocab(tok):
    assert (tok.pad_id, tok.unk_id, tok.bos_id) == (0, 1, 2)
    vocab = json.loads(tok.to_json())["model"]["vocab"]
    assert [vocab[PAD], vocab[UNK], vocab[BOS]] == [0, 1, 2]
    words = {"a", "thick", "thin", "seven", "slanted", "left", "right", "upright", "small", "zero", "large"}
    words |= {"one", "two", ",", "!"}
    assert set(vocab) == words | {PAD, UNK, BOS}  # lowercased ("A" -> "a"), punctuation split off
    assert tok.vocab_size == len(vocab) == len(words) + 3
    assert sorted(vocab.values()) == list(range(tok.vocab_size))


def test_tokens_normalise_and_split_punctuation(tok):
    assert tok.tokens("A Thin SEVEN,upright") == ["a", "thin", "seven", ",", "upright"]
    assert tok.tokens("") == []


def test_encode_layout_and_round_trip(tok):
    prompts = ["a thick seven slanted left", "A thin seven, upright", "a large one"]
    ids, keep = tok.encode(prompts)
    assert ids.shape == keep.shape == (3, 8)
    assert ids.dtype == torch.long and keep.dtype == torch.bool
    assert (ids[:, 0] == tok.bos_id).all()
    lengths = torch.tensor([1 + 5, 1 + 5, 1 + 3])  # BOS + words (the comma is a token)
    torch.testing.assert_close(keep.sum(1), lengths)
    torch.testing.assert_close(keep, torch.arange(8) < lengths[:, None])  # real tokens first, then padding
    assert (ids[~keep] == tok.pad_id).all() and (ids[keep] != tok.pad_id).all()
    assert (ids[:, 1:] != tok.bos_id).all()
    assert tok.decode(ids) == ["a thick seven slanted left", "a thin seven , upright", "a large one"]


def test_empty_prompt_is_bos_alone(tok):
    ids, keep = tok.encode(["", "   "])
    expected = torch.tensor([tok.bos_id] + [tok.pad_id] * 7)
    torch.testing.assert_close(ids, torch.stack([expected, expected]))
    torch.testing.assert_close(keep, torch.tensor([[True] + [False] * 7] * 2))
    assert tok.decode(ids) == ["", ""]


def test_unknown_word_maps_to_unk_and_warns_once(tok, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ids, keep = tok.encode(["a thick Nine", "a thick nine"] * 3)
    assert (ids[:, 3] == tok.unk_id).all() and keep[:, 3].all()
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "'nine'" in warnings[0].getMessage() and "a thick Nine" in warnings[0].getMessage()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        tok.encode(["a nine and eight"])  # "nine" was reported already, "and" and "eight" are new
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    message = record.getMessage()
    assert "'and'" in message and "'eight'" in message and "'nine'" not in message

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        PromptTokenizer.train(BANK, max_length=8).encode(["nine"])  # a fresh instance reports it again
    assert any("'nine'" in r.getMessage() for r in caplog.records)


def test_too_long_prompt_names_prompt_count_and_limit(tok):
    prompt = "a thick seven slanted left a thin seven"  # 8 words + BOS = 9 tokens > 8
    with pytest.raises(ValueError, match=r"9 tokens.*limit 8.*conditioner\.max_length") as info:
        tok.encode(["a thick two", prompt])
    assert repr(prompt) in str(info.value)
    ids, keep = tok.encode([prompt], length=9)  # fits exactly with a longer length
    assert keep.all() and tok.decode(ids) == [prompt]


def test_longer_length_pads_more(tok):
    prompts = ["a thick seven slanted left", "", "a large one!"]
    ids, keep = tok.encode(prompts)
    long_ids, long_keep = tok.encode(prompts, length=13)
    assert long_ids.shape == long_keep.shape == (3, 13)
    torch.testing.assert_close(long_ids[:, :8], ids)
    torch.testing.assert_close(long_keep[:, :8], keep)
    assert (long_ids[:, 8:] == tok.pad_id).all() and not long_keep[:, 8:].any()


@pytest.mark.parametrize("length", [7, 0, 8.0, True])
def test_length_below_max_length_is_refused(tok, length):
    with pytest.raises(ValueError, match="length"):
        tok.encode(["a thick two"], length=length)


def test_json_round_trip_gives_identical_encodings(tok):
    prompts = ["a thick seven slanted left", "A thin seven, upright", "", "a small nine"]
    restored = PromptTokenizer.from_json(tok.to_json(), max_length=8)
    assert restored.vocab_size == tok.vocab_size
    for a, b in zip(tok.encode(prompts), restored.encode(prompts), strict=True):
        torch.testing.assert_close(a, b)
    assert restored.to_json() == tok.to_json()


def test_from_json_refuses_bad_data(tok):
    with pytest.raises(ValueError, match="tokenizer JSON"):
        PromptTokenizer.from_json("{not json", max_length=8)
    data = json.loads(tok.to_json())
    data["model"]["vocab"][PAD], data["model"]["vocab"][BOS] = 2, 0  # specials swapped
    for added in data["added_tokens"]:
        added["id"] = data["model"]["vocab"][added["content"]]
    with pytest.raises(ValueError, match="special token"):
        PromptTokenizer.from_json(json.dumps(data), max_length=8)


def test_vocab_is_independent_of_prompt_order():
    # Many words with equal counts: only a deterministic tie-break makes the ids reproducible.
    bank = [f"w{i} x{i % 7} y{i % 3}" for i in range(60)] + ["a b c d e f g"] * 2
    reference = PromptTokenizer.train(bank, max_length=4).to_json()
    rng = random.Random(0)
    for _ in range(5):
        shuffled = bank[:]
        rng.shuffle(shuffled)
        assert PromptTokenizer.train(iter(shuffled), max_length=4).to_json() == reference


@pytest.mark.parametrize("max_length", [1, 0, -3, 2.5, None, True])
def test_bad_max_length_is_refused(max_length):
    with pytest.raises(ValueError, match="max_length"):
        PromptTokenizer.train(BANK, max_length=max_length)
    tokenizer = PromptTokenizer.train(BANK, max_length=2)
    with pytest.raises(ValueError, match="max_length"):
        PromptTokenizer.from_json(tokenizer.to_json(), max_length=max_length)


def test_bad_prompts_are_refused(tok):
    with pytest.raises(TypeError, match="int"):
        tok.encode(["a thick two", 7])
    with pytest.raises(TypeError, match="NoneType"):
        PromptTokenizer.train(["a thick two", None], max_length=8)
    with pytest.raises(TypeError, match="single str"):
        tok.encode("a thick two")
    with pytest.raises(ValueError, match="reserved"):
        tok.encode([f"a {PAD} two"])  # would otherwise encode to the padding id and be masked out
    with pytest.raises(ValueError, match="no words"):
        PromptTokenizer.train(["", " "], max_length=8)


def test_decode_checks_ids(tok):
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        tok.decode(torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="lie in"):
        tok.decode(torch.tensor([[2, tok.vocab_size]]))

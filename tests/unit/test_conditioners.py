"""Tests for the class-token and null conditioners."""

from __future__ import annotations

import pytest
import torch

from tinyldm.conditioners import ClassConditioner, NullConditioner


def test_class_tokens_shape_and_lookup():
    conditioner = ClassConditioner(num_classes=10, context_dim=32, tokens_per_class=4).eval()
    labels = torch.tensor([0, 3, 3, 9])
    tokens = conditioner(labels)
    assert tokens.shape == (4, 4, 32)
    torch.testing.assert_close(tokens[1], tokens[2])
    torch.testing.assert_close(tokens[3], conditioner.class_tokens[9])
    assert conditioner.is_conditional and conditioner.num_classes == 10 and conditioner.num_tokens == 4


def test_single_token_ablation_is_allowed():
    conditioner = ClassConditioner(tokens_per_class=1, context_dim=8)
    assert conditioner(torch.tensor([1, 2])).shape == (2, 1, 8)


def test_drop_rate_matches_p_uncond():
    torch.manual_seed(0)
    conditioner = ClassConditioner(num_classes=10, context_dim=4, tokens_per_class=2, p_uncond=0.3).train()
    labels = torch.randint(0, 10, (20_000,))
    with torch.no_grad():
        tokens = conditioner(labels)
    is_null = (tokens == conditioner.null_tokens).all(dim=(1, 2))
    assert abs(is_null.float().mean().item() - 0.3) < 0.02


def test_no_dropping_in_eval_mode():
    conditioner = ClassConditioner(num_classes=10, context_dim=4, p_uncond=0.5).eval()
    labels = torch.randint(0, 10, (2_000,))
    torch.testing.assert_close(conditioner(labels), conditioner.class_tokens[labels])


def test_drop_labels_overrides_mode():
    conditioner = ClassConditioner(num_classes=10, context_dim=4, tokens_per_class=3, p_uncond=0.5)
    labels = torch.arange(10)
    conditioner.eval()
    expected_null = conditioner.null_tokens.expand(10, -1, -1)
    torch.testing.assert_close(conditioner(labels, drop_labels=True), expected_null)
    conditioner.train()
    torch.testing.assert_close(conditioner(labels, drop_labels=False), conditioner.class_tokens[labels])
    torch.testing.assert_close(conditioner.unconditional(5, "cpu"), conditioner.null_tokens.expand(5, -1, -1))


def test_null_tokens_are_learned():
    conditioner = ClassConditioner(context_dim=4)
    conditioner(torch.tensor([1, 2]), drop_labels=True).sum().backward()
    assert conditioner.null_tokens.grad is not None and conditioner.null_tokens.grad.abs().sum() > 0
    assert conditioner.class_tokens.grad is None


@pytest.mark.parametrize("p_uncond", [1.0, -0.1])
def test_bad_p_uncond_raises(p_uncond):
    with pytest.raises(ValueError, match=rf"p_uncond={p_uncond}.*\[0, 1\)"):
        ClassConditioner(p_uncond=p_uncond)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(tokens_per_class=0), "tokens_per_class=0"), (dict(num_classes=0), "num_classes=0")],
)
def test_bad_sizes_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClassConditioner(**kwargs)


def test_out_of_range_labels_raise():
    conditioner = ClassConditioner(num_classes=10)
    with pytest.raises(ValueError, match=r"\[10\].*\[0, 10\)"):
        conditioner(torch.tensor([1, 10]))
    with pytest.raises(ValueError, match="out of range"):
        conditioner(torch.tensor([-1]))
    with pytest.raises(ValueError, match="integer"):
        conditioner(torch.tensor([1.0]))


def test_null_conditioner_ignores_labels():
    conditioner = NullConditioner(context_dim=8, num_tokens=2, num_classes=10)
    assert not conditioner.is_conditional
    a = conditioner(torch.tensor([0, 1, 2]))
    b = conditioner(torch.tensor([9, 9, 9]), drop_labels=False)
    assert a.shape == (3, 2, 8)
    torch.testing.assert_close(a, b)
    assert torch.count_nonzero(a) == 0
    torch.testing.assert_close(conditioner.unconditional(3), a)
    assert not list(conditioner.parameters())  # nothing to learn

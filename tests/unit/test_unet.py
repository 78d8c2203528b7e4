"""Tests for the denoising UNet and its transformer blocks (tiny configs, CPU)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from tinyldm.conditioners import ClassConditioner
from tinyldm.unet import SpatialTransformer, TransformerBlock, UNet
from tinyldm.unet.attention import Attention

CTX = 16


def tiny_unet(**overrides) -> UNet:
    config = dict(
        in_channels=4,
        sample_size=8,
        base_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(0, 1),
        transformer_depth=1,
        num_heads=2,
        head_dim=8,
        context_dim=CTX,
        norm_groups=4,
    )
    config.update(overrides)
    return UNet(**config)


def inputs(model: UNet, batch: int = 2, tokens: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    size = model.sample_size
    x = torch.randn(batch, model.in_channels, size, size, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    context = torch.randn(batch, tokens, model.context_dim, generator=gen)
    return x, t, context


def spatial_transformers(model: nn.Module) -> list[SpatialTransformer]:
    return [m for m in model.modules() if isinstance(m, SpatialTransformer)]


def randomise_proj_out(model: nn.Module, seed: int = 0) -> None:
    """Undo the zero init so the transformers (and hence the context) affect the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for st in spatial_transformers(model):
            st.proj_out.weight.copy_(0.1 * torch.randn(st.proj_out.weight.shape, generator=gen))


@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("levels", [(0,), (1,), (0, 1)])
def test_output_shape_latent(depth, levels):
    torch.manual_seed(0)
    model = tiny_unet(transformer_depth=depth, attention_levels=levels)
    x, t, context = inputs(model)
    assert model(x, t, context).shape == x.shape


@pytest.mark.parametrize("levels", [(), (2,), (0, 1, 2)])
def test_output_shape_pixels_three_levels(levels):
    torch.manual_seed(0)
    model = tiny_unet(in_channels=1, out_channels=2, sample_size=32, channel_mult=(1, 2, 2), attention_levels=levels)
    x, t, context = inputs(model)
    assert model(x, t, context).shape == (2, 2, 32, 32)


def test_float_and_scalar_timesteps():
    torch.manual_seed(0)
    model = tiny_unet()
    x, _, context = inputs(model)
    assert model(x, torch.tensor([0.5, 999.0]), context).shape == x.shape
    assert model(x, torch.tensor(10), context).shape == x.shape


@pytest.mark.parametrize("levels", [(0,), (0, 1)])
@pytest.mark.parametrize("depth", [1, 2])
def test_transformer_count_and_zero_init(depth, levels):
    model = tiny_unet(transformer_depth=depth, attention_levels=levels)
    transformers = spatial_transformers(model)
    # encoder: num_res_blocks per level, decoder: num_res_blocks + 1 per level, plus the middle block
    assert len(transformers) == len(levels) * (1 + 2) + 1
    for st in transformers:
        assert len(st.blocks) == depth
        assert torch.count_nonzero(st.proj_out.weight) == 0
        assert torch.count_nonzero(st.proj_out.bias) == 0


def test_at_init_output_ignores_context():
    """proj_out is zero-initialised: a fresh conditional UNet is a plain UNet and ignores its context."""
    torch.manual_seed(0)
    model = tiny_unet(transformer_depth=2).eval()
    x, t, context = inputs(model)
    torch.testing.assert_close(model(x, t, context), model(x, t, torch.randn_like(context)), rtol=0, atol=0)


def test_context_changes_output_once_proj_out_is_nonzero():
    torch.manual_seed(0)
    model = tiny_unet(transformer_depth=1).eval()
    randomise_proj_out(model)
    x, t, context = inputs(model)
    difference = (model(x, t, context) - model(x, t, torch.randn_like(context))).abs().max()
    assert difference > 1e-3


def test_depth_zero_has_no_attention_and_ignores_context():
    torch.manual_seed(0)
    model = tiny_unet(transformer_depth=0).eval()
    assert not spatial_transformers(model)
    assert not any(isinstance(m, (Attention, TransformerBlock)) for m in model.modules())
    x, t, context = inputs(model)
    out = model(x, t, context)
    torch.testing.assert_close(out, model(x, t, 5 * torch.randn_like(context)), rtol=0, atol=0)
    torch.testing.assert_close(out, model(x, t, None), rtol=0, atol=0)


def test_uses_scaled_dot_product_attention(monkeypatch):
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    depth = 2
    model = tiny_unet(transformer_depth=depth)
    x, t, context = inputs(model)
    model(x, t, context)
    # every TransformerBlock runs one self- and one cross-attention
    assert len(calls) == 2 * depth * len(spatial_transformers(model))
    assert all(shape[1] == 2 for shape in calls)  # (B, heads, N, head_dim) with 2 heads


def test_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = Attention(query_dim=12, context_dim=CTX, num_heads=3, head_dim=4)
    x, context = torch.randn(2, 5, 12), torch.randn(2, 7, CTX)
    q = attn.to_q(x).view(2, 5, 3, 4).transpose(1, 2)
    k = attn.to_k(context).view(2, 7, 3, 4).transpose(1, 2)
    v = attn.to_v(context).view(2, 7, 3, 4).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # scale 1/sqrt(head_dim) = 1/2
    expected = attn.to_out((weights @ v).transpose(1, 2).reshape(2, 5, 12))
    torch.testing.assert_close(attn(x, context), expected)


def test_a_few_adam_steps_fit_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny_unet(transformer_depth=1)
    x, t, context = inputs(model, batch=4)
    target = torch.randn_like(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = nn.functional.mse_loss(model(x, t, context), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradient_reaches_class_tokens():
    torch.manual_seed(0)
    model = tiny_unet(transformer_depth=1)
    conditioner = ClassConditioner(num_classes=10, context_dim=CTX, tokens_per_class=4, p_uncond=0.0)
    labels = torch.tensor([3, 7])
    x, t, _ = inputs(model)

    def token_grad() -> torch.Tensor:
        model.zero_grad()
        conditioner.zero_grad()
        model(x, t, conditioner(labels)).square().mean().backward()
        grad = conditioner.class_tokens.grad
        return torch.zeros_like(conditioner.class_tokens) if grad is None else grad

    assert token_grad().abs().sum() == 0  # zero-init proj_out blocks the path at init
    randomise_proj_out(model)
    grad = token_grad()
    assert grad[3].abs().sum() > 0 and grad[7].abs().sum() > 0
    assert grad[0].abs().sum() == 0  # classes not in the batch get no gradient


def test_labels_change_output_after_proj_out_is_nonzero():
    torch.manual_seed(0)
    model = tiny_unet(transformer_depth=1).eval()
    randomise_proj_out(model)
    conditioner = ClassConditioner(context_dim=CTX).eval()
    x, t, _ = inputs(model)
    out_a = model(x, t, conditioner(torch.tensor([1, 2])))
    out_b = model(x, t, conditioner(torch.tensor([5, 6])))
    assert (out_a - out_b).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(transformer_depth=-1), "transformer_depth=-1"),
        (dict(sample_size=7), "sample_size=7 cannot be halved 1 time(s) evenly"),
        (dict(sample_size=6, channel_mult=(1, 2, 2)), "divisible by 4"),
        (dict(attention_levels=(0, 5)), "attention_levels=[0, 5] contains [5]"),
        (dict(base_channels=10), "not divisible by norm_groups=4"),
        (dict(channel_mult=()), "channel_mult"),
        (dict(num_res_blocks=0), "num_res_blocks=0"),
    ],
)
def test_bad_configs_raise(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tiny_unet(**overrides)


def test_bad_inputs_raise():
    model = tiny_unet()
    x, t, context = inputs(model)
    with pytest.raises(ValueError, match=r"expected \(B, 4, 8, 8\)"):
        model(torch.randn(2, 3, 8, 8), t, context)
    with pytest.raises(ValueError, match=r"expected \(B, 4, 8, 8\)"):
        model(torch.randn(2, 4, 16, 16), t, context)
    with pytest.raises(ValueError, match=f"context_dim={CTX}"):
        model(x, t, torch.randn(2, 3, CTX + 1))
    with pytest.raises(ValueError, match="context is required"):
        model(x, t, None)
    with pytest.raises(ValueError, match="batch size"):
        model(x, t, context[:1])
    with pytest.raises(ValueError, match="timesteps"):
        model(x, t[:1], context)

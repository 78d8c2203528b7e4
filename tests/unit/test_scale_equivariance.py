"""Scale-equivariance regularisation of stage 1 (``model.training.scale_equivariance``).

The loss must be exactly ``distance(down(x), D(down(z)))``, reach the encoder through a VQ-VAE's
codebook without moving the codebook, and, trained on, make the decoder of a downsampled latent
produce the downsampled image. Tiny models and 32 real digits keep the file CPU-fast.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.unit.test_autoencoders import OPTIMIZER, ae_config, build, fit
from tinyldm.autoencoders.scale_equivariance import (
    downsample,
    scale_equivariance_loss,
    validate_scale_equivariance,
)
from tinyldm.lit.autoencoder_module import AutoencoderModule


@pytest.fixture(scope="module")
def real_images() -> torch.Tensor:
    from tinyldm.data import DigitsDataModule

    dm = DigitsDataModule(name="mnist_5k", source="bundled", seed=0)
    dm.setup()
    return dm.train_dataset.tensors[0][:32].clone()  # (32, 1, 32, 32) in [-1, 1]


def test_downsample_averages_blocks():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]])  # the mean of each 2x2 block
    assert torch.equal(downsample(x, 2), expected)
    assert downsample(torch.randn(3, 4, 8, 8), 4).shape == (3, 4, 2, 2)


@pytest.mark.parametrize("kind", ["ae", "vae", "vqvae"])
def test_loss_is_the_downsampled_reconstruction_error_and_reaches_the_encoder(kind, real_images):
    torch.manual_seed(0)
    model = build(kind)  # f = 4: (32, 1, 32, 32) -> (32, 4, 8, 8)
    model.train()
    out = model(real_images)
    assert out.latent is not None and out.latent.shape == (32, 4, 8, 8)
    frozen = {name: b.clone() for name, b in model.named_buffers()}
    loss = scale_equivariance_loss(model, real_images, out.latent, factor=2)

    with torch.no_grad():  # the same value by hand: the decoder's snap (VQ) of the pooled latent
        small = F.avg_pool2d(out.latent, 2)  # (32, 4, 4, 4)
        if kind == "vqvae":
            small = model.quantizer.quantize(small)
        expected = F.mse_loss(model.decoder(small), F.avg_pool2d(real_images, 2))  # 16x16 images
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    model.zero_grad()
    loss.backward()
    encoder_grad = sum(p.grad.abs().sum().item() for p in model.encoder.parameters() if p.grad is not None)
    decoder_grad = sum(p.grad.abs().sum().item() for p in model.decoder.parameters() if p.grad is not None)
    assert encoder_grad > 0 and decoder_grad > 0
    for name, buffer in model.named_buffers():  # no running statistics move (the VQ codebook follows real latents)
        assert torch.equal(buffer, frozen[name]), name


def test_training_with_the_loss_makes_the_decoder_scale_equivariant(real_images):
    """Same init, same 80 steps: with the weight on, the downsampled latent decodes to the downsampled
    image clearly better than without it (about half the error; seeds 0 and 1 gave 0.57x and 0.48x),
    and full-size reconstruction still trains."""

    def train(weight: float) -> tuple[float, float, float]:
        torch.manual_seed(0)
        module = AutoencoderModule(
            autoencoder=ae_config("vqvae"), optimizer=OPTIMIZER, scale_equivariance=weight, scale_equivariance_factor=2
        )
        ae = module.autoencoder
        with torch.no_grad():
            before = F.mse_loss(ae.eval().decode(ae.encode(real_images)), real_images).item()
        fit(module, real_images, max_steps=80)
        ae.eval()
        with torch.no_grad():
            rec = F.mse_loss(ae.decode(ae.encode(real_images)), real_images).item()
            equivariance = scale_equivariance_loss(ae, real_images, ae.encode(real_images), 2).item()
        return before, rec, equivariance

    _, rec_off, se_off = train(0.0)
    before, rec_on, se_on = train(1.0)
    assert math.isfinite(rec_on) and rec_on < 0.5 * before  # reconstruction still learned
    assert se_on < 0.75 * se_off, f"scale-equivariance error {se_off:.4f} (off) -> {se_on:.4f} (on)"


@pytest.mark.parametrize(
    "weight, factor, latent_shape, message",
    [
        (-0.5, 2, None, r"model.training.scale_equivariance=-0.5 is not allowed: it must be a finite number >= 0"),
        (float("nan"), 2, None, r"scale_equivariance=nan is not allowed"),
        (float("inf"), 2, None, r"scale_equivariance=inf is not allowed"),
        ("a lot", 2, None, r"scale_equivariance='a lot' is not allowed"),
        (True, 2, None, r"scale_equivariance=True is not allowed"),
        (0.25, 1, None, r"model.training.scale_equivariance_factor=1 is not allowed: it must be an integer >= 2"),
        (0.25, 2.0, None, r"scale_equivariance_factor=2.0 is not allowed"),
        (0.25, 3, (4, 8, 8), r"scale_equivariance_factor=3 does not divide the 8x8 latent grid"),
    ],
)
def test_bad_values_are_refused(weight, factor, latent_shape, message):
    with pytest.raises(ValueError, match=message):
        validate_scale_equivariance(weight, factor, latent_shape)


def test_an_autoencoder_without_a_latent_is_named(real_images):
    model = build("ae")
    with pytest.raises(ValueError, match=r"ConvAutoencoder.forward returns no latent"):
        scale_equivariance_loss(model, real_images[:2], None, 2)


def test_module_refuses_a_bad_weight():
    with pytest.raises(ValueError, match=r"scale_equivariance=-1"):
        AutoencoderModule(autoencoder=ae_config("ae"), optimizer=OPTIMIZER, scale_equivariance=-1)


def test_an_unused_factor_is_not_checked_against_the_grid():
    validate_scale_equivariance(0.0, 3, (4, 8, 8))  # off: the factor never touches the latent
    validate_scale_equivariance(0.5, 4, (4, 8, 8))

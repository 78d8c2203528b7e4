"""Training noise: immiscible re-pairing (same draws, least total distance) and input perturbation; training only."""

from __future__ import annotations

import itertools

import pytest
import torch

from tinyldm.diffusion.noise_assignment import immiscible_pairing, validate_noise_assignment


def total_distance(latents: torch.Tensor, noise: torch.Tensor) -> float:
    return (latents - noise).flatten(1).norm(dim=1).sum().item()


def test_pairing_keeps_the_draws_and_finds_the_least_total_distance():
    """On 6 pairs every permutation can be tried: the assignment is the optimum, and a permutation of the draws."""
    generator = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(6, 4, 2, 2, generator=generator), torch.randn(6, 4, 2, 2, generator=generator)
    paired = immiscible_pairing(latents, noise)
    assert paired.shape == noise.shape
    # the same draws (each row of the result is one row of the input, each used once)
    matches = (paired.flatten(1)[:, None] == noise.flatten(1)[None]).all(-1)  # (6, 6)
    assert torch.equal(matches.sum(0), torch.ones(6, dtype=torch.long))
    assert torch.equal(matches.sum(1), torch.ones(6, dtype=torch.long))
    best = min(total_distance(latents, noise[list(order)]) for order in itertools.permutations(range(6)))
    assert total_distance(latents, paired) == pytest.approx(best, rel=1e-6)


def test_a_batch_of_latents_is_paired_closer_than_independent_noise():
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(256, 4, 8, 8, generator=generator) * 0.5 + 0.3
    noise = torch.randn(256, 4, 8, 8, generator=generator)
    paired = immiscible_pairing(latents, noise)
    assert total_distance(latents, paired) < 0.95 * total_distance(latents, noise)
    assert torch.equal(paired.sort(0).values, noise.sort(0).values)  # a reordering: per-element marginals kept


def test_bad_values_are_refused_by_name():
    assert validate_noise_assignment("immiscible") == "immiscible"
    with pytest.raises(ValueError, match=r"diffusion.noise_assignment='ot'; allowed: independent, immiscible"):
        validate_noise_assignment("ot")
    with pytest.raises(ValueError, match="must have the same shape"):
        immiscible_pairing(torch.zeros(4, 2), torch.zeros(3, 2))


def test_module_pairs_training_noise_but_validates_with_independent_noise(compose):
    """diffusion.noise_assignment reaches the training loss only; validation (weighted=False) stays comparable."""
    from tests.helpers.modules import diffusion_module

    cfg = compose(["debug=smoke", "model=ae"])
    independent = diffusion_module(cfg, min_snr_gamma=None)
    immiscible = diffusion_module(cfg, min_snr_gamma=None, noise_assignment="immiscible")
    latents, labels = torch.randn(32, 4, 8, 8) * 2, torch.arange(32) % 10

    def loss(module, **kwargs):
        generator = torch.Generator().manual_seed(1)
        return module.diffusion_loss(module.denoiser, latents, labels, generator, drop_labels=False, **kwargs)

    with torch.no_grad():
        assert torch.equal(loss(immiscible, weighted=False), loss(independent, weighted=False))
        assert not torch.equal(loss(immiscible), loss(independent))
    with pytest.raises(ValueError, match=r"diffusion.noise_assignment='nearest'; allowed"):
        diffusion_module(cfg, noise_assignment="nearest")


class _CapturingDenoiser:
    """Wraps a real denoiser and keeps the noisy input it was called with."""

    def __init__(self, denoiser):
        self.denoiser, self.inputs = denoiser, []

    def context(self, *args, **kwargs):
        return self.denoiser.context(*args, **kwargs)

    def __call__(self, noisy, timesteps, context, mask):
        self.inputs.append((noisy.clone(), timesteps.clone()))
        return self.denoiser(noisy, timesteps, context, mask)


def test_input_perturbation_adds_gamma_noise_to_the_input_only_in_training(compose):
    """Ning et al. 2023: x_t is built from noise + gamma * xi; validation inputs stay unperturbed."""
    from tests.helpers.modules import diffusion_module
    from tinyldm.diffusion.input_perturbation import validate_input_perturbation

    cfg = compose(["debug=smoke", "model=ae"])
    plain = diffusion_module(cfg, min_snr_gamma=None)
    perturbed = diffusion_module(cfg, min_snr_gamma=None, input_perturbation=0.1)
    latents, labels = torch.randn(256, 4, 8, 8), torch.arange(256) % 10

    def inputs(module, **kwargs):
        capture = _CapturingDenoiser(module.denoiser)
        with torch.no_grad():
            module.diffusion_loss(
                capture, latents, labels, torch.Generator().manual_seed(1), drop_labels=False, **kwargs
            )
        return capture.inputs[0]

    (x_plain, t), (x_perturbed, t_perturbed) = inputs(plain), inputs(perturbed)
    assert torch.equal(t, t_perturbed)  # the same timesteps and noise, drawn first from the same stream
    sigma = (1 - plain.noise_schedule.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    extra = (x_perturbed - x_plain) / sigma  # gamma * xi
    assert extra.std().item() == pytest.approx(0.1, rel=0.05)
    assert torch.equal(inputs(plain, weighted=False)[0], inputs(perturbed, weighted=False)[0])
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match=r"diffusion.input_perturbation=.* must be a number in \[0, 1\]"):
            validate_input_perturbation(bad)


def test_per_class_pairing_keeps_each_draw_within_its_label():
    """immiscible_per_class: rows of one label exchange draws only among themselves, optimally."""
    generator = torch.Generator().manual_seed(2)
    latents, noise = torch.randn(64, 4, 8, 8, generator=generator), torch.randn(64, 4, 8, 8, generator=generator)
    labels = torch.arange(64) % 3
    paired = immiscible_pairing(latents, noise, labels)
    for label in range(3):
        rows = (labels == label).nonzero().flatten()
        # the label's rows hold exactly its own draws, re-paired as the whole-batch pairing would pair them alone
        assert torch.equal(paired[rows].sort(0).values, noise[rows].sort(0).values)
        assert torch.equal(paired[rows], immiscible_pairing(latents[rows], noise[rows]))
    assert total_distance(latents, paired) < total_distance(latents, noise)
    with pytest.raises(ValueError, match=r"groups \(3,\) must have one entry per latent \(64\)"):
        immiscible_pairing(latents, noise, labels[:3])


def test_per_class_pairing_needs_class_labels(compose):
    """Refused at the start-up check, naming the option and the fix, when the conditioner has no classes."""
    from tinyldm.config_checks import check_stage2_parts

    cfg = compose(["debug=smoke", "model=ae", "conditioner=none", "diffusion.noise_assignment=immiscible_per_class"])
    with pytest.raises(ValueError, match=r"immiscible_per_class pairs noise within each class, but the conditioner"):
        check_stage2_parts(cfg, (4, 8, 8), 10)
    check_stage2_parts(
        compose(["debug=smoke", "model=ae", "diffusion.noise_assignment=immiscible_per_class"]), (4, 8, 8), 10
    )

"""Input perturbation: train on slightly noisier inputs than the target assumes.

At training time the network only ever sees ``x_t`` built from the true ``x0``; at sampling time
it sees ``x_t`` built from its own earlier, imperfect predictions, a distribution a little off the
one it learned ("exposure bias"). Ning et al. 2023 ("Input Perturbation Reduces Exposure Bias in
Diffusion Models", https://arxiv.org/abs/2301.11706) simulate that error during training: the
noisy input uses ``noise + gamma * xi`` (``xi`` a fresh Gaussian draw) while the regression target
keeps using ``noise``, so the network learns to pull a slightly-off input back. It costs one more
Gaussian draw per step; the paper uses ``gamma = 0.1`` and reports a lower FID at the same training
and sampling budget. Measured on the main job: docs/experiments/training-levers.md.
"""

from __future__ import annotations

import math

import torch

from tinyldm.diffusion.solver import randn_from


def validate_input_perturbation(gamma: object) -> float:
    """``diffusion.input_perturbation`` checked: a number in ``[0, 1]`` (0 = off), else ``ValueError`` naming it."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (0.0 <= gamma <= 1.0) or math.isnan(gamma):
        raise ValueError(f"diffusion.input_perturbation={gamma!r} must be a number in [0, 1] (0: off; the paper's 0.1)")
    return float(gamma)


def perturbed_noise(noise: torch.Tensor, gamma: float, generator: torch.Generator | None) -> torch.Tensor:
    """``noise + gamma * xi``: the noise that builds the *input* ``x_t`` (the target keeps ``noise``).

    ``xi`` is drawn from ``generator`` on its own device, then moved to ``noise``'s (:func:`randn_from`),
    like the training noise itself, so a run stays a pure function of its seed and step.
    """
    return noise + gamma * randn_from(generator, noise.shape, noise)  # (B, C, h, w)

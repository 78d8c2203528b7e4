"""What checkpoints of earlier releases stored, as this release's modules take it: one place for file formats.

A checkpoint stores the hyper-parameters its module was built from. When a release renames, splits or
removes one, the old files must still load and draw the same images, so each LightningModule reads a
checkpoint's hyper-parameters through one of these functions first
(:func:`tinyldm.utils.checkpoints.restore_module` calls its ``upgrade_hyperparameters``). Files of the
current format pass through unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tinyldm.diffusion import from_legacy_config
from tinyldm.diffusion.loss import DiffusionLoss
from tinyldm.diffusion.sampling import is_legacy_sampler, split_legacy_sampler

log = logging.getLogger(__name__)

#: stage-2 hyper-parameters of earlier releases that no longer exist: training-only switches that lost every
#: measurement (docs/experiments/training-levers.md), with the value that meant "off"
_REMOVED_SWITCHES = {"noise_assignment": "independent", "input_perturbation": 0.0}
#: stage-2 hyper-parameters of earlier releases that belong to the run now, not the model (its grids' cadence)
_RUN_SETTINGS = ("grid",)


def upgrade_stage2(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A stage-2 checkpoint's hyper-parameters as ``LatentDiffusionModule`` takes them.

    Earlier releases stored: one ``sampler`` config for the solver and the guidance (split in two, 0.3.0);
    ``min_snr_gamma`` and ``timestep_sampling`` beside the module (now its ``loss``, 0.3.0); the grid cadence
    (now the run's, 0.3.0); a 0.1 ``scheduler`` with clipping in it (``from_legacy_config``: the clipping goes
    to the solver); training switches that were removed. A removed
    switch that was on only shaped how that run trained, not how it samples, so the file still loads, with a
    warning.
    """
    upgraded = dict(hparams)
    if is_legacy_sampler(upgraded.get("sampler")):
        upgraded["sampler"], upgraded["guidance"] = split_legacy_sampler(upgraded["sampler"])
    schedule, clipping = from_legacy_config(upgraded["scheduler"]) if "scheduler" in upgraded else ({}, {})
    if clipping:
        upgraded["sampler"] = {**upgraded["sampler"], **clipping}
    if "scheduler" in upgraded:
        upgraded["scheduler"] = schedule
    if "loss" not in upgraded:
        sampling = dict(upgraded.pop("timestep_sampling", None) or {})
        sampling.pop("stratified", None)  # removed with the other lost switches
        upgraded["loss"] = {
            "_target_": f"{DiffusionLoss.__module__}.{DiffusionLoss.__qualname__}",
            "min_snr_gamma": upgraded.pop("min_snr_gamma", None),
            "timestep_sampling": sampling or None,
        }
    for name in _RUN_SETTINGS:
        upgraded.pop(name, None)
    for name, off in _REMOVED_SWITCHES.items():
        if upgraded.pop(name, off) != off:
            log.warning("This checkpoint was trained with %s, which tinyldm no longer has; it still samples", name)
    return upgraded


def upgrade_stage1(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A stage-1 checkpoint's hyper-parameters as :class:`~tinyldm.lit.autoencoder_module.AutoencoderModule` takes
    them: the scale-equivariance loss, which lost every measurement (docs/experiments/scale-equivariance.md), is
    gone (0.3.0); it only shaped how that run trained, so the file still loads (with a warning if it was on)."""
    upgraded = dict(hparams)
    if upgraded.pop("scale_equivariance", 0.0):
        log.warning("This checkpoint's stage 1 was trained with scale_equivariance, which tinyldm no longer has")
    upgraded.pop("scale_equivariance_factor", None)
    return upgraded

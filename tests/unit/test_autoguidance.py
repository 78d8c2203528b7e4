"""Autoguidance: the guidance's arithmetic and rules, and the guide a stage-2 run keeps (its EMA at ``guide_at``)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers.modules import diffusion_module, save_diffusion_checkpoint
from tests.unit.test_guidance import B, ToyDenoiser, _inputs, _sample
from tinyldm.diffusion import AdaptiveProjectedGuidance, ClassifierFreeGuidance, DDIMSolver, DPMSolver2M
from tinyldm.diffusion.guidance import validate_autoguidance_scale
from tinyldm.lit.ema import validate_guide_at
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.utils.checkpoints import require_stage, restore_module


class ScaledToy(ToyDenoiser):
    """A "weaker" toy model: the same kind of output, scaled, so the guide differs from the model."""

    def __call__(self, x_t, t, context):
        return 0.8 * super().__call__(x_t, t, context)


# ------------------------------------------------------------------ the sampling loop
def test_autoguidance_alone_is_the_papers_extrapolation_from_the_guide():
    """s = 1, w: every step uses ``guide + w * (model - guide)`` (Karras et al. 2024, eq. 2)."""
    model, guide, w = ToyDenoiser(), ScaledToy(), 2.5
    solver = DDIMSolver(steps=10)
    autoguided = _sample(solver, ClassifierFreeGuidance(scale=1.0, autoguidance=w), 0, denoiser=model, guide=guide)

    def extrapolated(x_t, t, context):
        return guide(x_t, t, context) + w * (model(x_t, t, context) - guide(x_t, t, context))

    plain = _sample(solver, ClassifierFreeGuidance(scale=1.0), 0, denoiser=extrapolated)
    torch.testing.assert_close(autoguided, plain)


def test_autoguidance_adds_to_classifier_free_guidance_and_the_guide_sees_the_conditional_batch():
    guide = ScaledToy()
    solver = DDIMSolver(steps=10)
    guidance = ClassifierFreeGuidance(scale=3.0, autoguidance=2.0, interval=[30, 60])
    assert guidance.uses_guide
    _, _, cond, _ = _inputs()
    both = _sample(solver, guidance, 0, guide=guide)
    assert len(guide.calls) == 10  # every step, inside the CFG interval or not
    assert all(x.shape[0] == B and torch.equal(context, cond) for x, _, context in guide.calls)
    cfg_only = _sample(solver, guidance.replace(autoguidance=1.0), 0)
    assert not torch.allclose(both, cfg_only)
    # a guide with its own conditioner reads the conditions through its own tokens
    own = torch.randn_like(cond)
    guide.calls.clear()
    _sample(solver, guidance, 0, guide=guide, guide_context=own)
    assert len(guide.calls) == 10 and all(torch.equal(context, own) for _, _, context in guide.calls)
    # a guide identical to the model adds nothing
    same = _sample(solver, guidance, 0, guide=ToyDenoiser())
    torch.testing.assert_close(same, cfg_only)


def test_autoguidance_off_never_calls_the_guide_and_on_needs_one():
    guide = ScaledToy()
    solver = DPMSolver2M(steps=5)
    off = _sample(solver, ClassifierFreeGuidance(scale=2.0), 0, guide=guide)
    assert guide.calls == []
    assert torch.equal(off, _sample(solver, ClassifierFreeGuidance(scale=2.0), 0))
    with pytest.raises(ValueError, match=r"autoguidance=2 needs a guide denoiser, and none was given"):
        _sample(solver, ClassifierFreeGuidance(scale=3.0, autoguidance=2.0), 0)


@pytest.mark.parametrize("scale", [0.5, 0.0, -1.0, float("nan"), float("inf"), True, "2"])
@pytest.mark.parametrize("cls", [ClassifierFreeGuidance, AdaptiveProjectedGuidance])
def test_autoguidance_scale_below_one_or_not_a_number_is_refused(cls, scale):
    with pytest.raises(ValueError, match=r"^autoguidance must be a (finite )?number in \[1, inf\)"):
        cls(autoguidance=scale)
    with pytest.raises(ValueError, match=r"^autoguidance_scale must be a (finite )?number in \[1, inf\)"):
        validate_autoguidance_scale(scale)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.25, True, "0.25"])
def test_guide_at_outside_zero_one_is_refused_naming_it(fraction):
    with pytest.raises(
        ValueError, match=r"diffusion.guide_at=.* must be null \(no autoguidance guide\) or a number in \(0, 1\)"
    ):
        validate_guide_at(fraction)


# ------------------------------------------------------------------ the guide a run keeps
class RecordEma(L.Callback):
    """The EMA weights as they stand after optimizer step ``step`` (read before the next step's batch)."""

    def __init__(self, step: int) -> None:
        self.step, self.state = step, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step and self.state is None:
            self.state = {k: v.clone() for k, v in module.ema.module.state_dict().items()}


def _fit(module, steps: int, callbacks=(), ckpt_path=None, save_to=None):
    """Fit ``module`` for ``steps`` optimizer steps (from ``ckpt_path`` if given); save to ``save_to`` if given."""
    data = TensorDataset(torch.randn(8, *module.latent_shape), torch.arange(8) % 10)
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=list(callbacks),
    )
    trainer.fit(module, DataLoader(data, batch_size=4), ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return module


def test_the_guide_is_the_ema_at_its_step_and_travels_in_the_checkpoint(compose, tmp_path):
    cfg = compose(["debug=smoke", "model=ae"])
    record = RecordEma(step=3)
    module = _fit(diffusion_module(cfg, guide_at=0.5), steps=6, callbacks=[record])  # 0.5 x 6 steps: step 3

    assert module.guide_ready and int(module.guide_taken_at) == 3
    guide = module.guide.state_dict()
    assert guide.keys() == record.state.keys()
    for key in guide:
        assert torch.equal(guide[key], record.state[key]), key
    final = module.ema.module.state_dict()
    assert any(not torch.equal(guide[k], final[k]) for k in guide if guide[k].is_floating_point())
    assert not any(p.requires_grad for p in module.guide.parameters())

    path = tmp_path / "guided.ckpt"
    save_diffusion_checkpoint(module, path)
    restored = restore_module(type(module), require_stage(path, "diffusion"), path)
    assert restored.guide_ready and int(restored.guide_taken_at) == 3
    pipeline = LatentDiffusionPipeline(restored.eval())
    labels = pipeline.labels(1, classes=[3, 7])
    solver, guidance = DPMSolver2M(steps=4), ClassifierFreeGuidance(scale=1.5)
    plain = pipeline.generate(labels, solver=solver, guidance=guidance, seed=0)
    autoguided = pipeline.generate(labels, solver=solver, guidance=guidance.replace(autoguidance=2.0), seed=0)
    assert autoguided.shape == plain.shape and torch.isfinite(autoguided).all()
    assert not torch.equal(autoguided, plain)

    # the guide's class tokens are its snapshot's, not the final model's, and it reads the labels through them
    seen = []
    restored.guide.register_forward_hook(lambda module, args, output: seen.append(args[2].clone()))
    pipeline.generate(
        labels, solver=DPMSolver2M(steps=2), guidance=ClassifierFreeGuidance(scale=3.0, autoguidance=2.0), seed=0
    )
    own, _ = restored.guide.context(labels, len(labels), drop_labels=False)  # (2, K, D)
    final, _ = restored.ema.module.context(labels, len(labels), drop_labels=False)
    assert not torch.equal(own, final)
    assert len(seen) == 2 and all(torch.equal(context, own) for context in seen)


def test_autoguidance_without_a_guide_is_refused_before_any_sampling(compose):
    cfg = compose(["debug=smoke", "model=ae"])
    solver, autoguided = DPMSolver2M(steps=4), ClassifierFreeGuidance(scale=3.0, autoguidance=2.0)
    no_guide = LatentDiffusionPipeline(diffusion_module(cfg).eval())
    with pytest.raises(ValueError, match=r"trained without one \(diffusion.guide_at=null\)"):
        no_guide.generate(no_guide.labels(1), solver=solver, guidance=autoguided)

    untaken = diffusion_module(compose(["debug=smoke", "model=ae", "guidance.autoguidance=2"]), guide_at=0.25)
    assert untaken.guidance.uses_guide
    with pytest.raises(ValueError, match=r"it was never taken: training has not reached its step"):
        LatentDiffusionPipeline(untaken.eval()).generate(no_guide.labels(1), solver=solver, guidance=autoguided)
    # a grid drawn during training, before the guide is taken, samples without autoguidance instead
    grid = untaken.sample_grid(samples_per_class=1, guidance_scale=1.5)
    assert grid.ndim == 3 and grid.dtype.name == "uint8"


class StopAt(L.Callback):
    """Stops training after optimizer step ``step``: a run killed part-way through its budget."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        trainer.should_stop = trainer.global_step >= self.step


def test_resuming_a_guideless_run_past_the_guide_step_is_refused_before_training_on(compose, tmp_path):
    """A run trained without a guide, resumed with one asked for after its step has passed, cannot take it."""
    smoke = compose(["debug=smoke", "model=ae"])
    guideless = _fit(diffusion_module(smoke), 8, callbacks=[StopAt(4)], save_to=tmp_path / "no_guide.ckpt")
    assert guideless.guide is None and guideless.global_step == 4

    autoguided = compose(["debug=smoke", "model=ae", "guidance.autoguidance=2"])
    late = diffusion_module(autoguided, guide_at=0.25)  # 0.25 x 8 steps: step 2, already passed at step 4
    with pytest.raises(ValueError, match=r"resumes at optimizer step 4 .* past step 2 where diffusion.guide_at=0.25"):
        _fit(late, 8, ckpt_path=tmp_path / "no_guide.ckpt", save_to=tmp_path / "late.ckpt")
    assert not (tmp_path / "late.ckpt").exists()

    # resumed before its step, the guide is added untaken and taken when training reaches the step
    early = diffusion_module(autoguided, guide_at=0.75)  # 0.75 x 8 steps: step 6, ahead of step 4
    _fit(early, 8, ckpt_path=tmp_path / "no_guide.ckpt")
    assert early.guide_ready and int(early.guide_taken_at) == 6

"""The model card: a model folder's README.md, saying what the model is, how it was made and how good it is.

Everything in it comes from the model itself (its configs and parameter counts) or from the files its
training run left (``metrics.json``, ``.hydra/overrides.yaml``, ``resolved_config.yaml``); a figure the run
did not measure is not written, and a ``metrics.json`` that names another checkpoint is not used. The card
follows the layout of Hugging Face model cards (YAML front matter, then prose and tables), so a folder
uploaded there reads as one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tinyldm.lit.diffusion_module import LatentDiffusionModule


@dataclass
class RunRecord:
    """What a training (or ``evaluate.py``) run directory says about one checkpoint."""

    directory: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] | None = None  # the command line's overrides (``.hydra/overrides.yaml``)
    resolved_config: str | None = None  # the run's whole config, resolved (``resolved_config.yaml``)


def find_run(ckpt: str | Path, metrics: str | Path | None = None) -> RunRecord | None:
    """The run that made and measured ``ckpt``: ``metrics``, or ``RUN/metrics.json`` for ``RUN/checkpoints/X.ckpt``.

    The metrics file is used only when it names ``ckpt`` (``diffusion_ckpt`` for a training run, ``ckpt``
    for ``evaluate.py``): a checkpoint saved mid-run, or copied away from its run, gets a card without
    figures rather than the figures of another model. A ``metrics=`` file that names another checkpoint
    is refused.
    """
    ckpt = Path(ckpt).resolve()
    file = Path(metrics) if metrics is not None else ckpt.parent.parent / "metrics.json"
    if not file.is_file():
        if metrics is not None:
            raise FileNotFoundError(f"metrics={str(metrics)!r} does not exist")
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(file)!r} is not a metrics.json ({error})") from None
    named = [record.get(key) for key in ("diffusion_ckpt", "ckpt") if isinstance(record, dict) and record.get(key)]
    if not any(_same_file(name, ckpt) for name in named):
        if metrics is not None:
            raise ValueError(
                f"metrics={str(metrics)!r} measures {named or 'no checkpoint'}, not {str(ckpt)!r}: "
                "give the metrics.json of a run that trained or evaluated this checkpoint"
            )
        return None
    run = RunRecord(directory=file.parent, metrics=record)
    overrides = file.parent / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        run.overrides = [str(item) for item in yaml.safe_load(overrides.read_text(encoding="utf-8")) or []]
    resolved = file.parent / "resolved_config.yaml"
    if resolved.is_file():
        run.resolved_config = resolved.read_text(encoding="utf-8")
    return run


def model_card(module: LatentDiffusionModule, run: RunRecord | None, version: str) -> str:
    """The card's markdown for ``module``, with ``run``'s command and figures when there is one."""
    hp = module.hparams
    conditioner = hp.conditioner
    text = _short(conditioner["_target_"]) == "TextConditioner"
    conditioning = (
        "text prompts"
        if text
        else f"{module.num_classes} class labels"
        if module.is_conditional
        else "none (unconditional)"
    )
    metrics = run.metrics if run is not None else {}
    dataset = metrics.get("dataset") or "unknown (no run record)"
    kind = "text-to-image" if text else "class-conditional" if module.is_conditional else "unconditional"
    tags = ["tinyldm", "latent-diffusion", kind] + ([str(dataset)] if run is not None else [])
    lines = [
        "---",
        "library_name: tinyldm",
        f"tags: [{', '.join(tags)}]",
        "---",
        "",
        f"# tinyldm: {kind} latent diffusion{' on ' + str(dataset) if run is not None else ''}",
        "",
        f"A latent diffusion model in a tinyldm {version} model folder: a stage-1 autoencoder that maps "
        "images to a latent grid and back, and a UNet that denoises that grid, with the condition entering "
        "only through cross-attention. Weights are `safetensors`, configs JSON: the folder holds no pickle.",
        "",
        "## The model",
        "",
        "| part | what |",
        "|---|---|",
        *_model_rows(module, conditioning),
        "",
    ]
    lines += _training(run) + _figures(metrics) + _usage(text)
    return "\n".join(lines) + "\n"


def _model_rows(module: LatentDiffusionModule, conditioning: str) -> list[str]:
    hp = module.hparams
    unet, schedule = hp.unet, hp.scheduler
    size = 32 - 2 * int(hp.image_pad)
    rows = [
        f"| stage 1 | `{_short(hp.autoencoder['_target_'])}`, {_count(module.autoencoder)} parameters: "
        f"{size}×{size} images (padded to 32×32) ↔ latents of shape {tuple(module.latent_shape)} |",
        f"| UNet | `{_short(unet['_target_'])}`, {_count(module.ema.module.unet)} parameters (the EMA weights): "
        f"base width {unet.get('base_channels')} × {tuple(unet.get('channel_mult', ()))}, "
        f"{unet.get('num_res_blocks')} ResNet block(s) per level, each followed by a Transformer block of depth "
        f"{unet.get('transformer_depth')} at levels {tuple(unet.get('attention_levels', ()))} |",
        f"| conditioning | {conditioning}, through `{_short(hp.conditioner['_target_'])}` "
        f"({_count(module.ema.module.conditioner)} parameters) |",
        f"| noise schedule | {schedule.get('beta_schedule')}, {schedule.get('num_train_timesteps')} timesteps, "
        f"{schedule.get('prediction_type')} |",
        f"| sampler | `{_settings(module.solver.as_config())}` |",
        f"| guidance | `{_settings(module.guidance.as_config())}` |",
        "| autoguidance guide | "
        + (f"included (the EMA weights at step {int(module.guide_taken_at)})" if module.guide_ready else "none")
        + " |",
    ]
    return rows


def _training(run: RunRecord | None) -> list[str]:
    if run is None:
        return [
            "## Training",
            "",
            "Not recorded: this folder was exported from a checkpoint without the run directory that trained it.",
            "",
        ]
    metrics = run.metrics
    lines = ["## Training", ""]
    source = metrics.get("dataset_source")
    lines += [f"Data: `{metrics.get('dataset')}`" + (f", read from {source}." if source else "."), ""]
    if run.overrides is not None:
        lines += ["Trained with:", "", "```bash", " ".join(["python train.py", *run.overrides]), "```", ""]
    done = []
    for stage, name in (("ae", "stage 1"), ("ldm", "stage 2")):
        if f"{stage}/steps" in metrics:
            wall = metrics.get(f"{stage}/wall_seconds")
            done.append(f"{name}: {metrics[f'{stage}/steps']} steps" + (f" in {wall:.0f} s" if wall else ""))
    if done:
        reused = f" (stage 1 reused from {metrics['autoencoder_ckpt']})" if metrics.get("autoencoder_reused") else ""
        lines += ["; ".join(done) + reused + ".", ""]
    if run.resolved_config is not None:
        lines += ["The run's whole config, resolved, is `training_config.yaml` beside this card.", ""]
    return lines


#: (key, label, format) of the figures the card shows when the run measured them
FIGURES = (
    ("cond_acc", "conditional accuracy (classifier reads the class asked for)", "{:.1f} %"),
    ("fid", "FID (evaluation classifier's features)", "{:.2f}"),
    ("fid_floor", "real floor: FID of a same-size real subset", "{:.2f}"),
    ("fid_ratio", "FID ÷ floor", "{:.2f}"),
    ("fid_recon", "reconstruction ceiling: FID of that subset through stage 1", "{:.2f}"),
    ("fid_recon_ratio", "FID ÷ ceiling", "{:.2f}"),
    ("recon_acc", "accuracy on those reconstructions", "{:.1f} %"),
    ("diversity", "diversity (within-class spread ÷ real; ≪ 1 is mode collapse)", "{:.3f}"),
)


def _figures(metrics: dict[str, Any]) -> list[str]:
    evaluated = {key[len("eval/") :]: value for key, value in metrics.items() if key.startswith("eval/")}
    if not evaluated:
        return ["## Measured figures", "", "None: no evaluation of this checkpoint was recorded.", ""]
    lines = [
        "## Measured figures",
        "",
        f"From the run's `metrics.json`: {_amount(evaluated.get('num_samples'))} samples drawn with the sampler and "
        f"guidance above, scored against {_amount(evaluated.get('num_reference'))} real held-out images by tinyldm's "
        "evaluation classifier (a CNN trained on the dataset's training split alone; "
        + (
            f"{100 * evaluated['classifier_acc']:.1f} % on real held-out images)."
            if isinstance(evaluated.get("classifier_acc"), float)
            else "its accuracy was not recorded)."
        ),
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key, label, form in FIGURES:
        value = evaluated.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            shown = form.format(100 * value if form.endswith("%") else value)
            if key == "cond_acc" and {"cond_acc_low", "cond_acc_high"} <= evaluated.keys():
                low, high = 100 * evaluated["cond_acc_low"], 100 * evaluated["cond_acc_high"]
                shown += f" (95 % interval {low:.1f}–{high:.1f} %)"
            lines.append(f"| {label} | {shown} |")
    lines += _text_figures({key[len("text/") :]: v for key, v in evaluated.items() if key.startswith("text/")})
    return [*lines, ""]


#: the prompt sets a text model is scored on (:mod:`tinyldm.evaluation.text`), as the card names them
PROMPT_SETS = {
    "seen": "seen prompts",
    "held_out_phrasings": "held-out phrasings",
    "held_out_combinations": "held-out pairs",
}
PROMPT_COLUMNS = ("class_acc", "attribute_acc", "thickness_acc", "slant_acc", "size_acc")


def _text_figures(text: dict[str, Any]) -> list[str]:
    """The prompt figures of a text model: one row per prompt set, and the paired tests."""
    rows = [name for name in PROMPT_SETS if _number(text.get(f"{name}/class_acc"))]
    if not rows:
        return []
    lines = [
        "",
        "Prompt figures: class accuracy (the classifier reads the class the prompt names) and attribute accuracy "
        "(the measured thickness, slant and size fall in the bin the words ask for"
        + (f"; chance {text['chance_attribute_acc']:.2f}" if _number(text.get("chance_attribute_acc")) else "")
        + "):",
        "",
        "| prompts | N | class | attributes | thickness | slant | size |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in rows:
        cells = [
            f"{100 * text[f'{name}/{c}']:.1f} %" if _number(text.get(f"{name}/{c}")) else "–" for c in PROMPT_COLUMNS
        ]
        lines.append(f"| {PROMPT_SETS[name]} | {text.get(f'{name}/num_samples', '–')} | {' | '.join(cells)} |")
    paired = [
        f"{word} {100 * text[f'paired/{word}']:.0f} % of {text.get(f'paired/{word}_pairs', '?')} pairs"
        for word in ("thickness", "slant")
        if _number(text.get(f"paired/{word}"))
    ]
    if paired:
        lines += [
            "",
            "Paired tests (one seed, one word changed; the attribute moves the way the words say): "
            + ", ".join(paired)
            + ".",
        ]
    return lines


def _usage(text: bool) -> list[str]:
    ask = 'prompt="a thick seven slanted left" n=16' if text else "n_per_class=16"
    return [
        "## Use",
        "",
        "```bash",
        "# with tinyldm installed (pip install -e . in its repository)",
        f"python sample.py ckpt=THIS_FOLDER {ask} out=samples.npz",
        "python demo.py ckpt=THIS_FOLDER     # the interactive demo (pip install 'tinyldm[demo]')",
        "```",
        "",
        "```python",
        "from tinyldm.pipeline import LatentDiffusionPipeline",
        "",
        'pipeline = LatentDiffusionPipeline.from_pretrained("THIS_FOLDER")',
        (
            'images = pipeline.generate(["a thin 3"] * 8, seed=0)  # (8, 1, 32, 32) in [-1, 1]'
            if text
            else "images = pipeline.generate(pipeline.labels(n_per_class=8), seed=0)  # (80, 1, 32, 32) in [-1, 1]"
        ),
        "```",
    ]


def _short(target: str) -> str:
    return str(target).rsplit(".", 1)[-1]


def _count(module: Any) -> str:
    return f"{sum(p.numel() for p in module.parameters()):,}"


def _settings(config: dict[str, Any]) -> str:
    rest = ", ".join(f"{key}={value!r}" for key, value in config.items() if key != "_target_")
    return f"{_short(config['_target_'])}({rest})"


def _amount(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "an unrecorded number of"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same_file(name: Any, path: Path) -> bool:
    try:
        return Path(str(name)).resolve() == path
    except (OSError, ValueError):
        return False

"""Generate the parts of the docs that the configs decide, so they cannot drift from what ships.

* ``docs/configuration.md``: every config group, option and key under ``conf/``, with the value each
  option file sets and the comment beside it;
* the "what ships" tables between ``<!-- shipped-settings:begin -->`` and ``<!-- shipped-settings:end -->``
  in ``README.md`` and ``docs/results.md``: each experiment composed as its documented command composes
  it (stage 1, budgets, sampler, guidance, evaluation).

    python scripts/docs_reference.py            # rewrite the generated parts
    python scripts/docs_reference.py --check    # exit 1, naming the stale files, if any differs

``tests/unit/test_docs_reference.py`` runs the check, so a config change that the docs do not follow
fails the suite.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
BEGIN, END = "<!-- shipped-settings:begin -->", "<!-- shipped-settings:end -->"
SHIPPED_IN = ("README.md", "docs/results.md")

#: the experiments whose settings the README and results page state, with the command that runs each
SHIPPED = (
    ("mnist_cond", ["model=vqvae", "+experiment=mnist_cond"], "the main job"),
    ("mnist_text", ["model=vqvae", "+experiment=mnist_text"], "text prompts"),
    ("fashion_cond", ["model=vqvae", "+experiment=fashion_cond"], "Fashion-MNIST, 2 CPU cores"),
    ("fashion_cond_gpu", ["model=vqvae", "trainer=gpu", "+experiment=fashion_cond_gpu"], "Fashion-MNIST, one GPU"),
)
#: how the docs name each solver class a ``conf/sampler`` config targets
SOLVER_NAMES = {
    "DDPMSolver": "DDPM",
    "DDIMSolver": "DDIM",
    "DPMSolver2M": "DPM-Solver++(2M)",
    "DPMSolver2MSDE": "SDE-DPM-Solver++(2M)",
}
#: what each top-level config and group configures, in the order the page lists them
DESCRIPTIONS = {
    "train.yaml": "`python train.py`: which stages run, the seed, resuming.",
    "sample.yaml": "`python sample.py`: what to draw from a stage-2 checkpoint, and where the samples file goes.",
    "evaluate.yaml": "`python evaluate.py`: score a samples file, or a checkpoint's own samples.",
    "edit.yaml": "`python edit.py`: image-to-image, inpainting and interpolation with a stage-2 checkpoint.",
    "export.yaml": "`python export.py`: a stage-2 checkpoint as a model folder with its model card.",
    "demo.yaml": "`python demo.py`: the web demo for one model, served on this machine.",
    "checkpoint_sampling.yaml": "Part of `sample.yaml`, `evaluate.yaml` and `edit.yaml`: the layers that change "
    "the checkpoint's own solver and guidance one setting at a time.",
    "dataset": "The images: which set, where its files are, the split and batches (`tinyldm.data`).",
    "model": "Stage 1: the autoencoder and how it trains (`tinyldm.autoencoders`, `tinyldm.training.stage1`).",
    "scheduler": "The training noise schedule and what the UNet predicts (`tinyldm.diffusion.noise_schedule`).",
    "unet": "The stage-2 denoiser (`tinyldm.unet`).",
    "conditioner": "What the UNet's cross-attention reads: class tokens, a text prompt, or nothing "
    "(`tinyldm.conditioners`, `tinyldm.text`).",
    "sampler": "The solver images are drawn with, one config per solver (`tinyldm.diffusion`: `ddpm`, `ddim`, "
    "`dpm_solver`, `dpm_solver_sde`).",
    "guidance": "How each step's network output is guided, with any solver (`tinyldm.diffusion.guidance`).",
    "diffusion": "Stage 2's training: budget, batch, EMA, autoguidance's guide, loss weighting, timesteps "
    "(`tinyldm.lit.diffusion_module`, `tinyldm.training.stage2`).",
    "evaluation": "The evaluation at the end of training and in `evaluate.py` (`tinyldm.evaluation`).",
    "trainer": "Lightning's `Trainer`: devices, precision, strategy.",
    "logger": "Where metrics and images go (`tinyldm.utils.loggers`).",
    "callbacks": "Lightning callbacks and the sweep summary (`tinyldm.callbacks`).",
    "paths": "Where data, caches and run directories live.",
    "hydra": "Run and sweep directories, logging, launchers.",
    "experiment": "Whole recipes, applied with `+experiment=NAME` after the groups they override.",
    "debug": "`debug=smoke` shrinks every stage to seconds (the tests use it).",
    "hparams_search": "Hyper-parameter searches (`python train.py -m hparams_search=NAME`).",
}
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*|'[^']*'|\"[^\"]*\"):(?P<rest>.*)$")


def _split_comment(text: str) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment); a ``#`` inside quotes or brackets is part of the value."""
    depth, quote = 0, None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "#" and depth == 0 and (i == 0 or text[i - 1] in " \t"):
            return text[:i].strip(), text[i + 1 :].strip()
    return text.strip(), ""


def describe_yaml(path: Path) -> tuple[str, list[tuple[str, str, str]]]:
    """A config file's header comment and its ``(dotted key, value, comment)`` rows, in file order.

    Comments are read from the text (YAML parsers drop them): an inline comment belongs to its key, a
    comment line directly above a key too. The defaults list is one row, its entries joined.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    header: list[str] = []  # the file's own description, line by line
    body_start = 0
    for body_start, line in enumerate(lines):  # noqa: B007 - the index is used after the loop
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            header.append(line[1:].removeprefix(" ").rstrip())
    else:
        body_start = len(lines)
    rows: list[tuple[str, str, str]] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    pending: list[str] = []
    defaults: list[str] = []
    for line in lines[body_start:]:
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        if stripped.startswith("- "):
            if stack and stack[-1][1] == "defaults":
                entry, comment = _split_comment(stripped[2:])
                defaults.append(f"`{entry}`" + (f" ({comment})" if comment else ""))
            pending = []
            continue
        match = KEY_LINE.match(line)
        if not match:
            continue
        indent, key = len(match["indent"]), match["key"].strip("'\"")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, comment = _split_comment(match["rest"])
        comment = " ".join([*pending, comment]).strip()
        pending = []
        dotted = ".".join([*(k for _, k in stack), key])
        if dotted == "defaults":
            stack.append((indent, key))
            continue
        if value:
            rows.append((dotted, value, comment))
        else:
            stack.append((indent, key))
            if comment:
                rows.append((dotted, "", comment))
    if defaults:
        rows.insert(0, ("defaults", "; ".join(defaults), "composed first, in this order"))
    return "\n".join(header), rows


def _header(text: str) -> list[str]:
    """A config file's leading comment, line breaks kept (it often shows commands)."""
    return ["```text", text, "```", ""] if text else []


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(rows: list[tuple[str, str, str]]) -> list[str]:
    out = ["| key | value | what |", "|---|---|---|"]
    for key, value, comment in rows:
        shown = f"`{_cell(value)}`" if value and not value.startswith("`") else _cell(value)
        out.append(f"| `{key}` | {shown} | {_cell(comment)} |")
    return out


def _options(group: Path) -> list[Path]:
    return sorted(group.rglob("*.yaml"))


def configuration_page() -> str:
    """``docs/configuration.md``: the top-level configs, then every group's options, from the files."""
    lines = [
        "# Configuration",
        "",
        "<!-- generated by scripts/docs_reference.py from conf/; edit the configs, then rerun it -->",
        "",
        "Every entry point composes a [Hydra](https://hydra.cc) config from `conf/`: a top-level file",
        "(`train.yaml`, `sample.yaml`, `evaluate.yaml`, `edit.yaml`, `export.yaml`, `demo.yaml`) whose `defaults`",
        "list picks one option of each config group. Config groups mirror the code's packages; each option that",
        "builds an object names its class in `_target_` and holds that class's arguments.",
        "",
        "```bash",
        "python train.py model=vae unet=base            # pick another option of a group",
        "python train.py diffusion.max_steps=1000       # change one key",
        "python train.py +experiment=mnist_cond         # apply a recipe (it overrides groups and keys)",
        "python train.py -m unet.transformer_depth=0,1,2  # sweep: one job per value",
        "```",
        "",
        "A key the config does not have is refused (`+key=value` adds one on purpose). Values are checked",
        "before any work, with an error that names the key and what is allowed. `python train.py --cfg job`",
        "prints the composed config without running anything.",
        "",
    ]
    tops = ("train.yaml", "sample.yaml", "evaluate.yaml", "edit.yaml", "export.yaml", "demo.yaml")
    for name in (*tops, "checkpoint_sampling.yaml"):
        header, rows = describe_yaml(CONF / name)
        lines += [f"## `{name}`", "", DESCRIPTIONS[name], "", *_header(header), *_table(rows), ""]
    groups = sorted(p for p in CONF.iterdir() if p.is_dir())
    order = [g for g in DESCRIPTIONS if (CONF / g).is_dir()]
    groups = [CONF / g for g in order] + [g for g in groups if g.name not in order]
    for group in groups:
        options = _options(group)
        names = [str(p.relative_to(group).with_suffix("")) for p in options]
        lines += [f"## `{group.name}`", "", DESCRIPTIONS.get(group.name, ""), ""]
        lines += ["Options: " + ", ".join(f"`{n}`" for n in names) + ".", ""]
        for option, name in zip(options, names, strict=True):
            header, rows = describe_yaml(option)
            lines += [f"### `{group.name}/{name}`", "", *_header(header)]
            if rows:
                lines += [*_table(rows), ""]
    return "\n".join(lines).rstrip() + "\n"


def _compose(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="train", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _number(value: Any) -> str:
    return f"{float(value):g}".replace("-", "−")


def guidance_text(guidance: Any) -> str:
    """A guidance config as the docs write it, e.g. ``APG s = 3 (η = 0, β = −0.5), autoguidance w = 3``."""
    if str(guidance._target_).endswith(".AdaptiveProjectedGuidance"):
        text = f"APG s = {_number(guidance.scale)} (η = {_number(guidance.eta)}, β = {_number(guidance.momentum)})"
    else:
        text = f"CFG s = {_number(guidance.scale)}"
    if guidance.get("interval"):
        low, high = guidance.interval
        text += f" at t in [{low}, {high}]"
    if float(guidance.autoguidance) != 1.0:
        text += f", autoguidance w = {_number(guidance.autoguidance)}"
    return text


def _budget(section: Any, batch: Any) -> str:
    if section.get("max_steps") is not None:
        return f"{section.max_steps} steps × {batch}"
    return f"{section.max_epochs} epochs × {batch}"


def shipped_table() -> str:
    """The settings each shipped experiment composes to, as a markdown table."""
    rows = [
        "| experiment | command | stage 1 | stage 2 | sampler | guidance | evaluation |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, overrides, what in SHIPPED:
        cfg = _compose(overrides)
        training = cfg.model.training
        stage1 = f"`{cfg.model.name}`, {_budget(training, training.batch_size)}"
        stage2 = f"{_budget(cfg.diffusion, cfg.diffusion.batch_size)}, `unet={cfg.hydra.runtime.choices.unet}`"
        if cfg.diffusion.get("guide_at") is not None:
            stage2 += f", guide at {_number(cfg.diffusion.guide_at)} of it"
        sampler = f"{SOLVER_NAMES[str(cfg.sampler._target_).rsplit('.', 1)[-1]]}, {cfg.sampler.steps} steps"
        evaluation = f"{cfg.evaluation.n_per_class} per class, {cfg.evaluation.classifier_members} classifier"
        evaluation += "s" if int(cfg.evaluation.classifier_members) > 1 else ""
        command = "`python train.py " + " ".join(overrides) + "`"
        rows.append(
            f"| `{name}` ({what}) | {command} | {stage1} | {stage2} | {sampler} | {guidance_text(cfg.guidance)} "
            f"| {evaluation} |"
        )
    return "\n".join(rows) + "\n"


def with_shipped_block(text: str, table: str, where: str) -> str:
    """``text`` with the part between the markers replaced by ``table``; both markers must be there, once."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{where} must hold {BEGIN} and then {END}, once each")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def expected_files() -> dict[Path, str]:
    """Each generated file's path and the text it should hold now."""
    table = shipped_table()
    files = {REPO / "docs" / "configuration.md": configuration_page()}
    for name in SHIPPED_IN:
        path = REPO / name
        files[path] = with_shipped_block(path.read_text(encoding="utf-8"), table, name)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated part is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected_files().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(str(path.relative_to(REPO)))
        if not args.check:
            from tinyldm.utils.files import write_text

            write_text(path, text)
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run: python scripts/docs_reference.py", file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(stale)) if stale else "the generated docs are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())

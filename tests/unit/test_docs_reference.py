"""scripts/docs_reference.py: the configuration page and the "what ships" tables follow the configs."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.helpers.runs import REPO, load_script

docs_reference = load_script("scripts/docs_reference.py")
CFG, APG = "tinyldm.diffusion.ClassifierFreeGuidance", "tinyldm.diffusion.AdaptiveProjectedGuidance"


def test_the_generated_docs_are_current():
    """Fails when a config changed and the docs did not: run ``python scripts/docs_reference.py``."""
    stale = [
        str(path.relative_to(REPO))
        for path, text in docs_reference.expected_files().items()
        if path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"stale: {stale}; run: python scripts/docs_reference.py"


def test_the_shipped_table_states_what_each_experiment_composes_to():
    table = docs_reference.shipped_table()
    main_job = next(line for line in table.splitlines() if line.startswith("| `mnist_cond`"))
    cfg = docs_reference._compose(["model=vqvae", "+experiment=mnist_cond"])
    assert f"{cfg.diffusion.max_steps} steps × {cfg.diffusion.batch_size}" in main_job
    assert f"{cfg.sampler.steps} steps" in main_job and "SDE-DPM-Solver++(2M)" in main_job
    assert docs_reference.guidance_text(cfg.guidance) in main_job
    text_job = next(line for line in table.splitlines() if line.startswith("| `mnist_text`"))
    assert "CFG s = 4 |" in text_job


def test_a_changed_setting_makes_the_stated_one_stale(monkeypatch):
    """The check compares with the configs, so a stated setting the configs no longer ship is caught."""
    real = docs_reference._compose

    def compose_with_another_scale(overrides):
        cfg = real(overrides)
        cfg.guidance.scale = 2.5
        return cfg

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    monkeypatch.setattr(docs_reference, "_compose", compose_with_another_scale)
    assert docs_reference.expected_files()[REPO / "README.md"] != readme


@pytest.mark.parametrize(
    "settings,expected",
    [
        ({"_target_": CFG, "scale": 2, "autoguidance": 1}, "CFG s = 2"),
        (
            {"_target_": APG, "scale": 3, "eta": 0, "momentum": -0.5, "autoguidance": 3},
            "APG s = 3 (η = 0, β = −0.5), autoguidance w = 3",
        ),
        ({"_target_": CFG, "scale": 2, "autoguidance": 1, "interval": [100, 600]}, "CFG s = 2 at t in [100, 600]"),
    ],
)
def test_guidance_is_written_as_the_docs_write_it(settings, expected):
    assert docs_reference.guidance_text(OmegaConf.create(settings)) == expected


def test_config_files_are_read_with_their_comments(tmp_path):
    path = tmp_path / "option.yaml"
    lines = [
        "# @package _global_",
        "# What this option is.",
        "#   python train.py x=y",
        "defaults:",
        "  - base  # first",
        "  - _self_",
        "",
        "name: demo   # the option's name",
        "# the budget",
        "max_steps: 700",
        "net:",
        "  channels: [16, 32]  # one # per level",
        "  label: 'a # b'",
    ]
    path.write_text("\n".join(lines) + "\n")
    header, rows = docs_reference.describe_yaml(path)
    assert header == "What this option is.\n  python train.py x=y"
    assert rows == [
        ("defaults", "`base` (first); `_self_`", "composed first, in this order"),
        ("name", "demo", "the option's name"),
        ("max_steps", "700", "the budget"),
        ("net.channels", "[16, 32]", "one # per level"),
        ("net.label", "'a # b'", ""),
    ]


def test_the_markers_must_be_there_once():
    table = "| a |\n"
    text = f"intro\n{docs_reference.BEGIN}\nold\n{docs_reference.END}\nrest\n"
    assert (
        docs_reference.with_shipped_block(text, table, "x")
        == f"intro\n{docs_reference.BEGIN}\n| a |\n{docs_reference.END}\nrest\n"
    )
    with pytest.raises(ValueError, match="must hold"):
        docs_reference.with_shipped_block("no markers", table, "x.md")

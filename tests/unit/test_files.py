"""Atomic writes: a file is complete or absent; ``replace=False`` never clobbers."""

from __future__ import annotations

import json

import pytest

from tinyldm.utils.files import atomic_write, write_json, write_text


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_write(target, "w") as handle:
            handle.write("half of the new conten")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_write_replaces_in_one_step_and_creates_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_replace_false_refuses_an_existing_file(tmp_path):
    target = tmp_path / "result.json"
    write_json(target, {"first": 1}, replace=False)
    with pytest.raises(FileExistsError):
        write_json(target, {"second": 2}, replace=False)
    assert json.loads(target.read_text()) == {"first": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_write_json_makes_values_json_safe(tmp_path):
    import torch

    record = write_json(tmp_path / "m.json", {"loss": torch.tensor(0.5), "bad": float("nan"), "path": tmp_path})
    assert record == {"loss": 0.5, "bad": "nan", "path": str(tmp_path)}
    assert json.loads((tmp_path / "m.json").read_text()) == record

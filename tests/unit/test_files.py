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


def _full_disk_on_fsync(monkeypatch):
    """The disk fills while the data are flushed: what a real ENOSPC looks like to the writer."""
    import errno
    import os

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("tinyldm.utils.files.os.fsync", fsync)


def test_a_full_disk_says_so_and_keeps_nothing(tmp_path, monkeypatch):
    import errno

    from tinyldm.utils.files import DiskFullError

    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(DiskFullError, match=r"the disk is full .* nothing was kept") as full:
        with atomic_write(target, "w") as handle:
            handle.write("new")
            raise OSError(errno.ENOSPC, "No space left on device")  # as handle.write raises it
    assert full.value.errno == errno.ENOSPC and "metrics.json" in str(full.value)
    _full_disk_on_fsync(monkeypatch)
    with pytest.raises(DiskFullError, match="the disk is full"):
        write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_checkpoint_written_to_a_full_disk_leaves_the_previous_one(tmp_path, monkeypatch):
    """torch's own writer reports this as 'enforce fail at inline_container.cc'; ours names the disk."""
    import torch

    from tinyldm.utils.checkpoints import SafeCheckpointIO, read_checkpoint
    from tinyldm.utils.files import DiskFullError

    path = tmp_path / "last.ckpt"
    io = SafeCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    _full_disk_on_fsync(monkeypatch)
    with pytest.raises(DiskFullError, match=r"the disk is full .*last\.ckpt.*nothing was kept"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_files_written_together_are_all_published_or_none(tmp_path):
    from tinyldm.utils.files import atomic_writes

    npz, png = tmp_path / "s.npz", tmp_path / "s.png"
    with pytest.raises(RuntimeError):
        with atomic_writes([npz, png]) as (a, b):
            b.write(b"grid")
            a.write(b"arrays")
            raise RuntimeError("the second write failed")
    assert not list(tmp_path.iterdir())
    png.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        with atomic_writes([npz, png], replace=False) as (a, b):
            a.write(b"arrays")
            b.write(b"grid")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png"] and png.read_bytes() == b"someone else's"
    with atomic_writes([npz, png]) as (a, b):
        a.write(b"arrays")
        b.write(b"grid")
    assert npz.read_bytes() == b"arrays" and png.read_bytes() == b"grid"

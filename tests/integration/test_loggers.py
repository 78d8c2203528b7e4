"""logger=wandb works offline with no account: history and images land in the offline run dir."""

from __future__ import annotations

from tests.helpers.runs import path_overrides, read_metrics, run_script


def test_wandb_offline_run_holds_history_and_images(tmp_path):
    run_dir = tmp_path / "run"
    run_script(
        "train.py", ["stage=autoencoder", "model=ae", "debug=smoke", "logger=wandb", *path_overrides(tmp_path)], run_dir
    )
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, offline_runs
    files = offline_runs[0] / "files"
    images = list((files / "media" / "images").rglob("reconstructions_*.png"))
    assert images, "the reconstruction grid was not logged"
    history_files = list(offline_runs[0].glob("run-*.wandb"))
    assert len(history_files) == 1, "no history file"
    history = history_files[0].read_bytes()  # protobuf records; metric keys are stored as plain strings
    for key in (b"ae/val/psnr", b"ae/train/loss_step", b"ae/val/reconstructions", b"ae/batch_size_per_device"):
        assert key in history, key
    assert read_metrics(run_dir)["ae/val/psnr"] > 0


def test_wandb_mode_auto_is_offline_without_credentials(monkeypatch, tmp_path):
    from tinyldm.utils.loggers import resolve_wandb_mode

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"


def test_resumed_run_continues_its_wandb_run_and_keeps_csv_history(tmp_path):
    """resume=true logs to the same W&B run id and leaves the interrupted run's CSV history in place."""
    import torch

    run_dir = tmp_path / "run"
    common = [
        "stage=autoencoder",
        "model=ae",
        "debug=smoke",
        "model.training.max_epochs=2",
        "logger=[csv,wandb]",
        *path_overrides(tmp_path),
    ]
    run_script(
        "train.py",
        [*common, "+callbacks.stop._target_=tests.helpers.callbacks.StopAfterEpochs", "+callbacks.stop.epochs=1"],
        run_dir,
    )
    last = run_dir / "checkpoints" / "autoencoder" / "last.ckpt"
    run_id = torch.load(last, map_location="cpu", weights_only=True)["tinyldm"]["wandb_run_id"]
    first_csv = (run_dir / "csv" / "autoencoder" / "metrics.csv").read_text()

    run_script("train.py", [*common, "resume=true"], run_dir)
    offline_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2, offline_runs
    assert all(path.name.endswith(f"-{run_id}") for path in offline_runs), (run_id, offline_runs)
    assert (run_dir / "csv" / "autoencoder" / "metrics.csv").read_text() == first_csv
    resumed_csv = (run_dir / "csv" / "autoencoder-resumed-1" / "metrics.csv").read_text()
    assert "ae/val/psnr" in resumed_csv
    assert read_metrics(run_dir)["resumed_from"] == str(last)

"""Every entry point that reads a checkpoint refuses crafted ones: the payload never runs, the error names the file."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.helpers.payloads import FIXTURES_DIR, PAYLOADS
from tests.helpers.runs import path_overrides, run_script
from tinyldm.training.autoencoder_cache import MARKER_FORMAT
from tinyldm.utils.checkpoints import UnsafeCheckpointError
from tinyldm.utils.files import sha256_of

TRAIN = ["model=ae", "debug=smoke", "logger=none", "evaluation.enabled=false"]


def _plant_cache_entry(compose, tmp_path, checkpoint_path):
    """Put ``checkpoint_path`` where a run with TRAIN's config looks for its stage-1 cache entry, marked complete."""
    from tinyldm.training.autoencoder_cache import AutoencoderCache
    from tinyldm.utils.instantiate import build

    cfg = compose(TRAIN)
    cache = AutoencoderCache.for_run(cfg, build(cfg.dataset))
    cache.entry.mkdir(parents=True)
    cache.checkpoint.write_bytes(checkpoint_path.read_bytes())
    cache.marker.write_text(
        json.dumps(
            {"format": MARKER_FORMAT, "key": cache.key, "metrics": {}, "checkpoint_sha256": sha256_of(cache.checkpoint)}
        )
    )


ENTRY_POINTS = {
    # name: (stage the crafted file pretends to be, how it is fed in)
    "sample": "diffusion",
    "evaluate": "diffusion",
    "autoencoder_ckpt": "autoencoder",
    "ckpt_path": "diffusion",
    "resume": "diffusion",
    "cache_entry": "autoencoder",
}


def _feed(compose, tmp_path, entry_point, evil):
    """Run ``entry_point`` in-process (the scripts are three-line Hydra wrappers around these) on ``evil``."""
    from tinyldm.tasks import evaluate, sample, train

    run_dir = tmp_path / "run"
    if entry_point == "sample":
        return sample.run(compose([f"ckpt={evil}", f"out={tmp_path}/s.npz"], config_name="sample"))
    if entry_point == "evaluate":
        return evaluate.run(compose([f"ckpt={evil}"], config_name="evaluate"))
    if entry_point == "autoencoder_ckpt":
        return train.run(compose([*TRAIN, "stage=diffusion", f"autoencoder_ckpt={evil}"]))
    if entry_point == "ckpt_path":
        return train.run(compose([*TRAIN, f"ckpt_path={evil}"]))
    if entry_point == "resume":
        (run_dir / "checkpoints" / "diffusion").mkdir(parents=True)
        evil.rename(run_dir / "checkpoints" / "diffusion" / "last.ckpt")
        return train.run(compose([*TRAIN, "resume=true"]))
    _plant_cache_entry(compose, tmp_path, evil)
    return train.run(compose(TRAIN))


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_crafted_checkpoint_is_refused(compose, tmp_path, entry_point, payload):
    marker = tmp_path / "marker"
    evil = PAYLOADS[payload](ENTRY_POINTS[entry_point], tmp_path / "evil.ckpt", marker)
    expected_name = {"resume": "last.ckpt", "cache_entry": "autoencoder.ckpt"}.get(entry_point, str(evil))
    with pytest.raises(UnsafeCheckpointError, match=f"{re.escape(expected_name)}.* is unsafe"):
        _feed(compose, tmp_path, entry_point, evil)
    assert not marker.exists(), "the crafted checkpoint ran code"
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_the_script_exits_non_zero_naming_the_file(tmp_path):
    marker = tmp_path / "marker"
    evil = PAYLOADS["pickle"]("diffusion", tmp_path / "evil.ckpt", marker)
    result = run_script(
        "train.py", [*TRAIN, f"ckpt_path={evil}", *path_overrides(tmp_path)], tmp_path / "run", check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and not marker.exists()
    assert f"{evil}' is unsafe" in output, output[-3000:]


@pytest.mark.parametrize("fixture", ["release-0.1.0", "before-one-owner"])
def test_checkpoints_of_earlier_layouts_still_work_at_the_entry_points(compose, tmp_path, fixture):
    """sample.py and stage=diffusion read each earlier layout's files; ckpt_path resumes its training state."""
    from tinyldm.tasks import sample, train

    autoencoder, diffusion = (FIXTURES_DIR / fixture / "autoencoder.ckpt"), (FIXTURES_DIR / fixture / "diffusion.ckpt")
    legacy = [
        line.removeprefix("- ")
        for line in (FIXTURES_DIR / fixture / "overrides.yaml").read_text().splitlines()
        if not line.startswith("- paths.")
    ]
    sample.run(
        compose(
            [f"ckpt={diffusion}", "n_per_class=2", "sampler.steps=5", f"out={tmp_path}/s.npz", "progress=false"],
            config_name="sample",
        )
    )
    assert (tmp_path / "s.npz").exists() and (tmp_path / "s.png").exists()

    metrics = train.run(
        compose([*legacy, "stage=diffusion", f"autoencoder_ckpt={autoencoder}", f"paths.output_dir={tmp_path}/stage2"])
    )
    assert metrics["ldm/epochs"] == 1 and metrics["autoencoder_ckpt"] == str(autoencoder)
    # the earlier run had finished its one epoch: Lightning restores the whole training state, finds nothing left to do
    metrics = train.run(
        compose(
            [
                *legacy,
                "stage=diffusion",
                f"autoencoder_ckpt={autoencoder}",
                f"ckpt_path={diffusion}",
                f"paths.output_dir={tmp_path}/resumed",
            ]
        )
    )
    assert metrics["ldm/epochs"] == 1 and metrics["resumed_from"] == str(diffusion)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_a_checkpoint_from_before_the_refactor_draws_the_images_it_drew_then(compose, tmp_path, sampler):
    """Same file, same seed, same sampler: today's sample.py gives the bytes the previous layout's sample.py gave."""
    from tinyldm.samples_file import read_samples
    from tinyldm.tasks import sample

    folder = FIXTURES_DIR / "before-one-owner"
    sample.run(
        compose(
            [
                f"ckpt={folder / 'diffusion.ckpt'}",
                "n_per_class=1",
                "seed=0",
                f"sampler={sampler}",
                "sampler.steps=5",
                "device=cpu",
                f"out={tmp_path}/s.npz",
                "progress=false",
            ],
            config_name="sample",
        )
    )
    images, labels, _ = read_samples(tmp_path / "s.npz")
    with np.load(folder / f"samples-{sampler}.npz", allow_pickle=False) as then:
        np.testing.assert_array_equal(labels, then["labels"])
        np.testing.assert_array_equal(images, then["images"])

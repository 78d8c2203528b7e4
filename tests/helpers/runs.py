"""Run the real entry points as a user would: paths kept inside a test's temp folder, one thread each.

Test runs keep torch to one thread per process: pytest-xdist runs two workers on two cores, and two
multi-threaded torch processes slow each other down far more than 2x.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "conf"


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "WANDB_MODE": "offline",
            "HYDRA_FULL_ERROR": "1",
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


def path_overrides(tmp: Path, cache: Path | None = None) -> list[str]:
    """Keep every file a test run writes inside ``tmp`` (and the stage-1 cache in ``cache``)."""
    return [f"paths.log_dir={tmp}/outputs", f"paths.data_dir={tmp}/data", f"paths.cache_dir={cache or tmp / 'cache'}"]


def run_script(
    script: str, overrides: list[str], run_dir: Path, timeout: int = 400, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``python <script> overrides... hydra.run.dir=<run_dir>`` from the repo root."""
    command = [sys.executable, str(REPO / script), *overrides, f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def run_repo_script(path: str, *args: str, timeout: int, **env: str) -> subprocess.CompletedProcess:
    """``PATH ARGS`` (repo-relative, e.g. ``scripts/gpu_check.sh``) from the repo root as a user runs it.

    Bash for ``.sh``, this interpreter otherwise; shell scripts get it as ``PYTHON``, so they pass from an
    unactivated venv too. ``env`` adds variables; the result is returned unchecked, for the test to read.
    """
    script = REPO / path
    command = ["bash", str(script)] if path.endswith(".sh") else [sys.executable, str(script)]
    return subprocess.run(
        [*command, *args],
        cwd=REPO,
        env={**subprocess_env(), "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load_script(path: str):
    """A repo script (``scripts/NAME.py``) imported as a module, to test its functions without a subprocess."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def sample_in_process(compose, ckpt, out, steps: int = 4, **overrides):
    """``sample.py ckpt=... out=...`` in this process (no interpreter start), ``overrides`` as key=value."""
    from tinyldm.tasks import sample

    items = [f"ckpt={ckpt}", f"out={out}", "progress=false", f"sampler.steps={steps}"]
    return sample.run(compose([*items, *[f"{k}={v}" for k, v in overrides.items()]], config_name="sample"))

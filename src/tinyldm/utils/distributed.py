"""Keep Hydra and Lightning's script-relaunching DDP from stepping on each other.

With ``strategy=ddp`` Lightning starts ranks 1..N-1 by re-running ``python train.py <argv>``.
In a Hydra *multirun* that argv still holds ``-m`` and the sweep lists (``model=ae,vae``), so each
child would start a whole sweep of its own (with Optuna: different hyperparameters, silently).
The rank-zero job therefore records its own resolved overrides and run directory in the
environment, which the children inherit; :func:`rewrite_child_argv` then replaces the child's argv
with exactly that single job before Hydra parses it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.utilities.rank_zero import rank_zero_only

OVERRIDES_ENV = "TINYLDM_JOB_OVERRIDES"
RUN_DIR_ENV = "TINYLDM_JOB_RUN_DIR"


def remember_job(overrides: Sequence[str], run_dir: Path) -> None:
    """Called by the rank-zero job: what its DDP children must run."""
    os.environ[OVERRIDES_ENV] = json.dumps(list(overrides))
    os.environ[RUN_DIR_ENV] = str(run_dir)


def is_ddp_child() -> bool:
    """A process Lightning's script launcher started (``LOCAL_RANK``/``NODE_RANK`` > 0): it re-runs its parent's job."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


def is_global_zero() -> bool:
    """Whether this process is rank zero of its job: the one that writes run files, grids and the cache.

    Lightning's ``rank_zero_only.rank`` is read from ``RANK`` / ``LOCAL_RANK`` / ``SLURM_PROCID`` /
    ``JSM_NAMESPACE_RANK`` at import (so ``srun`` tasks know their rank before any Trainer exists)
    and set to the Trainer's global rank once one does; ``NODE_RANK`` covers the multi-node script
    launcher, whose node-local rank zeros have ``LOCAL_RANK=0``.
    """
    return getattr(rank_zero_only, "rank", 0) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def rewrite_child_argv(argv: list[str] | None = None) -> list[str]:
    """In a DDP child started by Lightning, run the parent's single job, never a sweep."""
    argv = sys.argv if argv is None else argv
    if not is_ddp_child() or OVERRIDES_ENV not in os.environ:
        return argv
    overrides = json.loads(os.environ[OVERRIDES_ENV])
    rank = os.environ.get("LOCAL_RANK", "0")
    argv[1:] = [
        *overrides,
        f"hydra.run.dir={os.environ[RUN_DIR_ENV]}",
        "hydra.output_subdir=null",
        f"hydra.job.name=train_ddp_process_{rank}",
    ]
    return argv

"""``python tests/helpers/train_killed_while_caching.py OVERRIDES...``: ``train.py`` SIGKILLed mid cache store.

The kill lands after the stage-1 cache entry's checkpoint and config are written and before its
completion marker, the worst moment for a reader that trusted whatever files it finds.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # test callbacks (tests.helpers...) stay importable, as under train.py

import tinyldm.training.autoencoder_cache as autoencoder_cache  # noqa: E402

_write_json = autoencoder_cache.write_json


def _killed_before_the_marker(path, *args, **kwargs):
    if Path(path).name == "complete.json":
        os.kill(os.getpid(), signal.SIGKILL)
    return _write_json(path, *args, **kwargs)


autoencoder_cache.write_json = _killed_before_the_marker
sys.argv = [str(REPO / "train.py"), *sys.argv[1:]]
runpy.run_path(str(REPO / "train.py"), run_name="__main__")

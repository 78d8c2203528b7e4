"""Crafted checkpoints that would run code on a careless reader (tests only).

Both start from a real checkpoint of the previous release (``tests/fixtures/release-0.1.0``), so
everything else about them is valid: only the payload can make a reader refuse them.

* pickle payload: an object whose ``__reduce__`` calls ``exec``, which creates ``marker`` when the
  file is unpickled with ``weights_only=False``;
* target payload: a stored config whose ``_target_`` names ``tinyldm.utils.files.write_text`` (a
  function inside the project's own namespace), which creates ``marker`` when the module is built.
"""

from __future__ import annotations

from pathlib import Path

import torch

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures"
LEGACY_AUTOENCODER = FIXTURES_DIR / "release-0.1.0" / "autoencoder.ckpt"
LEGACY_DIFFUSION = FIXTURES_DIR / "release-0.1.0" / "diffusion.ckpt"


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _legacy(stage: str) -> dict:
    return torch.load(
        LEGACY_AUTOENCODER if stage == "autoencoder" else LEGACY_DIFFUSION, map_location="cpu", weights_only=True
    )


def pickle_payload(stage: str, out: Path, marker: Path) -> Path:
    checkpoint = _legacy(stage)
    checkpoint["callbacks"] = {"innocent-looking": RunsCodeWhenUnpickled(marker)}
    torch.save(checkpoint, out)
    return out


def target_payload(stage: str, out: Path, marker: Path) -> Path:
    checkpoint = _legacy(stage)
    slot = "autoencoder" if stage == "autoencoder" else "conditioner"
    checkpoint["hyper_parameters"][slot] = {
        "_target_": "tinyldm.utils.files.write_text",
        "path": str(marker),
        "text": "code ran",
    }
    torch.save(checkpoint, out)
    return out


PAYLOADS = {"pickle": pickle_payload, "target": target_payload}

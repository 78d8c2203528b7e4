"""The model folder: a trained stage-2 model as plain JSON and ``safetensors``, with no pickle anywhere.

A Lightning checkpoint carries the optimizer state and training-only weights in a format only torch reads.
A model folder holds what sampling needs, one sub-folder per part, as diffusers' ``save_pretrained`` does::

    DIR/model_index.json            the format, the tinyldm version, the parts
    DIR/model.json                  the module's own settings (latent shape, EMA and guide bookkeeping, ...)
    DIR/<part>/config.json          a part's constructor config (``_target_`` and its arguments)
    DIR/<part>/model.safetensors    its weights (the UNet's and the conditioner's: the EMA weights it samples with)
    DIR/<part>/extra_state.json     JSON state a part keeps beside its tensors (a text conditioner's tokenizer)
    DIR/README.md                   the model card (:mod:`tinyldm.model_card`)

with the parts ``autoencoder``, ``unet``, ``conditioner``, ``scheduler`` (the noise schedule), ``sampler``
and ``guidance`` (what the run evaluated with), and ``guide`` (the autoguidance guide's weights) when the
model has one. Reading one is as careful as reading a checkpoint: ``safetensors`` and ``json`` only, every
``_target_`` inside the allow-list (:func:`tinyldm.utils.instantiate.check_file_targets`), and every tensor
checked against the model its configs describe, the file named in each error. Writing one is atomic: a
temp folder renamed into place, and an existing folder is never replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from tinyldm import __version__
from tinyldm.lit.diffusion_module import LatentDiffusionModule
from tinyldm.utils.checkpoints import CorruptCheckpointError, UnsafeCheckpointError
from tinyldm.utils.files import write_bytes, write_json, write_text
from tinyldm.utils.instantiate import UnsafeTargetError, check_file_targets

FORMAT, VERSION = "tinyldm-model-folder", 1
#: the parts with weights: the module's state-dict prefix each one's tensors come from
WEIGHTS = {"autoencoder": "autoencoder.", "unet": "ema.module.unet.", "conditioner": "ema.module.conditioner."}
#: the parts that are configs only
CONFIGS = ("scheduler", "sampler", "guidance")
_EXTRA = "_extra_state"


def save_model_folder(
    module: LatentDiffusionModule, path: str | Path, card: str | None = None, files: Mapping[str, str] | None = None
) -> Path:
    """Write ``module`` as a model folder at ``path`` (refused if it exists), ``card`` as its README.md.

    ``files`` are more text files to keep beside the card (``{name: text}``, e.g. the training config).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{str(path)!r} already exists: a model folder is never written over; choose another")
    taken = ("README.md", "model.json", "model_index.json", "guide", *WEIGHTS, *CONFIGS)
    for name in files or {}:
        if Path(name).name != name or name in taken:
            raise ValueError(f"extra file name {name!r} is not allowed: a plain file name the folder does not use")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    hparams = dict(module.hparams)
    state = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    try:
        parts = {}
        for part, prefix in WEIGHTS.items():
            parts[part] = _write_part(temp / part, hparams[part], _strip(state, prefix))
        for part in CONFIGS:
            write_json(temp / part / "config.json", hparams[part])
            parts[part] = part
        if module.guide_ready:
            parts["guide"] = _write_part(temp / "guide", None, _strip(state, "guide."))
        own = {key: value for key, value in hparams.items() if key not in (*WEIGHTS, *CONFIGS)}
        own["ema_updates"] = int(state["ema.n_averaged"])
        own["guide_taken_at"] = int(state["guide_taken_at"]) if "guide_taken_at" in state else None
        write_json(temp / "model.json", own)
        index = {"format": FORMAT, "version": VERSION, "tinyldm": __version__, "parts": sorted(parts)}
        write_json(temp / "model_index.json", index)
        if card is not None:
            write_text(temp / "README.md", card)
        for name, text in (files or {}).items():
            write_text(temp / name, text)
        os.rename(temp, path)  # the folder appears whole, or not at all
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return path


def load_model_folder(path: str | Path) -> LatentDiffusionModule:
    """Read a model folder written by :func:`save_model_folder` (data only; refusing anything else, naming the file)."""
    path = Path(path)
    index = _read_json(path / "model_index.json")
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise CorruptCheckpointError(
            f"{str(path / 'model_index.json')!r} is not a tinyldm model folder index "
            f"(format {index.get('format')!r}, version {index.get('version')!r}; expected {FORMAT!r}, {VERSION})"
        )
    hparams = _read_config(path / "model.json")
    ema_updates, guide_taken_at = hparams.pop("ema_updates", 0), hparams.pop("guide_taken_at", None)
    for part in (*WEIGHTS, *CONFIGS):
        hparams[part] = _read_config(path / part / "config.json")
    try:
        module = LatentDiffusionModule(**LatentDiffusionModule.upgrade_hyperparameters(hparams))
    except (TypeError, ValueError, KeyError) as error:
        raise CorruptCheckpointError(
            f"model folder {str(path)!r} is malformed: its configs do not build a model "
            f"({type(error).__name__}: {error})"
        ) from error
    state: dict[str, torch.Tensor] = {}
    for part, prefix in WEIGHTS.items():
        tensors = _read_part(path / part)
        state.update({prefix + key: value for key, value in tensors.items()})
        if part != "autoencoder":  # the weights it trains are not kept: the EMA weights stand in for them
            state.update({prefix.replace("ema.module.", "denoiser.") + key: value for key, value in tensors.items()})
    state["ema.n_averaged"] = torch.tensor(int(ema_updates), dtype=torch.long)
    if module.guide is not None:
        if (path / "guide").is_dir():
            state.update({f"guide.{key}": value for key, value in _read_part(path / "guide").items()})
            state["guide_taken_at"] = torch.tensor(int(guide_taken_at if guide_taken_at is not None else 0))
        else:
            state.update({f"guide.{k}": v for k, v in module.guide.state_dict().items()})
            state["guide_taken_at"] = torch.tensor(-1, dtype=torch.long)
    _check_tensors(module, state, path)
    module.load_state_dict(state)
    return module.eval()


def is_model_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "model_index.json").is_file()


def _write_part(folder: Path, config: Any, tensors: dict[str, torch.Tensor]) -> str:
    """``folder``'s config.json (when given), its tensors as model.safetensors, its JSON state as extra_state.json."""
    extra = {key: tensors.pop(key) for key in [k for k in tensors if k.endswith(_EXTRA)]}
    if config is not None:
        write_json(folder / "config.json", config)
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes(folder / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    if extra:
        decoded = {key: json.loads(bytes(value.numpy()).decode("utf-8")) for key, value in extra.items()}
        write_json(folder / "extra_state.json", decoded)
    return folder.name


def _read_part(folder: Path) -> dict[str, torch.Tensor]:
    file = folder / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"model folder part {str(file)!r} does not exist")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as error:  # not a safetensors file: a pickle, say, or truncated
        raise CorruptCheckpointError(f"{str(file)!r} is not a readable safetensors file ({error})") from None
    extra_file = folder / "extra_state.json"
    if extra_file.is_file():
        for key, value in _read_json(extra_file).items():
            tensors[key] = torch.frombuffer(bytearray(json.dumps(value).encode("utf-8")), dtype=torch.uint8)
    return tensors


def _read_config(file: Path) -> dict[str, Any]:
    """A JSON config whose every ``_target_`` is inside the allow-list (and that holds no interpolation)."""
    config = _read_json(file)
    try:
        check_file_targets(config, f"model folder file {str(file)!r}")
    except UnsafeTargetError as error:
        raise UnsafeCheckpointError(str(error)) from None
    return config


def _check_tensors(module: LatentDiffusionModule, state: dict[str, torch.Tensor], path: Path) -> None:
    """Every tensor the model needs, of its shape, and none it does not: else an error naming the part file."""
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}

    def file_of(key: str) -> str:
        prefixes = {part: (prefix, prefix.replace("ema.module.", "denoiser.")) for part, prefix in WEIGHTS.items()}
        part = next((part for part, starts in prefixes.items() if key.startswith(starts)), "guide")
        return str(path / part / "model.safetensors")

    problems = [f"{file_of(k)}: {k} is missing" for k in expected if k not in state and not k.endswith(_EXTRA)]
    problems += [f"{file_of(k)}: {k} is not part of this model" for k in state if k not in expected]
    problems += [
        f"{file_of(k)}: {k} is {tuple(state[k].shape)}, the model's is {expected[k]}"
        for k in expected
        if k in state and not k.endswith(_EXTRA) and tuple(state[k].shape) != expected[k]
    ]
    if problems:
        shown = "; ".join(problems[:4]) + ("; ..." if len(problems) > 4 else "")
        raise CorruptCheckpointError(
            f"model folder {str(path)!r}: {len(problems)} tensors do not fit its configs: {shown}"
        )


def _read_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise FileNotFoundError(f"{str(file)!r} does not exist (is this a tinyldm model folder?)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptCheckpointError(f"{str(file)!r} is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{str(file)!r} holds a {type(data).__name__}, not a JSON object")
    return data


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}

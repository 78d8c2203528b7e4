"""Model folders: a stage-2 model written as JSON + safetensors and read back exactly, refusing crafted folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers.modules import diffusion_module
from tests.helpers.payloads import RunsCodeWhenUnpickled
from tinyldm.model_folder import is_model_folder, load_model_folder, save_model_folder
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.utils.checkpoints import CorruptCheckpointError, UnsafeCheckpointError

FEW_STEPS = {"steps": 3}


@pytest.fixture()
def class_model(compose):
    """The main job's model (SDE solver, APG, autoguidance) on the smoke config, with a guide taken."""
    module = diffusion_module(compose(["model=vqvae", "+experiment=mnist_cond", "debug=smoke"]))
    with torch.no_grad():  # weights that differ from a fresh build's, so a part left unread would show
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and name.startswith(("ema.module.", "guide.")):
                tensor.add_(0.01 * torch.randn_like(tensor))
        module.guide_taken_at.fill_(7)
    return module.eval()


@pytest.fixture()
def text_model(compose):
    return diffusion_module(compose(["model=vqvae", "+experiment=mnist_text", "debug=smoke"])).eval()


def _same_state(a: torch.nn.Module, b: torch.nn.Module, prefixes=("autoencoder.", "ema.", "guide")) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if key.startswith(prefixes):
            assert torch.equal(sa[key], sb[key]), key


def test_a_class_model_reads_back_exactly_and_draws_the_same_images(class_model, tmp_path):
    pipeline = LatentDiffusionPipeline(class_model)
    folder = pipeline.save_pretrained(tmp_path / "model", card="# card\n", files={"notes.txt": "hello"})
    assert is_model_folder(folder) and (folder / "README.md").read_text() == "# card\n"
    assert (folder / "notes.txt").read_text() == "hello"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["format"] == "tinyldm-model-folder" and "guide" in index["parts"]
    assert not list(tmp_path.glob(".*tmp"))  # the temp folder became the model folder
    loaded = LatentDiffusionPipeline.from_pretrained(folder)
    _same_state(class_model, loaded.model)
    # the training weights are not kept: the EMA weights stand in for them
    assert torch.equal(loaded.model.denoiser.unet.conv_in.weight, class_model.ema.module.unet.conv_in.weight)
    assert loaded.model.guide_ready and int(loaded.model.guide_taken_at) == 7
    assert loaded.solver.as_config() == pipeline.solver.as_config()
    assert loaded.guidance.as_config() == pipeline.guidance.as_config()
    labels = pipeline.labels(n_per_class=1)
    solver, guidance = pipeline.sampling_for(FEW_STEPS)
    drawn = pipeline.generate(labels, solver=solver, guidance=guidance, seed=3)
    assert torch.equal(drawn, loaded.generate(labels, solver=solver, guidance=guidance, seed=3))
    # the folder holds no pickle: every file is JSON, safetensors or text
    suffixes = {path.suffix for path in folder.rglob("*") if path.is_file()}
    assert suffixes <= {".json", ".safetensors", ".md", ".txt"}


def test_a_text_model_keeps_its_tokenizer(text_model, tmp_path):
    folder = save_model_folder(text_model, tmp_path / "text")
    extra = json.loads((folder / "conditioner" / "extra_state.json").read_text())
    assert "tokenizer" in extra["_extra_state"]  # the tokenizer's own JSON, readable without tinyldm
    loaded = load_model_folder(folder)
    _same_state(text_model, loaded)
    prompts = ["a thick seven", "a thin 3 slanted left"]
    solver, guidance = LatentDiffusionPipeline(text_model).sampling_for(FEW_STEPS)
    a = LatentDiffusionPipeline(text_model).generate(prompts, solver=solver, guidance=guidance, seed=0)
    b = LatentDiffusionPipeline(loaded).generate(prompts, solver=solver, guidance=guidance, seed=0)
    assert torch.equal(a, b)


def test_a_folder_is_never_written_over_and_a_failed_write_leaves_nothing(class_model, tmp_path, monkeypatch):
    folder = save_model_folder(class_model, tmp_path / "model")
    before = sorted(p.name for p in folder.rglob("*"))
    with pytest.raises(FileExistsError, match="never written over"):
        save_model_folder(class_model, folder)
    assert sorted(p.name for p in folder.rglob("*")) == before

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tinyldm.model_folder.write_json", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_model_folder(class_model, tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no half folder, no temp folder
    with pytest.raises(ValueError, match="extra file name '../x' is not allowed"):
        save_model_folder(class_model, tmp_path / "third", files={"../x": "no"})


@pytest.fixture()
def folder(class_model, tmp_path) -> Path:
    return save_model_folder(class_model, tmp_path / "model")


def test_a_pickle_in_a_weights_file_is_refused_without_running(folder, tmp_path):
    marker = tmp_path / "marker"
    weights = folder / "unet" / "model.safetensors"
    torch.save({"weight": RunsCodeWhenUnpickled(marker)}, weights)
    with pytest.raises(CorruptCheckpointError, match=r"unet/model\.safetensors.*not a readable safetensors file"):
        load_model_folder(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("file", "where", "value"),
    [
        ("unet/config.json", ("_target_",), "os.system"),
        ("autoencoder/config.json", ("_target_",), "tinyldm.utils.files.write_text"),
        ("model.json", ("optimizer", "_target_"), "builtins.eval"),
        ("sampler/config.json", ("steps",), "${oc.env:HOME}"),
    ],
)
def test_a_config_outside_the_allow_list_is_refused_naming_the_file(folder, file, where, value):
    path = folder / file
    config = json.loads(path.read_text())
    node = config
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    path.write_text(json.dumps(config))
    with pytest.raises(UnsafeCheckpointError, match=rf"{file.replace('.', '[.]')}.*unsafe"):
        load_model_folder(folder)


def test_a_missing_or_mismatched_tensor_is_refused_naming_the_file(folder):
    weights = folder / "unet" / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(key for key in tensors if key.endswith("conv_in.weight"))
    save_file({k: v for k, v in tensors.items() if k != name}, str(weights))
    with pytest.raises(CorruptCheckpointError, match=rf"unet/model\.safetensors: ema\.module\.unet\.{name} is missing"):
        load_model_folder(folder)
    save_file({**tensors, name: torch.zeros(3, 3)}, str(weights))
    with pytest.raises(CorruptCheckpointError, match=r"unet/model\.safetensors: .*conv_in\.weight is \(3, 3\)"):
        load_model_folder(folder)
    save_file({**tensors, "extra.weight": torch.zeros(1)}, str(weights))
    with pytest.raises(CorruptCheckpointError, match=r"unet/model\.safetensors: .*extra\.weight is not part"):
        load_model_folder(folder)


def test_a_broken_or_foreign_folder_is_refused_naming_the_file(folder, tmp_path):
    (folder / "scheduler" / "config.json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match=r"scheduler/config\.json' is not JSON"):
        load_model_folder(folder)
    (folder / "model_index.json").write_text(json.dumps({"format": "diffusers", "version": 1}))
    with pytest.raises(CorruptCheckpointError, match="not a tinyldm model folder index"):
        load_model_folder(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a tinyldm model folder.*export.py"):
        LatentDiffusionPipeline.load(tmp_path / "empty")

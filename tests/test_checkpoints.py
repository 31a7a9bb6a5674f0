"""Checkpoints: safe loading (weights_only), versioning, clear errors, fp16 export and the model registry."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from train_fixtures import TINY_SIZES, tiny_model

from crossview import __version__
from crossview.checkpoints import (
    FORMAT_VERSION,
    MODELS_DIR_ENV,
    CheckpointError,
    export_model,
    list_registered_models,
    load_checkpoint,
    load_model,
    models_dir,
    read_registry,
    register_model,
    resolve_model,
    save_checkpoint,
)
from crossview.errors import CrossviewError

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3).eval()


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory, model) -> Path:
    """A checkpoint with training state (tests must not modify it)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return save_checkpoint(
        tmp_path_factory.mktemp("run") / "last.pt",
        model=model,
        optimizer=optimizer,
        state={"epoch": 2, "step_in_epoch": 1, "rng": {"torch": torch.get_rng_state()}},
        config={"seed": 5, "optim": {"lr": 1e-3, "betas": (0.9, 0.99)}},
        metrics={"train_loss": 0.5},
    )


def _outputs(model, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pano = torch.rand(2, 3, TINY_SIZES["pano_height"], TINY_SIZES["pano_width"], generator=generator)
    chips = torch.rand(2, 3, TINY_SIZES["aerial_size"], TINY_SIZES["aerial_size"], generator=generator)
    with torch.no_grad():
        return model.encode_ground(pano, camera="panorama").descriptor, model.encode_aerial(chips).descriptor


def test_round_trip_rebuilds_the_same_model(checkpoint_file, model):
    checkpoint = load_checkpoint(checkpoint_file)
    assert checkpoint.format_version == FORMAT_VERSION and checkpoint.crossview_version == __version__
    assert checkpoint.model_config == model.config
    assert checkpoint.config == {"seed": 5, "optim": {"lr": 1e-3, "betas": [0.9, 0.99]}}  # JSON-plain config
    assert checkpoint.metrics == {"train_loss": 0.5}
    assert checkpoint.state["epoch"] == 2 and torch.equal(checkpoint.state["rng"]["torch"], torch.get_rng_state())
    assert checkpoint.optimizer["param_groups"][0]["lr"] == 1e-3
    assert checkpoint.sha256 == hashlib.sha256(checkpoint_file.read_bytes()).hexdigest()
    rebuilt = checkpoint.build_model()
    assert not rebuilt.training
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key
    for ours, theirs in zip(_outputs(model), _outputs(rebuilt), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_file_loads_with_the_safe_loader_alone(checkpoint_file):
    """Only tensors and plain values inside: plain torch.load(weights_only=True) accepts the file."""
    payload = torch.load(checkpoint_file, weights_only=True)
    assert payload["format"] == "crossview-checkpoint"
    assert set(payload) >= {"format_version", "crossview_version", "config", "model_config", "state_dict", "metrics"}


def test_load_model_by_path(checkpoint_file, model):
    loaded = load_model(checkpoint_file)
    torch.testing.assert_close(_outputs(loaded)[0], _outputs(model)[0], rtol=0, atol=0)


def test_save_is_atomic_and_a_failed_save_keeps_the_old_file(tmp_path, model):
    path = save_checkpoint(tmp_path / "last.pt", model=model, metrics={"a": 1})
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(path, model=model, state={"bad": lambda: None})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


def test_half_weights_are_smaller_and_load_as_float32(tmp_path, model, checkpoint_file):
    full = save_checkpoint(tmp_path / "full.pt", model=model)
    half = export_model(checkpoint_file, tmp_path / "half.pt", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    checkpoint = load_checkpoint(half)
    assert checkpoint.optimizer is None and checkpoint.state == {}  # model only
    assert checkpoint.config["seed"] == 5  # the training config travels along
    for key, value in model.state_dict().items():
        loaded = checkpoint.state_dict[key]
        assert loaded.dtype == value.dtype, key
        expected = value.half().to(value.dtype) if value.dtype == torch.float32 else value
        assert torch.equal(loaded, expected), key
    torch.testing.assert_close(_outputs(checkpoint.build_model())[0], _outputs(model)[0], rtol=0, atol=2e-2)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert isinstance(info.value, CrossviewError) and isinstance(info.value, ValueError)


def test_truncated_file_is_a_clear_error(tmp_path, checkpoint_file):
    data = checkpoint_file.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)


def test_not_a_torch_file_is_a_clear_error(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        load_checkpoint(text)


def test_a_plain_state_dict_is_a_foreign_file(tmp_path, model):
    foreign = tmp_path / "foreign.pt"
    torch.save(model.state_dict(), foreign)
    with pytest.raises(CheckpointError, match=r"not a crossview checkpoint.*plain state dict"):
        load_checkpoint(foreign)
    torch.save([1, 2, 3], foreign)
    with pytest.raises(CheckpointError, match=r"not a crossview checkpoint.*list"):
        load_checkpoint(foreign)


class _Trap:
    """Unpickling this would call _spring(): the safe loader must refuse before running anything."""

    sprung = False

    def __reduce__(self):
        return (_spring, ())


def _spring():
    _Trap.sprung = True
    return "sprung"


def test_a_file_with_code_objects_is_refused_without_running_them(tmp_path):
    path = tmp_path / "trap.pt"
    torch.save({"format": "crossview-checkpoint", "payload": _Trap()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    assert not _Trap.sprung


def test_newer_format_version_is_refused(tmp_path, checkpoint_file):
    payload = torch.load(checkpoint_file, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.pt"
    torch.save(payload, newer)
    with pytest.raises(CheckpointError, match=f"format {FORMAT_VERSION + 1}.*upgrade crossview"):
        load_checkpoint(newer)


def test_weights_that_do_not_fit_the_architecture_are_a_clear_error(tmp_path, checkpoint_file):
    payload = torch.load(checkpoint_file, weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(broken)


# ---- registry ----------------------------------------------------------------------------------------------


def _registry(folder: Path, entries: dict) -> None:
    (folder / "registry.json").write_text(json.dumps({"models": entries}), encoding="utf-8")


def test_registry_name_resolves_with_its_checksum(tmp_path, model, monkeypatch):
    folder = tmp_path / "models"
    shipped = save_checkpoint(folder / "tiny-v1.pt", model=model, half=True)
    entry = register_model("tiny-v1", shipped, description="a test model", directory=folder)
    assert entry["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert entry["map_modality"] == "aerial" and entry["architecture"] == model.config["name"]
    assert read_registry(folder)["tiny-v1"] == entry
    assert resolve_model("tiny-v1", directory=folder) == (shipped, "tiny-v1", entry["sha256"])
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))  # how commands find a models folder elsewhere
    assert models_dir() == folder and list_registered_models() == ["tiny-v1"]
    checkpoint = load_checkpoint("tiny-v1")
    assert checkpoint.name == "tiny-v1" and checkpoint.path == shipped


def test_registry_checksum_mismatch_is_refused(tmp_path, model):
    folder = tmp_path / "models"
    shipped = save_checkpoint(folder / "tiny-v1.pt", model=model)
    _registry(folder, {"tiny-v1": {"file": "tiny-v1.pt", "sha256": "0" * 64}})
    with pytest.raises(CheckpointError, match=r"SHA-256.*corrupt or was replaced"):
        resolve_model("tiny-v1", directory=folder)
    register_model("tiny-v1", shipped, directory=folder)
    resolve_model("tiny-v1", directory=folder)  # now it matches
    with shipped.open("r+b") as handle:  # one flipped byte
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(CheckpointError, match="SHA-256"):
        resolve_model("tiny-v1", directory=folder)


def test_unknown_name_lists_the_registered_models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    _registry(folder, {"b-model": {"file": "b.pt", "sha256": ""}, "a-model": {"file": "a.pt", "sha256": ""}})
    with pytest.raises(CheckpointError, match=r"unknown model 'synth-v9'.*\(a-model, b-model\)"):
        resolve_model("synth-v9", directory=folder)
    with pytest.raises(CheckpointError, match=r"its file .* is missing"):
        resolve_model("a-model", directory=folder)
    with pytest.raises(CheckpointError, match=re.escape("checkpoint file not found: runs/x/last.pt")):
        resolve_model("runs/x/last.pt", directory=folder)  # a path, not a name


def test_registry_entries_cannot_point_outside_the_folder(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    _registry(folder, {"evil": {"file": "../secret.pt", "sha256": ""}})
    with pytest.raises(CheckpointError, match="plain file name"):
        resolve_model("evil", directory=folder)


def test_malformed_registry_is_a_clear_error(tmp_path):
    (tmp_path / "registry.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        read_registry(tmp_path)
    (tmp_path / "registry.json").write_text('{"models": []}')
    with pytest.raises(CheckpointError, match="expected"):
        read_registry(tmp_path)
    assert read_registry(tmp_path / "absent") == {}


def test_shipped_registry_is_valid_and_its_files_match(monkeypatch):
    """models/registry.json of the repository: every entry's file is there with the recorded SHA-256."""
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    assert models_dir() == REPO_ROOT / "models"
    registry = read_registry()
    for name, entry in registry.items():
        path, resolved_name, _ = resolve_model(name)
        assert resolved_name == name and path.parent == REPO_ROOT / "models"
        assert path.stat().st_size <= 30 * 1024 * 1024, f"{name}: shipped models must stay under 30 MB"
        assert load_checkpoint(name).model_config.get("map_modality", "aerial") == entry.get("map_modality", "aerial")

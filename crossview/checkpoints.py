"""Checkpoints (versioned state dicts + configs + metrics) and the registry of shipped models.

A checkpoint is a ``torch.save``'d dict of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)``: loading never runs code from the file. Its keys:

- ``format`` = ``"crossview-checkpoint"``, ``format_version`` (:data:`FORMAT_VERSION`), ``crossview_version``,
  ``created`` (ISO 8601 UTC);
- ``model_config``: the encoder's config (``model.config``: name, sizes, ...), enough to rebuild the network with
  :func:`crossview.encoders.model_from_config`;
- ``state_dict``: the network's weights (``weights_dtype`` ``"float32"``, or ``"float16"`` for a shipped model,
  cast back to float32 on load);
- ``config``: the resolved training configuration (``{}`` when unknown), ``metrics``: a flat dict of numbers;
- training state, empty in an exported model: ``state`` (epoch, step, RNG states, loss parameters, ...),
  ``optimizer``, ``scheduler``, ``scaler`` (their ``state_dict()`` or None).

Registry: ``models/registry.json`` in the repository (the folder beside the ``crossview`` package,
``Path(crossview.__file__).parents[1] / "models"``; the environment variable ``CROSSVIEW_MODELS_DIR`` points
elsewhere) maps a name to a file in that folder and its SHA-256::

    {"models": {"synth-v1": {"file": "synth-v1.pt", "sha256": "...", "description": "...",
                             "map_modality": "aerial"}}}

Every command that takes ``--model NAME|CKPT`` resolves it with :func:`resolve_model`: an existing file is used
as is, a registry name is checked against its SHA-256.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import crossview
from crossview import __version__
from crossview.errors import CrossviewError
from crossview.fsio import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from torch import nn

FORMAT = "crossview-checkpoint"
FORMAT_VERSION = 1
"""Version of the checkpoint layout; a file with a larger version is refused (written by a newer crossview)."""

REGISTRY_FILE = "registry.json"
MODELS_DIR_ENV = "CROSSVIEW_MODELS_DIR"


class CheckpointError(CrossviewError, ValueError):
    """A checkpoint or registry entry is missing, corrupt, foreign, too new, or does not match its checksum."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint (see the module docstring for the keys).

    Attributes:
        path: the file read.
        format_version: layout version of the file.
        crossview_version: version of crossview that wrote it.
        model_config: the encoder's config dict.
        state_dict: the network's weights, float32.
        config: the resolved training configuration ({} when unknown).
        metrics: numbers recorded with it (training loss, evaluation recalls, ...).
        state: training state (epoch, step, RNG states, ...); {} in an exported model.
        optimizer, scheduler, scaler: their state dicts, or None.
        created: ISO 8601 time of writing.
        name: the registry name it was resolved from, or None.
        sha256: hex SHA-256 of the file.
    """

    path: Path
    format_version: int
    crossview_version: str
    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    created: str = ""
    name: str | None = None
    sha256: str = ""

    def build_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """The network with these weights, in eval mode on ``device``.

        Raises:
            CheckpointError: the weights do not fit the architecture of ``model_config``.
        """
        from crossview.encoders import model_from_config

        try:
            model = model_from_config(self.model_config)
        except CrossviewError as error:
            raise CheckpointError(f"checkpoint {self.path}: cannot rebuild its model: {error}") from None
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as error:
            first = " ".join(str(error).split())[:400]
            raise CheckpointError(f"checkpoint {self.path}: weights do not fit the model {first}") from None
        return model.to(device).eval()


# ---- writing -----------------------------------------------------------------------------------------------


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` (or ``torch.compile``) wrapper, else itself."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def _weights(model: nn.Module, half: bool) -> dict[str, torch.Tensor]:
    state = unwrap_model(model).state_dict()
    weights = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        if half and tensor.dtype == torch.float32:
            tensor = tensor.half()
        weights[key] = tensor.clone()
    return weights


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        torch.save(obj, temp)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    state: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write a checkpoint atomically (a temporary file in the same folder, then a rename).

    Args:
        path: output file (folders are created).
        model: the network (a ``DistributedDataParallel`` wrapper is unwrapped); it must have a JSON-ready
            ``config`` dict (encoders' ``CrossViewModel``).
        optimizer, scheduler, scaler: saved through their ``state_dict()`` when given.
        state: training state; tensors, numbers, strings, lists and dicts only.
        config: the resolved training configuration.
        metrics: numbers to record.
        half: store float32 weights as float16 (half the size, for shipped models); loading casts back.

    Returns:
        The path written.
    """
    path = Path(path)
    net = unwrap_model(model)
    model_config = getattr(net, "config", None)
    if not isinstance(model_config, Mapping):
        raise CheckpointError(f"cannot save {type(net).__name__}: it has no config dict to rebuild it from")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "crossview_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_config": _plain(dict(model_config)),
        "state_dict": _weights(net, half),
        "weights_dtype": "float16" if half else "float32",
        "config": _plain(dict(config or {})),
        "metrics": _plain(dict(metrics or {})),
        "state": dict(state or {}),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    _atomic_torch_save(payload, path)
    return path


def _plain(value: Any) -> Any:
    """A JSON round trip: configs and metrics hold only plain types (tuples become lists)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"configs and metrics must be JSON-serialisable: {error}") from None


# ---- reading -----------------------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = " ".join(str(error).split())[:200]
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values: refused by the safe loader "
            f"(weights_only=True); not a crossview checkpoint? ({reason})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError) as error:
        reason = " ".join(str(error).split())[:200]
        raise CheckpointError(f"{path} is not a readable torch file (corrupt or truncated?): {reason}") from None


def _check_payload(payload: Any, path: Path) -> None:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = "a dict without a 'format' key" if isinstance(payload, dict) else type(payload).__name__
        hint = " (a plain state dict?)" if isinstance(payload, dict) else ""
        raise CheckpointError(f"{path} is not a crossview checkpoint: it holds {what}{hint}")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, written by crossview {payload.get('crossview_version')}; "
            f"this crossview {__version__} reads up to format {FORMAT_VERSION}: upgrade crossview"
        )
    for key, kind in (("model_config", dict), ("state_dict", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{path}: checkpoint without a valid {key!r}")


def _float32(weights: Mapping[str, torch.Tensor], stored: str) -> dict[str, torch.Tensor]:
    if stored != "float16":
        return dict(weights)
    return {k: (v.float() if v.dtype == torch.float16 else v) for k, v in weights.items()}


def load_checkpoint(path_or_name: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint file or a registry model safely (``torch.load(weights_only=True)``).

    Args:
        path_or_name: a checkpoint file, or a name in the model registry (checked against its SHA-256).
        map_location: where tensors go (``"cpu"`` by default).

    Returns:
        The :class:`Checkpoint`, weights in float32.

    Raises:
        CheckpointError: missing file, unknown name, checksum mismatch, a file that is not a torch file or is
            truncated, a foreign file (a torch file that is not a crossview checkpoint, e.g. a plain state dict),
            or a format newer than this crossview reads.
    """
    path, name, sha256 = resolve_model(path_or_name)
    payload = _torch_load(path, map_location)
    _check_payload(payload, path)
    return Checkpoint(
        path=path,
        format_version=payload["format_version"],
        crossview_version=str(payload.get("crossview_version", "")),
        model_config=payload["model_config"],
        state_dict=_float32(payload["state_dict"], payload.get("weights_dtype", "float32")),
        config=payload.get("config") or {},
        metrics=payload.get("metrics") or {},
        state=payload.get("state") or {},
        optimizer=payload.get("optimizer"),
        scheduler=payload.get("scheduler"),
        scaler=payload.get("scaler"),
        created=str(payload.get("created", "")),
        name=name,
        sha256=sha256 or file_sha256(path),
    )


def load_model(name_or_path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """The network of a registry model or checkpoint file, in eval mode on ``device``.

    Raises:
        CheckpointError: see :func:`load_checkpoint`, or weights that do not fit the architecture.
    """
    return load_checkpoint(name_or_path).build_model(device)


def export_model(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    half: bool = True,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model-only copy of a checkpoint (no optimizer or training state), float16 by default.

    Args:
        src: a checkpoint file or registry name.
        dst: output file.
        half: store the weights in float16.
        metrics: numbers to record instead of the source's metrics (e.g. evaluation results).

    Returns:
        The path written.
    """
    checkpoint = load_checkpoint(src)
    model = checkpoint.build_model("cpu")
    return save_checkpoint(
        dst,
        model=model,
        config=checkpoint.config,
        metrics=checkpoint.metrics if metrics is None else metrics,
        half=half,
    )


# ---- registry ----------------------------------------------------------------------------------------------


def models_dir() -> Path:
    """The folder of shipped models: ``$CROSSVIEW_MODELS_DIR`` if set, else ``<repo>/models``."""
    override = os.environ.get(MODELS_DIR_ENV)
    return Path(override) if override else Path(crossview.__file__).resolve().parents[1] / "models"


def read_registry(directory: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The ``models`` mapping of ``registry.json`` (empty when the file does not exist).

    Raises:
        CheckpointError: a registry file that is not valid JSON or lacks the ``models`` mapping.
    """
    path = Path(directory if directory is not None else models_dir()) / REGISTRY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"model registry {path} is not readable JSON: {error}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise CheckpointError(f"model registry {path}: expected {{'models': {{NAME: {{'file': ..., ...}}}}}}")
    return models


def list_registered_models(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Names in the model registry, sorted."""
    return sorted(read_registry(directory))


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith((".pt", ".pth", ".ckpt"))


def resolve_model(
    name_or_path: str | os.PathLike[str], *, directory: str | os.PathLike[str] | None = None
) -> tuple[Path, str | None, str | None]:
    """Find a model file: an existing path as is, else a registry name (its SHA-256 verified).

    Args:
        name_or_path: a checkpoint file or a registry name.
        directory: the models folder (default :func:`models_dir`).

    Returns:
        (path, registry name or None, verified hex SHA-256 or None).

    Raises:
        CheckpointError: a missing file, an unknown name (listing the registered ones), a registered file that
            is missing or does not match its SHA-256.
    """
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.is_file():
        return path, None, None
    if path.exists():
        raise CheckpointError(f"checkpoint {path} is not a file")
    folder = Path(directory) if directory is not None else models_dir()
    registry = read_registry(folder)
    entry = registry.get(text)
    if entry is None:
        if isinstance(name_or_path, os.PathLike) or _looks_like_path(text):
            raise CheckpointError(f"checkpoint file not found: {text}")
        available = ", ".join(sorted(registry)) or "none registered"
        raise CheckpointError(f"unknown model {text!r}: not a file and not in {folder / REGISTRY_FILE} ({available})")
    file_name = entry.get("file")
    if not isinstance(file_name, str) or Path(file_name).name != file_name or file_name in ("", ".", ".."):
        raise CheckpointError(f"model registry entry {text!r}: 'file' must be a plain file name, got {file_name!r}")
    model_path = folder / file_name
    if not model_path.is_file():
        raise CheckpointError(f"model {text!r}: its file {model_path} is missing (registry {folder / REGISTRY_FILE})")
    expected = str(entry.get("sha256", "")).lower()
    actual = file_sha256(model_path)
    if actual != expected:
        raise CheckpointError(
            f"model {text!r}: {model_path} has SHA-256 {actual[:16]}..., the registry says {expected[:16] or '?'}...: "
            "the file is corrupt or was replaced"
        )
    return model_path, text, actual


def register_model(
    name: str,
    file: str | os.PathLike[str],
    *,
    description: str = "",
    directory: str | os.PathLike[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Add or update a registry entry for a checkpoint that lies in the models folder (writes registry.json).

    Args:
        name: registry name, e.g. ``"synth-v1"``.
        file: the checkpoint, inside the models folder.
        description: one line for ``crossview`` listings and the model card.
        directory: the models folder (default :func:`models_dir`).
        extra: further JSON values to record (the ``map_modality`` is read from the checkpoint).

    Returns:
        The entry written.
    """
    folder = Path(directory) if directory is not None else models_dir()
    path = Path(file)
    if path.resolve().parent != folder.resolve():
        raise CheckpointError(f"register_model: {path} must lie directly in the models folder {folder}")
    checkpoint = load_checkpoint(path)
    entry = {
        "file": path.name,
        "sha256": file_sha256(path),
        "description": description,
        "map_modality": checkpoint.model_config.get("map_modality", "aerial"),
        "architecture": checkpoint.model_config.get("name"),
        "crossview_version": checkpoint.crossview_version,
        **extra,
    }
    registry = read_registry(folder)
    registry[name] = entry
    atomic_write_text(folder / REGISTRY_FILE, json.dumps({"models": dict(sorted(registry.items()))}, indent=2) + "\n")
    return entry

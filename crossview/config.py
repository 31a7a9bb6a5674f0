"""Training configuration: defaults in code, a YAML file merged strictly, then ``key=value`` overrides.

The resolved configuration is a plain nested dict (JSON- and YAML-serialisable) saved with every checkpoint.
Merging is strict: a key that the defaults do not have is an error naming the key and where it came from, so a
typo never silently trains with a default. The one open section is ``model``: besides ``name`` its keys are
passed to :func:`crossview.encoders.get_model`, which checks them against the chosen architecture.

Overrides use dotted keys, and the value is parsed as YAML (a ``yaml.SafeLoader`` that also reads ``1e-4`` as a
number; never ``eval``)::

    optim.lr=3e-4  train.batch_size=64  data.cities=[NewYork,Seattle]  model.descriptor_dim=512  loss.type=triplet
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from crossview.errors import ConfigError

DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,  # seeds model initialisation, the batch order (with the epoch) and the augmentations
    "model": {
        "name": "safa-resnet18-lite",  # architecture in crossview.encoders.list_models()
        # any other key is passed to crossview.encoders.get_model(name, **overrides), e.g. aerial_size,
        # pano_height, pano_width, polar_height, polar_width, descriptor_dim; the image sizes of the data
        # loader are taken from the model's resolved config, so they are set here and only here
    },
    "data": {
        "split": "same",  # "same" (same-area: each city's train list) or "cross" (cross-area); --split sets it
        "cities": None,  # list of cities; None: every city in DIR/splits/ (same) or VIGOR's defaults (cross)
        "map": "satellite",  # tiles: "satellite" (aerial RGB) or "osm" (OSM class tiles: models with map_modality osm)
        "corrected": False,  # read SliceMatch's __corrected label files
        "augment": False,  # paired flip + 90-degree rotation of panorama and aerial tile
        "random_roll": False,  # roll panoramas randomly: trains for unknown heading (orientation-aware loss)
        "flip": False,  # mirror panorama and tile together (keeps north-aligned panoramas north-aligned)
        "photometric": False,  # independent colour jitter of panorama and tile (generalises across palettes)
        "num_workers": 0,  # DataLoader worker processes (does not change the results)
    },
    "sampler": {
        "mode": "gps",  # "gps": batches of geographic neighbours (hard negatives); "random": shuffled batches
        "cell_m": 25.0,  # resolution of the Hilbert curve that orders panoramas in "gps" mode, metres
    },
    "loss": {
        "type": "infonce",  # "infonce" (symmetric, learnable temperature) or "triplet" (SAFA weighted soft-margin)
        "temperature": 0.07,  # initial InfoNCE temperature (logits = score / temperature)
        "learn_temperature": True,  # optimise the temperature (as log(1/temperature)) with the model
        "max_logit_scale": 100.0,  # upper clamp of 1/temperature (keeps the learnable scale stable)
        "triplet_alpha": 10.0,  # SAFA's soft-margin weight: log(1 + exp(alpha * (d_pos - d_neg)))
        "mask_semi_positives": True,  # no in-batch pair whose aerial tile also holds the panorama is a negative
        "orientation_weight": 0.0,  # > 0: also the contrastive loss on orientation-aware (max over azimuth) scores
        "heading_weight": 0.0,  # > 0 (with orientation_weight): cross-entropy over azimuth shifts of positives
        "refine_weight": 0.0,  # > 0: dense correspondence loss on the refinement features (LM refiner)
        "refine_camera_height_m": 2.0,  # camera height assumed by that loss, metres
        "dense_weight": 0.0,  # > 0: dense matching loss (NLL of the true pose, finest level; the dense search's)
        "dense_pinhole_weight": 0.0,  # > 0: the same loss on pinhole views cut from the panoramas
    },
    "optim": {
        "lr": 1e-4,  # peak learning rate of AdamW (per optimizer step)
        "weight_decay": 0.03,  # AdamW decoupled weight decay (not applied to biases, norms and the temperature)
        "betas": [0.9, 0.999],  # AdamW betas
        "warmup_steps": 100,  # linear warm-up from 0 to lr, optimizer steps (capped at the total)
        "min_lr_ratio": 0.0,  # cosine decay ends at lr * min_lr_ratio after the last step
        "accumulate": 1,  # micro-batches per optimizer step (gradient accumulation)
        "grad_clip": None,  # clip the gradient norm to this value, or None
    },
    "train": {
        "epochs": 10,  # passes over the training panoramas; with the batches per epoch, fixes the schedule
        "batch_size": 32,  # panorama/tile pairs per micro-batch and process (DDP: the global batch is x world)
        "amp": True,  # bfloat16/float16 mixed precision (CUDA only; ignored on CPU)
        "channels_last": True,  # channels-last memory format (CUDA only; ignored on CPU)
        "keep_checkpoints": 3,  # epoch-NNN.pt files kept besides last.pt (0: only last.pt)
        "trainable": None,  # null (everything) or the parameter name prefixes to train, e.g. [ground_decoder]
        "init_from": None,  # a checkpoint path or registered model name whose weights start the run (fine-tuning)
        "init_partial": False,  # init_from another model (e.g. aerial -> OSM): take the tensors of equal name and shape
    },
    "log": {
        "every_steps": 10,  # optimizer steps between rows of metrics.csv (and TensorBoard points)
        "tensorboard": True,  # also write TensorBoard events when the tensorboard package is installed
    },
}

OPEN_SECTIONS = frozenset({"model"})
"""Sections whose keys are not fixed by the defaults (checked by the code that consumes them)."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-4`` as a float (YAML 1.2; PyYAML's 1.1 rules want ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _safe_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: plain values only


RUNTIME_KEYS = frozenset({"data.num_workers", "log.every_steps", "log.tensorboard", "train.keep_checkpoints"})
"""Keys that do not change the trained weights: they may differ when a run is resumed."""


def default_config() -> dict[str, Any]:
    """A fresh deep copy of :data:`DEFAULT_CONFIG`."""
    return copy.deepcopy(DEFAULT_CONFIG)


def merge_config(base: Mapping[str, Any], update: Mapping[str, Any], *, source: str, prefix: str = "") -> dict:
    """Merge ``update`` into a copy of ``base`` strictly.

    Args:
        base: the configuration so far (a nested dict).
        update: the values to merge (a nested dict, e.g. a YAML file's content).
        source: where ``update`` came from, for error messages (a file name, ``"command line"``).
        prefix: dotted path of ``base`` inside the whole configuration (internal).

    Returns:
        A new nested dict; sections are merged key by key, other values replaced.

    Raises:
        ConfigError: a key that ``base`` does not have (outside the open ``model`` section), or a section
            replaced by a plain value.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: configuration keys must be strings, got {key!r}")
        dotted = f"{prefix}{key}"
        if key not in merged:
            if prefix.rstrip(".") not in OPEN_SECTIONS:
                raise ConfigError(f"{source}: unknown configuration key {dotted!r}{_suggestion(key, merged)}")
            merged[key] = copy.deepcopy(value)
        elif isinstance(merged[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {dotted!r} is a section, got the value {value!r}")
            merged[key] = merge_config(merged[key], value, source=source, prefix=f"{dotted}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _suggestion(key: str, known: Mapping[str, Any]) -> str:
    names = sorted(str(name) for name in known)
    return f" (known here: {', '.join(names)})" if names else ""


def load_yaml_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML configuration file (a mapping at the top level; an empty file is ``{}``).

    Raises:
        ConfigError: the file is missing, unreadable, not YAML or not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read configuration file {path}: {error}") from None
    try:
        data = _safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of configuration keys, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=3e-4"`` -> (["optim", "lr"], 0.0003); the value is parsed with ``yaml.safe_load``.

    Raises:
        ConfigError: no ``=``, an empty key or key part, or a value that is not valid YAML.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or any(not part for part in parts):
        raise ConfigError(f"bad override {text!r}: expected KEY=VALUE with a dotted key, e.g. optim.lr=3e-4")
    try:
        value = _safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())
        raise ConfigError(f"bad override {text!r}: the value is not valid YAML ({reason})") from None
    return parts, value


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    return nested


def resolve_config(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    *,
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Defaults, then the YAML file, then the ``key=value`` overrides in order; validated.

    Args:
        config_file: a YAML file or None.
        overrides: ``"dotted.key=value"`` strings.
        base: the defaults (:data:`DEFAULT_CONFIG` when None).

    Returns:
        The resolved configuration (a plain nested dict).

    Raises:
        ConfigError: an unknown key (named with its source), a malformed override or an invalid value.
    """
    config = default_config() if base is None else copy.deepcopy(dict(base))
    if config_file is not None:
        config = merge_config(config, load_yaml_config(config_file), source=str(config_file))
    for text in overrides:
        parts, value = parse_override(text)
        config = merge_config(config, _nest(parts, value), source=f"override {text!r}")
    validate_config(config)
    return config


def _check(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r}: expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_config(config: Mapping[str, Any]) -> None:
    """Check the types and ranges of the fixed keys (the model section is checked by the encoders).

    Raises:
        ConfigError: naming the first invalid key and its value.
    """
    seed = config["seed"]
    _check(_is_int(seed) and seed >= 0, "seed", seed, "a non-negative integer")
    model, data, sampler = config["model"], config["data"], config["sampler"]
    loss, optim, train = config["loss"], config["optim"], config["train"]
    _check(isinstance(model.get("name"), str) and bool(model.get("name")), "model.name", model.get("name"), "a name")
    _check(data["split"] in ("same", "cross"), "data.split", data["split"], "'same' or 'cross'")
    cities = data["cities"]
    valid_cities = cities is None or (
        isinstance(cities, list) and bool(cities) and all(isinstance(c, str) and c for c in cities)
    )
    _check(valid_cities, "data.cities", cities, "null or a non-empty list of city names")
    _check(data["map"] in ("satellite", "osm"), "data.map", data["map"], "'satellite' or 'osm'")
    for key in ("corrected", "augment", "random_roll", "flip", "photometric"):
        _check(isinstance(data[key], bool), f"data.{key}", data[key], "true or false")
    _check(_is_int(data["num_workers"]) and data["num_workers"] >= 0, "data.num_workers", data["num_workers"], ">= 0")
    _check(sampler["mode"] in ("gps", "random"), "sampler.mode", sampler["mode"], "'gps' or 'random'")
    _check(_is_number(sampler["cell_m"]) and sampler["cell_m"] > 0, "sampler.cell_m", sampler["cell_m"], "> 0")
    _check(loss["type"] in ("infonce", "triplet"), "loss.type", loss["type"], "'infonce' or 'triplet'")
    for key in ("temperature", "max_logit_scale", "triplet_alpha", "refine_camera_height_m"):
        _check(_is_number(loss[key]) and loss[key] > 0, f"loss.{key}", loss[key], "a positive number")
    for key in ("orientation_weight", "heading_weight", "refine_weight", "dense_weight", "dense_pinhole_weight"):
        _check(_is_number(loss[key]) and loss[key] >= 0, f"loss.{key}", loss[key], "a number >= 0")
    for key in ("learn_temperature", "mask_semi_positives"):
        _check(isinstance(loss[key], bool), f"loss.{key}", loss[key], "true or false")
    _validate_optim(optim)
    _check(_is_int(train["epochs"]) and train["epochs"] >= 1, "train.epochs", train["epochs"], "an integer >= 1")
    batch = train["batch_size"]
    _check(_is_int(batch) and batch >= 2, "train.batch_size", batch, "an integer >= 2 (in-batch negatives)")
    for key in ("amp", "channels_last"):
        _check(isinstance(train[key], bool), f"train.{key}", train[key], "true or false")
    trainable = train["trainable"]
    _check(
        trainable is None
        or (isinstance(trainable, list) and bool(trainable) and all(isinstance(t, str) and t for t in trainable)),
        "train.trainable",
        trainable,
        "null or a non-empty list of parameter name prefixes",
    )
    _check(isinstance(train["init_partial"], bool), "train.init_partial", train["init_partial"], "true or false")
    init_from = train["init_from"]
    _check(
        init_from is None or (isinstance(init_from, str) and init_from),
        "train.init_from",
        init_from,
        "null, a checkpoint path or a registered model name",
    )
    keep = train["keep_checkpoints"]
    _check(_is_int(keep) and keep >= 0, "train.keep_checkpoints", keep, "an integer >= 0")
    every = config["log"]["every_steps"]
    _check(_is_int(every) and every >= 1, "log.every_steps", every, "an integer >= 1")
    _check(isinstance(config["log"]["tensorboard"], bool), "log.tensorboard", config["log"]["tensorboard"], "a bool")


def _validate_optim(optim: Mapping[str, Any]) -> None:
    _check(_is_number(optim["lr"]) and optim["lr"] > 0, "optim.lr", optim["lr"], "a positive number")
    decay = optim["weight_decay"]
    _check(_is_number(decay) and decay >= 0, "optim.weight_decay", decay, "a number >= 0")
    betas = optim["betas"]
    valid_betas = isinstance(betas, list) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)
    _check(valid_betas, "optim.betas", betas, "a list of two numbers in [0, 1)")
    warmup = optim["warmup_steps"]
    _check(_is_int(warmup) and warmup >= 0, "optim.warmup_steps", warmup, "an integer >= 0")
    ratio = optim["min_lr_ratio"]
    _check(_is_number(ratio) and 0 <= ratio <= 1, "optim.min_lr_ratio", ratio, "a number in [0, 1]")
    accumulate = optim["accumulate"]
    _check(_is_int(accumulate) and accumulate >= 1, "optim.accumulate", accumulate, "an integer >= 1")
    clip = optim["grad_clip"]
    _check(clip is None or (_is_number(clip) and clip > 0), "optim.grad_clip", clip, "null or a positive number")


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-4}}`` -> ``{"optim.lr": 1e-4}`` (lists and other values are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], *, ignore: Iterable[str] = RUNTIME_KEYS
) -> list[str]:
    """Dotted keys whose values differ between two configurations (present in one only counts), sorted."""
    flat_old, flat_new = flatten_config(old), flatten_config(new)
    skip = set(ignore)
    keys = (set(flat_old) | set(flat_new)) - skip
    missing = object()
    return sorted(key for key in keys if flat_old.get(key, missing) != flat_new.get(key, missing))


def dump_yaml(config: Mapping[str, Any]) -> str:
    """The configuration as YAML text (key order kept), e.g. for ``runs/NAME/config.yaml``."""
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)

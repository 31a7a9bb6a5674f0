"""Input adapters: how a map modality (aerial RGB, OSM class rasters) becomes backbone input.

The aerial branch of a :class:`~crossview.encoders.model.CrossViewModel` is ``adapter -> backbone``; the adapter
is chosen by the model config's ``map_modality`` and decides the backbone's input channels. A new modality
registers a factory with :func:`register_map_modality` (with the config keys it adds and their check) and needs
no change elsewhere. Registered: ``"aerial"`` (RGB chips, :class:`ImageInput`) and ``"osm"`` (class rasters ->
learned embeddings, :mod:`crossview.encoders.osm_input`).

A model records the modality it expects; :func:`check_map_modality` refuses a map of another kind (an aerial model
on an OSM class raster, or the reverse) with a one-line :class:`MapModalityError` instead of garbage results.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from crossview.errors import ConfigError, CrossviewError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAP_FOLDERS",
    "ImageInput",
    "MapInput",
    "MapModalityError",
    "ModelInputError",
    "build_map_input",
    "check_data_map",
    "check_map_modality",
    "map_modalities",
    "modality_defaults",
    "register_map_modality",
    "validate_modality_config",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelInputError(CrossviewError, ValueError):
    """An image batch given to a model has the wrong shape or dtype."""


class MapInput(nn.Module):
    """Base class of input adapters: ``forward(chips) -> (B, out_channels, H, W)`` float."""

    out_channels: int = 3


class ImageInput(MapInput):
    """RGB images in [0, 1] -> ImageNet-normalised float (what torchvision backbones expect)."""

    out_channels = 3

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """Args: images (B, 3, H, W) float in [0, 1]. Returns (B, 3, H, W) normalised.

        Raises:
            ModelInputError: not a float (B, 3, H, W) tensor.
        """
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ModelInputError(f"expected RGB images (B, 3, H, W), got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ModelInputError(f"expected float images in [0, 1], got dtype {images.dtype}")
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)


_MAP_MODALITIES: dict[str, Callable[[dict], MapInput]] = {"aerial": lambda config: ImageInput()}
_MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {}
_MODALITY_VALIDATORS: dict[str, Callable[[dict], dict]] = {}


def register_map_modality(
    name: str,
    factory: Callable[[dict], MapInput],
    *,
    defaults: Mapping[str, Any] | None = None,
    validate: Callable[[dict], dict] | None = None,
) -> None:
    """Register an input adapter factory ``factory(model_config) -> MapInput`` under ``name``.

    Args:
        name: the ``map_modality`` value that selects it.
        factory: builds the adapter from a complete model config.
        defaults: config keys the modality adds, with their defaults (e.g. ``{"osm_embedding_dim": 16}``); a
            model config of this modality has exactly these keys on top of its variant's.
        validate: ``validate(config) -> config``: checks (raising ``ConfigError``) and completes the modality's
            keys of a complete config.
    """
    _MAP_MODALITIES[name] = factory
    _MODALITY_DEFAULTS[name] = dict(defaults or {})
    if validate is not None:
        _MODALITY_VALIDATORS[name] = validate
    else:
        _MODALITY_VALIDATORS.pop(name, None)


def map_modalities() -> list[str]:
    """Registered map modalities."""
    return sorted(_MAP_MODALITIES)


def _check_modality_name(name: Any) -> str:
    if not isinstance(name, str) or name not in _MAP_MODALITIES:
        raise ConfigError(f"unknown map_modality {name!r}; available: {', '.join(map_modalities())}")
    return name


def modality_defaults(name: str) -> dict[str, Any]:
    """The config keys (with defaults) that modality ``name`` adds to a model config (``{}`` for ``aerial``).

    Raises:
        ConfigError: unknown modality.
    """
    return dict(_MODALITY_DEFAULTS.get(_check_modality_name(name), {}))


def validate_modality_config(config: dict) -> dict:
    """Check and complete the modality keys of a complete model config (returns a new dict).

    Raises:
        ConfigError: unknown modality or an invalid modality key.
    """
    validate = _MODALITY_VALIDATORS.get(_check_modality_name(config.get("map_modality")))
    return dict(config) if validate is None else validate(dict(config))


def build_map_input(config: dict) -> MapInput:
    """The input adapter of ``config["map_modality"]``.

    Raises:
        ConfigError: unknown modality.
    """
    return _MAP_MODALITIES[_check_modality_name(config.get("map_modality"))](config)


# ---- which maps a model takes -----------------------------------------------------------------------------------

MAP_FOLDERS: dict[str, str] = {"aerial": "satellite", "osm": "osm"}
"""Map modality -> the VIGOR-layout tile folder (``data.map``) holding its tiles."""

_OSM_CLASSES_TAG = "CLASSES"  # crossview.maps.osm.CLASSES_TAG (not imported: it would load geopandas)
_OSM_BAND_NAMES = ("areas", "ways", "nodes")  # crossview.maps.osm.BAND_NAMES


class MapModalityError(CrossviewError, ValueError):
    """A map of one kind (aerial RGB, OSM class raster) given to a model that expects another."""


def _model_label(model_config: Mapping[str, Any]) -> str:
    return str(model_config.get("name") or "(unnamed)")


def _describe(modality: str) -> str:
    return {"aerial": "aerial RGB maps", "osm": "OSM class rasters"}.get(modality, f"{modality!r} maps")


def check_data_map(model_config: Mapping[str, Any], data_map: str, *, model_name: str | None = None) -> None:
    """Check that a dataset's tile folder (``data.map``: ``satellite`` or ``osm``) suits the model.

    Args:
        model_config: the model's config.
        data_map: ``"satellite"`` or ``"osm"``.
        model_name: how to name the model in the message; default its config's name.

    Raises:
        MapModalityError: the folder holds another kind of map than the model's ``map_modality``.
        ConfigError: an unknown ``data_map``.
    """
    if data_map not in MAP_FOLDERS.values():
        raise ConfigError(f"data.map={data_map!r}: expected one of {', '.join(sorted(set(MAP_FOLDERS.values())))}")
    modality = model_config.get("map_modality", "aerial")
    expected = MAP_FOLDERS.get(modality)
    if expected != data_map:
        hint = f" (use data.map={expected})" if expected else ""
        model = model_name or _model_label(model_config)
        raise MapModalityError(
            f"model {model} expects {_describe(modality)}; data.map={data_map} gives "
            f"{_describe(_folder_modality(data_map))}{hint}"
        )


def _folder_modality(data_map: str) -> str:
    return next(modality for modality, folder in MAP_FOLDERS.items() if folder == data_map)


def _map_facts(raster_or_tags: Any) -> tuple[Mapping[str, Any], tuple[str, ...] | None, int | None]:
    """(tags, band names or None, band count or None) of a GeoRaster-like object or a tag mapping."""
    if isinstance(raster_or_tags, Mapping):
        return raster_or_tags, None, None
    tags = getattr(raster_or_tags, "tags", None)
    if not isinstance(tags, Mapping):
        kind = type(raster_or_tags).__name__
        raise ConfigError(f"check_map_modality needs a GeoRaster or a dict of tags, got {kind}")
    names = getattr(raster_or_tags, "band_names", None)
    count = getattr(raster_or_tags, "count", None)
    return tags, (tuple(str(n) for n in names) if names else None), (int(count) if count is not None else None)


def _osm_legend(tags: Mapping[str, Any]) -> dict[str, list[str]] | None:
    """The ``CLASSES`` legend of an OSM class raster's tags (None when absent; {} when unreadable)."""
    text = tags.get(_OSM_CLASSES_TAG)
    if text is None:
        return None
    try:
        legend = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        return {}
    return legend if isinstance(legend, dict) else {}


def check_map_modality(
    model_config: Mapping[str, Any],
    raster_or_tags: Any,
    *,
    map_name: str | None = None,
    model_name: str | None = None,
) -> None:
    """Refuse a map that is not of the kind the model expects (its config's ``map_modality``).

    An OSM class raster (as written by :mod:`crossview.maps.osm`, ``crossview fetch --source osm``, or an OSM tile
    of :mod:`crossview.data.synth.osmtiles`) is recognised by its ``CLASSES`` tag (the legend) or by its band
    names ``areas, ways, nodes``; any other raster is taken as imagery.

    Args:
        model_config: the model's config (``model.config`` or a checkpoint's ``model_config``).
        raster_or_tags: a :class:`~crossview.maps.raster.GeoRaster` (or anything with ``tags``, ``band_names``
            and ``count``), or a mapping of the map's tags.
        map_name: how to name the map in the message (a file name); default ``"the map"``.
        model_name: how to name the model (e.g. a checkpoint's name, ``synth-v1``); default its config's name.

    Raises:
        MapModalityError: an aerial model given an OSM class raster or a raster with fewer than 3 bands; an OSM
            model given a raster that is not an OSM class raster, or one whose legend differs from the model's.
    """
    tags, band_names, count = _map_facts(raster_or_tags)
    label = map_name or "the map"
    model, modality = model_name or _model_label(model_config), model_config.get("map_modality", "aerial")
    legend = _osm_legend(tags)
    is_osm = legend is not None or band_names == _OSM_BAND_NAMES
    if modality == "aerial":
        if is_osm:
            why = f"{_OSM_CLASSES_TAG} tag" if legend is not None else "bands areas, ways, nodes"
            raise MapModalityError(f"model {model} expects aerial RGB maps; map {label} is an OSM class raster ({why})")
        if count is not None and count < 3:
            raise MapModalityError(f"model {model} expects aerial RGB maps; map {label} has {count} band(s)")
        return
    if modality == "osm":
        if not is_osm:
            raise MapModalityError(
                f"model {model} expects OSM class rasters; map {label} is not one (no {_OSM_CLASSES_TAG} tag): "
                "make one with crossview fetch --source osm|FILE.osm"
            )
        expected = model_config.get("osm_classes")
        if legend is not None and expected and list(legend.items()) != list(expected.items()):
            raise MapModalityError(
                f"model {model} expects another OSM legend than map {label} has ({_legend_difference(expected, legend)}"
                "): re-render the map with this crossview or retrain"
            )
        if legend is None and count is not None and expected and count != len(expected):
            raise MapModalityError(f"model {model} expects {len(expected)} OSM bands; map {label} has {count}")


def _legend_difference(expected: Mapping[str, Any], legend: Mapping[str, Any]) -> str:
    """The first difference between two legends, in words."""
    if list(expected) != list(legend):
        return f"bands {', '.join(map(str, expected))} vs {', '.join(map(str, legend))}"
    for band, names in expected.items():
        other = legend[band]
        if not isinstance(other, list):
            return f"band {band}: not a list of class names"
        for index, (mine, theirs) in enumerate(zip(names, other, strict=False), start=1):
            if mine != theirs:
                return f"band {band}: class {index} is {mine!r} vs {theirs!r}"
        if len(names) != len(other):
            return f"band {band}: {len(names)} classes vs {len(other)}"
    return "unreadable legend"

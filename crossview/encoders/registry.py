"""The model registry: named, complete model configs and the functions that build models from them.

A model config is a flat JSON-serialisable dict; checkpoints store it, and :func:`model_from_config` rebuilds the
architecture from it. Keys (every model):

==================== ===========================================================================================
``name``             registry name (or a trained model's own name)
``variant``          ``"safa"`` (polar aerial vs panorama/pinhole) or ``"bev"`` (polar aerial vs polar BEV)
``backbone``         torchvision backbone, cut at stride 16 (:data:`crossview.encoders.backbones.BACKBONES`)
``weights``          ``"none"`` (random), ``"imagenet"`` (torchvision's, cached or downloaded) or a local .pth
``descriptor_dim``   retrieval descriptor length ``D`` (``safa_maps`` x projected channels)
``safa_maps``        number ``K`` of SAFA spatial-aware embedding maps
``column_channels``  channels of the azimuth column features
``column_rows``      rows kept per column (column feature length ``Dc = column_channels * column_rows``)
``refine_channels``  channels of the three refinement levels, coarse to fine (strides 16, 8, 4)
``refine_hidden``    channels of the refinement decoder's top-down pathway
``aerial_size``      side ``S`` of the aerial chips the model is trained on, pixels
``polar_height``     rows of the polar view (multiple of 16)
``polar_width``      columns of the polar view (multiple of 32); ``Wc = polar_width / 16`` azimuth columns
``pano_height``      panorama rows the ground branch works at (multiple of 16)
``pano_width``       panorama columns (``safa``: equal to ``polar_width``)
``map_modality``     input of the aerial branch (``"aerial"``: RGB chips; see :mod:`~crossview.encoders.modalities`)
``config_version``   layout version of this dict
==================== ===========================================================================================

``bev`` models add ``bev_size`` (BEV side in pixels), ``aerial_extent_m`` (ground width of a chip and of the BEV,
metres) and ``camera_height_m`` (default camera height above the ground, metres).

A map modality may add keys too (:func:`~crossview.encoders.modalities.register_map_modality`): ``osm`` models
(``map_modality: "osm"``, e.g. ``safa-resnet18-lite-osm``) add ``osm_embedding_dim`` (embedding size per class
group) and ``osm_classes`` (the legend, band -> class names); see :mod:`crossview.encoders.osm_input`.
"""

from __future__ import annotations

import json
import numbers

import crossview.encoders.osm_input  # noqa: F401  (registers the "osm" map modality)
from crossview.encoders.backbones import BACKBONES, STRIDE
from crossview.encoders.modalities import map_modalities, modality_defaults, validate_modality_config
from crossview.encoders.model import CrossViewModel
from crossview.errors import ConfigError

__all__ = ["CONFIG_VERSION", "get_model", "list_models", "model_config", "model_from_config"]

CONFIG_VERSION = 1

_COMMON = {
    "name": None,
    "variant": "safa",
    "backbone": "resnet18",
    "weights": "none",
    "descriptor_dim": 1024,
    "safa_maps": 8,
    "column_channels": 32,
    "column_rows": 4,
    "refine_channels": [32, 32, 16],
    "refine_hidden": 64,
    "aerial_size": 256,
    "polar_height": 128,
    "polar_width": 512,
    "pano_height": 128,
    "pano_width": 512,
    "map_modality": "aerial",
    "config_version": CONFIG_VERSION,
}
_BEV_EXTRA = {"bev_size": 128, "aerial_extent_m": 72.0, "camera_height_m": 1.6}


def _variant_defaults(variant: str) -> dict:
    if variant == "safa":
        return dict(_COMMON)
    if variant == "bev":
        return {**_COMMON, "variant": "bev", **_BEV_EXTRA}
    raise ConfigError(f"unknown model variant {variant!r}; available: safa, bev")


def _defaults(variant: str, modality: str) -> dict:
    """Every key (with its default) of a model config of this variant and map modality."""
    return {**_variant_defaults(variant), "map_modality": modality, **modality_defaults(modality)}


def _entry(name: str, variant: str = "safa", **values) -> dict:
    return {**_defaults(variant, values.get("map_modality", "aerial")), "name": name, **values}


_REGISTRY: dict[str, dict] = {
    config["name"]: config
    for config in (
        _entry("safa-resnet18", backbone="resnet18"),
        _entry("safa-resnet34", backbone="resnet34"),
        _entry("safa-resnet50", backbone="resnet50"),
        _entry("safa-vgg16", backbone="vgg16"),
        _entry("safa-convnext_tiny", backbone="convnext_tiny"),
        _entry("safa-efficientnet_b0", backbone="efficientnet_b0"),
        _entry("bev-resnet18", "bev", backbone="resnet18"),
        # Small CPU default: ~6 M parameters, ~12 MB in float16.
        _entry(
            "safa-resnet18-lite",
            backbone="resnet18",
            descriptor_dim=512,
            column_channels=16,
            polar_width=256,
            pano_width=256,
        ),
        # The lite model on OpenStreetMap class rasters (16-dim embedding per class group, OrienterNet-style).
        _entry(
            "safa-resnet18-lite-osm",
            backbone="resnet18",
            descriptor_dim=512,
            column_channels=16,
            polar_width=256,
            pano_width=256,
            map_modality="osm",
        ),
    )
}


def list_models() -> list[str]:
    """Names of the registered models."""
    return list(_REGISTRY)


def model_config(name: str, **overrides) -> dict:
    """The complete config of registered model ``name`` with ``overrides`` applied and validated.

    Raises:
        ConfigError: unknown name, unknown override key, or an invalid value.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    config = dict(_REGISTRY[name])
    if "variant" in overrides or "map_modality" in overrides:
        variant = overrides.get("variant", config["variant"])
        config = _known(config, _defaults(variant, overrides.get("map_modality", config["map_modality"])))
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)} for model {name}; valid: {', '.join(config)}")
    config.update(overrides)
    return validate_config(config)


def _known(config: dict, defaults: dict) -> dict:
    """``defaults`` updated with the values ``config`` has for their keys (but not its variant and modality)."""
    kept = {k: v for k, v in config.items() if k in defaults and k not in ("variant", "map_modality")}
    return {**defaults, **kept}


def get_model(name: str, **overrides) -> CrossViewModel:
    """Build registered model ``name`` (with backbone weights per its ``weights`` key).

    Args:
        name: one of :func:`list_models`.
        **overrides: config keys to change, e.g. ``weights="imagenet"``, ``pano_width=256``.

    Raises:
        ConfigError: unknown name or key, invalid value, or weights that cannot be loaded (offline, bad file).
    """
    return CrossViewModel(model_config(name, **overrides))


def model_from_config(config: dict, *, load_pretrained: bool = False) -> CrossViewModel:
    """Rebuild a model from a saved config (``model.config``), e.g. before loading a checkpoint's state dict.

    Keys missing from an older config take their variant's defaults; unknown keys are an error.

    Args:
        config: a model config dict.
        load_pretrained: also load the backbone weights named by ``config["weights"]``. Off by default: a
            checkpoint's state dict replaces them, and ``"imagenet"`` would need the network or the hub cache.

    Raises:
        ConfigError: not a dict, unknown keys, invalid values.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"a model config must be a dict, got {type(config).__name__}")
    defaults = _defaults(config.get("variant", "safa"), config.get("map_modality", "aerial"))
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown model config key(s): {', '.join(unknown)}")
    merged = validate_config({**defaults, **config})
    return CrossViewModel(merged, load_pretrained=load_pretrained)


def validate_config(config: dict) -> dict:
    """Check a complete config; returns a JSON-normalised copy (lists, not tuples).

    Raises:
        ConfigError: the first invalid value, named.
    """
    name = config.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model config needs a non-empty string 'name', got {name!r}")
    _variant_defaults(config["variant"])  # raises for an unknown variant
    if config["backbone"] not in BACKBONES:
        raise ConfigError(f"unknown backbone {config['backbone']!r}; available: {', '.join(sorted(BACKBONES))}")
    if not isinstance(config["weights"], str) or not config["weights"]:
        raise ConfigError(f"weights must be 'none', 'imagenet' or a file path, got {config['weights']!r}")
    if config["map_modality"] not in map_modalities():
        raise ConfigError(f"unknown map_modality {config['map_modality']!r}; available: {', '.join(map_modalities())}")
    _check_sizes(config)
    _check_heads(config)
    if config["variant"] == "bev":
        _check_bev(config)
    config = validate_modality_config(config)
    try:
        return json.loads(json.dumps(config))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model config must be JSON-serialisable: {error}") from error


def _positive_int(config: dict, key: str, multiple: int = 1) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0 or value % multiple:
        suffix = f" multiple of {multiple}" if multiple > 1 else ""
        raise ConfigError(f"model config {key} must be a positive{suffix} integer, got {value!r}")
    return int(value)


def _check_sizes(config: dict) -> None:
    _positive_int(config, "aerial_size")
    _positive_int(config, "polar_height", STRIDE)
    _positive_int(config, "pano_height", STRIDE)
    # An even number of azimuth columns keeps field-of-view windows centred on the canvas's centre column.
    polar_width = _positive_int(config, "polar_width", 2 * STRIDE)
    pano_width = _positive_int(config, "pano_width", 2 * STRIDE)
    if config["variant"] == "safa" and pano_width != polar_width:
        raise ConfigError(
            f"model config pano_width ({pano_width}) must equal polar_width ({polar_width}) so that panorama and "
            "polar columns line up"
        )


def _check_heads(config: dict) -> None:
    maps = _positive_int(config, "safa_maps")
    dim = _positive_int(config, "descriptor_dim")
    if dim % maps:
        raise ConfigError(f"model config descriptor_dim ({dim}) must be a multiple of safa_maps ({maps})")
    _positive_int(config, "column_channels")
    _positive_int(config, "column_rows")
    _positive_int(config, "refine_hidden")
    refine = config["refine_channels"]
    if (
        not isinstance(refine, list | tuple)
        or len(refine) != 3
        or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) and c > 0 for c in refine)
    ):
        raise ConfigError(f"model config refine_channels must be 3 positive integers, got {refine!r}")


def _check_bev(config: dict) -> None:
    _positive_int(config, "bev_size")
    for key in ("aerial_extent_m", "camera_height_m"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
            raise ConfigError(f"model config {key} must be a positive number of metres, got {value!r}")

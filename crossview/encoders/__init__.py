"""Cross-view encoders: a registry of models built on torchvision backbones.

>>> from crossview.encoders import get_model, list_models
>>> model = get_model("safa-resnet18-lite")                       # doctest: +SKIP
>>> aerial = model.encode_aerial(chips)                           # doctest: +SKIP
>>> ground = model.encode_ground(panoramas)                       # doctest: +SKIP
>>> scores, heading_deg = model.similarity(ground, aerial, unknown_heading=True)  # doctest: +SKIP

OSM maps: ``get_model("safa-resnet18-lite-osm")`` takes (B, 3, S, S) class-index chips (bands areas, ways,
nodes) instead of RGB; :func:`check_map_modality` refuses a map of the wrong kind for a model.
"""

from __future__ import annotations

from crossview.encoders.modalities import (
    MapModalityError,
    ModelInputError,
    check_data_map,
    check_map_modality,
    register_map_modality,
)
from crossview.encoders.model import AerialEncoding, CrossViewModel, GroundEncoding
from crossview.encoders.registry import get_model, list_models, model_config, model_from_config

__all__ = [
    "AerialEncoding",
    "CrossViewModel",
    "GroundEncoding",
    "MapModalityError",
    "ModelInputError",
    "check_data_map",
    "check_map_modality",
    "get_model",
    "list_models",
    "model_config",
    "model_from_config",
    "register_map_modality",
]

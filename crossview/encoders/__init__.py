"""Cross-view encoders: a registry of models built on torchvision backbones.

>>> from crossview.encoders import get_model, list_models
>>> model = get_model("safa-resnet18-lite")                       # doctest: +SKIP
>>> aerial = model.encode_aerial(chips)                           # doctest: +SKIP
>>> ground = model.encode_ground(panoramas)                       # doctest: +SKIP
>>> scores, heading_deg = model.similarity(ground, aerial, unknown_heading=True)  # doctest: +SKIP
"""

from __future__ import annotations

from crossview.encoders.modalities import ModelInputError, register_map_modality
from crossview.encoders.model import AerialEncoding, CrossViewModel, GroundEncoding
from crossview.encoders.registry import get_model, list_models, model_config, model_from_config

__all__ = [
    "AerialEncoding",
    "CrossViewModel",
    "GroundEncoding",
    "ModelInputError",
    "get_model",
    "list_models",
    "model_config",
    "model_from_config",
    "register_map_modality",
]

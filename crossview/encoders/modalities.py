"""Input adapters: how a map modality (aerial RGB today; OSM class rasters later) becomes backbone input.

The aerial branch of a :class:`~crossview.encoders.model.CrossViewModel` is ``adapter -> backbone``; the adapter
is chosen by the model config's ``map_modality`` and decides the backbone's input channels. A new modality (e.g.
``"osm"``: class raster -> learned embeddings) registers a factory with :func:`register_map_modality` and needs no
change elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from crossview.errors import ConfigError, CrossviewError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageInput",
    "MapInput",
    "ModelInputError",
    "build_map_input",
    "map_modalities",
    "register_map_modality",
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


def register_map_modality(name: str, factory: Callable[[dict], MapInput]) -> None:
    """Register an input adapter factory ``factory(model_config) -> MapInput`` under ``name``."""
    _MAP_MODALITIES[name] = factory


def map_modalities() -> list[str]:
    """Registered map modalities."""
    return sorted(_MAP_MODALITIES)


def build_map_input(config: dict) -> MapInput:
    """The input adapter of ``config["map_modality"]``.

    Raises:
        ConfigError: unknown modality.
    """
    name = config.get("map_modality")
    if name not in _MAP_MODALITIES:
        raise ConfigError(f"unknown map_modality {name!r}; available: {', '.join(map_modalities())}")
    return _MAP_MODALITIES[name](config)

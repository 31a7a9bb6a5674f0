"""The ``"osm"`` map modality: OpenStreetMap class rasters -> learned class embeddings -> backbone input.

Input: the class rasters of :mod:`crossview.maps.osm` (``rasterize_osm``, ``crossview fetch --source osm``) and of
the synthetic world's ``osm/`` tiles (:mod:`crossview.data.synth.osmtiles`): ``(B, G, S, S)`` class indices, one
band per class group (``areas``, ``ways``, ``nodes``), ``0`` = nothing, ``k`` = the k-th class of the group in
the legend (the rasters' ``CLASSES`` tag). Any integer dtype, or a float tensor of whole numbers (what
``GeoRaster.crop(..., resampling="nearest")`` returns); other floats are refused (bilinear resampling of class
indices makes classes that do not exist).

Adapter (OrienterNet, Sarlin et al., CVPR 2023): one learned table ``nn.Embedding(n_g + 1, E)`` per group (row 0
for "nothing"), looked up per pixel, the ``G`` embedded maps concatenated: ``(B, G * E, S, S)`` float. The aerial
backbone's first convolution is rebuilt for ``G * E`` input channels
(:func:`crossview.encoders.backbones.build_backbone`), the rest of the model is unchanged: same descriptor,
column features and refinement features as an aerial model.

Polar transform: :meth:`~crossview.encoders.model.CrossViewModel.encode_aerial` runs ``adapter -> polar transform
-> backbone``, so the *embedded* float maps are polar-transformed (bilinear, DESIGN's convention), never the class
indices. Why embed first rather than sample the indices with nearest: a bilinear blend of two classes'
embeddings is a meaningful input at a class boundary (a convolution mixes them the same way), whereas a blend of
indices is another class; the map is sampled at exactly the positions used for imagery, so ring radii and column
azimuths are the same for both modalities; and the refinement features, computed on the un-warped chip, use the
same adapter. (Nearest sampling of indices would also alias the outer rings, where one polar sample covers
several chip pixels, dropping thin ways at random.)

Config keys (on top of the variant's): ``osm_embedding_dim`` (``E``, default 16) and ``osm_classes`` (the legend
the tables are built for: band -> class names, index 1 first; default: :data:`crossview.maps.osm.CLASS_NAMES`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from crossview.encoders.modalities import MapInput, ModelInputError, register_map_modality
from crossview.errors import ConfigError

__all__ = ["OSM_EMBEDDING_DIM", "OsmClassInput", "default_osm_classes", "osm_class_ids", "validate_osm_config"]

OSM_EMBEDDING_DIM = 16
"""Default embedding size per class group (OrienterNet's)."""

MAX_CLASSES_PER_BAND = 255  # class rasters are stored as uint8


def default_osm_classes() -> dict[str, list[str]]:
    """crossview's OSM taxonomy as a legend: band -> class names in index order (index 1 first)."""
    from crossview.maps.osm import BAND_NAMES, CLASS_NAMES  # geopandas & co. only when an OSM model is built

    return {band: list(CLASS_NAMES[band]) for band in BAND_NAMES}


def osm_class_ids(chips: Tensor, num_classes: Sequence[int]) -> Tensor:
    """Check a batch of class-raster chips and return it as int64 class indices.

    Args:
        chips: (B, G, S, S) class indices: an integer tensor, or a float tensor holding whole numbers.
        num_classes: (G,) classes per band; band ``g`` takes indices ``0 .. num_classes[g]``.

    Returns:
        (B, G, S, S) int64.

    Raises:
        ModelInputError: not a (B, G, S, S) tensor, fractional values, or indices outside a band's legend.
    """
    bands = len(num_classes)
    if not isinstance(chips, Tensor) or chips.dim() != 4 or chips.shape[1] != bands:
        shape = tuple(chips.shape) if isinstance(chips, Tensor) else type(chips).__name__
        raise ModelInputError(f"expected OSM class rasters (B, {bands}, S, S) of class indices, got {shape}")
    if chips.dtype == torch.bool or chips.is_complex():
        raise ModelInputError(f"expected OSM class indices (an integer tensor), got dtype {chips.dtype}")
    if chips.is_floating_point() and chips.numel() and not bool((chips == torch.round(chips)).all()):
        raise ModelInputError(
            "OSM class rasters must hold whole class indices, got fractional values (an RGB image, or a class "
            "raster resampled bilinearly? crop it with resampling='nearest')"
        )
    ids = chips.long()
    if ids.numel():
        low = ids.amin(dim=(0, 2, 3))
        high = ids.amax(dim=(0, 2, 3))
        limit = torch.as_tensor(list(num_classes), device=ids.device)
        bad = (low < 0) | (high > limit)
        if bool(bad.any()):
            band = int(torch.nonzero(bad)[0])
            raise ModelInputError(
                f"OSM class raster band {band} holds indices {int(low[band])}..{int(high[band])}, outside "
                f"0..{int(num_classes[band])} of the model's legend"
            )
    return ids


class OsmClassInput(MapInput):
    """Class rasters -> concatenated per-group embeddings (see the module docstring).

    Args:
        classes: legend, band -> class names (index 1 first), in band order.
        embedding_dim: ``E``, embedding size per band.
    """

    def __init__(self, classes: Mapping[str, Sequence[str]], embedding_dim: int = OSM_EMBEDDING_DIM) -> None:
        super().__init__()
        self.bands = tuple(classes)
        self.num_classes = tuple(len(classes[band]) for band in self.bands)
        self.embeddings = nn.ModuleDict({band: nn.Embedding(n + 1, embedding_dim) for band, n in self._pairs()})
        self.out_channels = len(self.bands) * embedding_dim

    def _pairs(self) -> list[tuple[str, int]]:
        return list(zip(self.bands, self.num_classes, strict=True))

    @classmethod
    def from_config(cls, config: dict) -> OsmClassInput:
        """The adapter of a validated model config (``osm_classes``, ``osm_embedding_dim``)."""
        config = validate_osm_config(dict(config))
        return cls(config["osm_classes"], config["osm_embedding_dim"])

    def forward(self, chips: Tensor) -> Tensor:
        """Args: chips (B, G, S, S) class indices. Returns (B, G * E, S, S) float32 embeddings.

        Raises:
            ModelInputError: see :func:`osm_class_ids`.
        """
        ids = osm_class_ids(chips, self.num_classes)
        parts = [self.embeddings[band](ids[:, g]) for g, band in enumerate(self.bands)]  # (B, S, S, E) each
        return torch.cat(parts, dim=-1).permute(0, 3, 1, 2).contiguous()


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 < value <= 1024:
        raise ConfigError(f"model config {key} must be an integer in 1..1024, got {value!r}")
    return int(value)


def _check_legend(legend: Any) -> dict[str, list[str]]:
    if not isinstance(legend, Mapping) or not legend:
        raise ConfigError(f"model config osm_classes must map band names to class-name lists, got {legend!r}")
    checked: dict[str, list[str]] = {}
    for band, names in legend.items():
        if not isinstance(band, str) or not band or "." in band:
            raise ConfigError(f"model config osm_classes: bad band name {band!r}")
        valid = (
            isinstance(names, list | tuple)
            and 0 < len(names) <= MAX_CLASSES_PER_BAND
            and all(isinstance(name, str) and name for name in names)
            and len(set(names)) == len(names)
        )
        if not valid:
            raise ConfigError(
                f"model config osm_classes[{band!r}] must be 1..{MAX_CLASSES_PER_BAND} distinct class names, "
                f"got {names!r}"
            )
        checked[band] = list(names)
    return checked


def validate_osm_config(config: dict) -> dict:
    """Check and complete the ``osm`` keys of a model config (``osm_classes: None`` -> crossview's taxonomy).

    Raises:
        ConfigError: a bad embedding size or legend.
    """
    config["osm_embedding_dim"] = _positive_int(config.get("osm_embedding_dim"), "osm_embedding_dim")
    legend = config.get("osm_classes")
    config["osm_classes"] = _check_legend(default_osm_classes() if legend is None else legend)
    return config


register_map_modality(
    "osm",
    OsmClassInput.from_config,
    defaults={"osm_embedding_dim": OSM_EMBEDDING_DIM, "osm_classes": None},
    validate=validate_osm_config,
)

"""Chips of a map for the retrieval index: their geometry, the lattice of chip centres over the map's valid area,
a sampler that cuts a chip at any centre, and the map's fingerprint.

Chip geometry (what the aerial branch of a model expects):
    A chip is ``size_px`` x ``size_px`` pixels (the model config's ``aerial_size``) covering ``extent_m`` x
    ``extent_m`` GROUND metres, TRUE-north-up, centred on the candidate camera position: a VIGOR aerial tile
    resized to the model's input. ``extent_m`` is, in order of precedence:

    1. an explicit value (``--chip-extent-m``);
    2. the model config's ``aerial_extent_m`` (``bev`` models: the footprint their BEV is made for);
    3. the VIGOR tile footprint at the map centre's latitude: 640 px of zoom-20 Web Mercator,
       ``640 * 156543.03392 * cos(lat) / 2**20`` metres (95.5 m at the equator, 70.5 m in Seattle, 58.3 m in
       Berlin). ``safa`` models (synth-v1 included) were trained on such tiles and have no footprint of their own.

    Web Mercator tiles are true-north-up, so chips are too (``GeoRaster.crop`` at heading 0): in the index's UTM
    frame they are rotated by the meridian convergence.

Sampling:
    The map is warped once into the index frame (the UTM zone of the map's centre, ``LocalFrame.from_center``) at
    the chip's pixel size; when the map is finer than the chips, with ``average`` resampling, which low-pass
    filters like the antialiased resize of VIGOR tiles (640 -> ``aerial_size`` px) the models were trained on.
    Chips are then cut from that raster with ``GeoRaster.crop`` (bilinear). Cutting a chip at any (x, y) of the
    frame (:meth:`ChipSampler.crop`) gives the same pixels as building the index would at that centre.

OSM class rasters (models with ``map_modality: osm``):
    The same geometry; the map's class bands are warped with ``nearest`` (``mode`` when the map is finer than the
    chips, so thin ways survive as the majority class of their pixels) and cut with ``nearest``: chips hold whole
    class indices, never blends (:mod:`crossview.encoders.osm_input` embeds them).

Validity:
    A chip centre on the lattice is kept when the map pixel under it is valid and at least
    ``MIN_VALID_FRACTION`` of the chip's pixels are (the rest are zeros, as in ``GeoRaster.crop``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from pyproj import CRS

from crossview.data.vigor import TILE_SIZE_PX, ZOOM
from crossview.errors import ConfigError
from crossview.geometry.frames import LocalFrame
from crossview.geometry.webmercator import meters_per_pixel
from crossview.maps.raster import GeoRaster, MapError, native_pixel_size

DEFAULT_STRIDE_M = 10.0
"""Default distance between neighbouring chip centres, metres: about 1/6 of a chip (58-96 m for VIGOR-style
tiles). A camera is then at most 7.1 m (half the lattice diagonal) from a chip centre, well inside the central
quarter of a tile (+-15 to +-24 m around its centre) where VIGOR's positives put the camera during training;
1 km^2 is 10,000 chips."""

MIN_VALID_FRACTION = 0.5
"""Smallest fraction of valid pixels a chip needs to be indexed."""

VALUE_SCALES = {"uint8": 255.0, "uint16": 65535.0, "float32": 1.0, "float64": 1.0}
"""Divisor that brings a map's values to [0, 1] (float maps are taken to be in [0, 1] already)."""

RGB_BANDS = 3
FINGERPRINT_ALGORITHM = "sha256"


@dataclass(frozen=True)
class ChipGeometry:
    """Where and how chips are cut.

    Attributes:
        frame: the index frame (x = east, y = north, metres): chip centres are given in it.
        size_px: chip side S in pixels (the model's ``aerial_size``).
        extent_m: chip side in ground metres.
        extent_source: where ``extent_m`` came from: ``user``, ``model-config`` or ``vigor-zoom20-tile``.
        modality: ``aerial`` (RGB imagery) or ``osm`` (class rasters).
    """

    frame: LocalFrame
    size_px: int
    extent_m: float
    extent_source: str = "user"
    modality: str = "aerial"

    def __post_init__(self) -> None:
        if isinstance(self.size_px, bool) or not isinstance(self.size_px, int | np.integer) or self.size_px < 1:
            raise ConfigError(f"chip size_px={self.size_px!r} must be an integer >= 1")
        if not (isinstance(self.extent_m, int | float) and math.isfinite(self.extent_m) and self.extent_m > 0):
            raise ConfigError(f"chip extent_m={self.extent_m!r} must be a finite number of metres > 0")

    @property
    def gsd_m(self) -> float:
        """Ground metres per chip pixel."""
        return self.extent_m / self.size_px

    def to_json(self) -> dict[str, Any]:
        return {
            "frame_epsg": self.frame.epsg,
            "frame_wkt": self.frame.crs.to_wkt(),
            "frame_name": self.frame.name,
            "size_px": int(self.size_px),
            "extent_m": float(self.extent_m),
            "gsd_m": self.gsd_m,
            "extent_source": self.extent_source,
            "orientation": "true-north-up",
            "modality": self.modality,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChipGeometry:
        epsg = data.get("frame_epsg")
        frame = LocalFrame(CRS.from_epsg(epsg)) if epsg is not None else LocalFrame(CRS.from_wkt(data["frame_wkt"]))
        return cls(
            frame,
            int(data["size_px"]),
            float(data["extent_m"]),
            str(data.get("extent_source", "user")),
            str(data.get("modality", "aerial")),
        )


def vigor_tile_extent_m(*, lat: float) -> float:
    """Ground side of a 640-px zoom-20 VIGOR tile centred at latitude ``lat`` (degrees), metres."""
    return float(TILE_SIZE_PX * meters_per_pixel(lat=lat, zoom=ZOOM))


def chip_geometry_for_model(
    model_config: Mapping[str, Any], raster: GeoRaster, *, extent_m: float | None = None
) -> ChipGeometry:
    """The chip geometry of a model on a map: frame = UTM of the map's centre (see the module docstring).

    Args:
        model_config: the model's config (``aerial_size``, optionally ``aerial_extent_m``).
        raster: the map.
        extent_m: ground side of a chip, metres; default: the model's footprint.

    Raises:
        ConfigError: a model whose map input is neither RGB imagery nor OSM class rasters, or a bad ``extent_m``.
    """
    modality = model_config.get("map_modality", "aerial")
    if modality not in ("aerial", "osm"):
        raise ConfigError(f"the chip index takes aerial or OSM models; this one takes {modality!r} maps")
    center = raster.center_latlon()
    frame = LocalFrame.from_center(lat=center.lat, lon=center.lon)
    size = int(model_config["aerial_size"])
    if extent_m is not None:
        return ChipGeometry(frame, size, float(extent_m), "user", modality)
    if model_config.get("aerial_extent_m") is not None:
        return ChipGeometry(frame, size, float(model_config["aerial_extent_m"]), "model-config", modality)
    return ChipGeometry(frame, size, vigor_tile_extent_m(lat=center.lat), "vigor-zoom20-tile", modality)


# ---- the map's fingerprint ---------------------------------------------------------------------------------


def map_fingerprint(raster: GeoRaster) -> str:
    """A digest of what the index depends on: CRS, transform, shape, dtype, every pixel value and the valid mask.

    The same map read from a GeoTIFF, re-written with other compression or tags, keeps its fingerprint; a changed
    pixel, georeference or mask changes it. Costs one SHA-256 pass over the pixels (about 1 s per GB).

    Returns:
        ``"sha256:<64 hex digits>"``.
    """
    digest = hashlib.sha256()
    header = {
        "crs": raster.crs.to_wkt(),
        "transform": [float(v) for v in tuple(raster.transform)[:6]],
        "shape": list(raster.array.shape),
        "dtype": raster.array.dtype.str,
        "masked": raster.valid is not None,
    }
    digest.update(json.dumps(header, sort_keys=True).encode("utf-8"))
    for band in raster.array:
        digest.update(memoryview(np.ascontiguousarray(band)).cast("B"))
    if raster.valid is not None:
        digest.update(np.packbits(raster.valid).tobytes())
    return f"{FINGERPRINT_ALGORITHM}:{digest.hexdigest()}"


# ---- sampling ----------------------------------------------------------------------------------------------


def _value_scale(raster: GeoRaster) -> float:
    scale = VALUE_SCALES.get(raster.array.dtype.name)
    if scale is None:
        raise MapError(
            f"map values of type {raster.array.dtype.name} are not imagery the model can take: "
            f"expected {', '.join(VALUE_SCALES)} (uint8 RGB as written by 'crossview fetch')"
        )
    return scale


def _rgb(raster: GeoRaster) -> GeoRaster:
    if raster.count < RGB_BANDS:
        raise MapError(f"the map has {raster.count} band(s); the aerial models take RGB imagery (3 bands)")
    if raster.count == RGB_BANDS:
        return raster
    return GeoRaster(
        array=raster.array[:RGB_BANDS],
        crs=raster.crs,
        transform=raster.transform,
        valid=raster.valid,
        nodata=raster.nodata,
        band_names=tuple(raster.band_names)[:RGB_BANDS],
        tags=raster.tags,
    )


def working_raster(raster: GeoRaster, geometry: ChipGeometry) -> GeoRaster:
    """The map warped into the chip frame at the chip's pixel size (``average`` when downsampling; class rasters
    ``mode``) or at the map's own pixel size when that is coarser (``bilinear``; class rasters ``nearest``)."""
    classes = geometry.modality == "osm"
    source = raster if classes else _rgb(raster)
    native_m = native_pixel_size(source.crs, source.transform, source.width, source.height, geometry.frame.crs)
    if native_m < 0.99 * geometry.gsd_m:
        return source.reproject(geometry.frame.crs, geometry.gsd_m, resampling="mode" if classes else "average")
    return source.reproject(geometry.frame.crs, native_m, resampling="nearest" if classes else "bilinear")


class ChipSampler:
    """Cuts model-ready chips of a map at any centre of the index frame.

    Args:
        raster: the map (any CRS; 3 or more bands, the first three RGB; uint8, uint16 or float in [0, 1]).
        geometry: the chips' frame, size and footprint (:func:`chip_geometry_for_model` or an index's).

    Raises:
        MapError: a map without RGB bands or of an unsupported value type.
    """

    def __init__(self, raster: GeoRaster, geometry: ChipGeometry) -> None:
        self.geometry = geometry
        self.classes = geometry.modality == "osm"
        self.value_scale = 1.0 if self.classes else _value_scale(raster)
        self.raster = working_raster(raster, geometry)

    def crop(
        self,
        centers_xy: npt.ArrayLike,
        heading_deg: npt.ArrayLike = 0.0,
        *,
        size_px: int | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Chips at arbitrary centres, exactly as the index cuts them (heading 0: true-north-up).

        Args:
            centers_xy: (N, 2) chip centres (x, y) in the index frame, metres.
            heading_deg: float or (N,) true heading pointing to the chip's top (0 for retrieval chips).
            size_px: chip side S in pixels at the chip's gsd (default: the geometry's; larger for map areas).
            device: torch device of the sampling and of the results (default CPU).

        Returns:
            chips: (N, 3, S, S) float32 in [0, 1] (0 where invalid); OSM: (N, G, S, S) whole class indices.
            valid: (N, S, S) bool.
        """
        size = self.geometry.size_px if size_px is None else int(size_px)
        resampling = "nearest" if self.classes else "bilinear"
        chips, valid = self.raster.crop(
            centers_xy, size, self.geometry.gsd_m, heading_deg, resampling=resampling, device=device
        )
        if self.classes:
            return chips, valid  # whole class indices (0 where invalid: "nothing")
        return chips.mul_(1.0 / self.value_scale).clamp_(0.0, 1.0), valid

    def iter_chips(
        self, centers_xy: npt.ArrayLike, *, batch_size: int = 64, device: torch.device | str | None = None
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield ``(start, chips, valid)`` for consecutive batches of ``centers_xy`` (see :meth:`crop`)."""
        centers = np.asarray(centers_xy, dtype=np.float64).reshape(-1, 2)
        for start in range(0, len(centers), batch_size):
            yield (start, *self.crop(centers[start : start + batch_size], device=device))

    def bounds_xy(self) -> tuple[float, float, float, float]:
        """West, south, east, north of the sampled map in the chips' frame, metres."""
        bounds = self.raster.bounds()
        return float(bounds.left), float(bounds.bottom), float(bounds.right), float(bounds.top)

    def lattice(self, stride_m: float) -> np.ndarray:
        """Centres of a square lattice of step ``stride_m`` (at integer multiples of it in the frame) whose map
        pixel is valid, row by row from the south-west.

        Returns:
            (N, 2) float64 (x, y) in the index frame, metres.
        """
        stride = float(stride_m)
        if not (math.isfinite(stride) and stride > 0):
            raise ConfigError(f"stride_m={stride_m!r} must be a finite number of metres > 0")
        valid = self.raster.valid_mask
        rows, cols = np.any(valid, axis=1), np.any(valid, axis=0)
        if not rows.any():
            return np.zeros((0, 2))
        row0, row1 = np.flatnonzero(rows)[[0, -1]]
        col0, col1 = np.flatnonzero(cols)[[0, -1]]
        left, top = self.raster.pixel_to_world(col0, row0)
        right, bottom = self.raster.pixel_to_world(col1 + 1, row1 + 1)
        xs = stride * np.arange(math.ceil(left / stride), math.floor(right / stride) + 1)
        ys = stride * np.arange(math.ceil(bottom / stride), math.floor(top / stride) + 1)
        grid_x, grid_y = np.meshgrid(xs, ys)
        centers = np.stack([grid_x.ravel(), grid_y.ravel()], axis=-1)
        return centers[self.valid_at(centers)]

    def valid_at(self, centers_xy: np.ndarray) -> np.ndarray:
        """(N,) bool: the working raster's pixel under each centre is valid (False outside it)."""
        col, row = self.raster.world_to_pixel(centers_xy[:, 0], centers_xy[:, 1])
        col, row = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
        inside = (col >= 0) & (col < self.raster.width) & (row >= 0) & (row < self.raster.height)
        result = np.zeros(len(centers_xy), dtype=bool)
        result[inside] = self.raster.valid_mask[row[inside], col[inside]]
        return result

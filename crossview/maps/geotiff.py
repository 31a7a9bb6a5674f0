"""The GeoTIFF map source: any raster rasterio opens (local file, COG, ``/vsicurl/`` or http(s) URL).

``read_geotiff_area`` warps only the requested area into a north-up grid of square ``gsd_m`` pixels in the target
CRS through a ``rasterio.vrt.WarpedVRT``: GDAL then reads just the source blocks (or overview blocks) that the area
needs, so a small area of a large remote COG costs a few HTTP range requests.

Validity: the source's alpha band, nodata value or mask band (internal or ``.msk``) marks the valid pixels; the
warp carries it into the output as ``GeoRaster.valid`` (alpha is dropped from the bands). Areas outside the source
are invalid.

Convention:
    Output grids follow ``crossview.maps.raster``: edge-based pixels, top-left corner at (left, top) of the
    requested bounds, rows going south.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from crossview.errors import CrossviewError
from crossview.maps.raster import (
    GeoRaster,
    MapError,
    MapReadError,
    _as_crs,
    _crs_name,
    _positive_float,
    _resampling,
    grid_for_bounds,
    native_pixel_size,
)

MAX_AREA_PIXELS = 1 << 28
"""Largest output grid (width x height) ``read_geotiff_area`` accepts: about 0.8 GB of RGB bytes."""

STRETCH_PERCENTILES = (2.0, 98.0)
"""Percentiles of the valid pixels of a band mapped to 0 and 255 when non-uint8 imagery becomes uint8 RGB."""

ALPHA_VALID_MIN = 128
"""A warped alpha at or above this marks a valid pixel (GDAL writes partial alpha along data edges)."""

_REMOTE_PREFIXES = ("/vsi", "http://", "https://", "s3://", "gs://", "az://")
_ATTRIBUTION_TAGS = ("attribution", "copyright", "tifftag_copyright")


def read_geotiff_area(
    src: str | os.PathLike,
    *,
    bounds: Sequence[float],
    crs: Any,
    gsd_m: float,
    resampling: str = "bilinear",
    to_uint8_rgb: bool = True,
) -> GeoRaster:
    """Read an area of a raster, warped into a north-up grid in ``crs``.

    Args:
        src: path or URL rasterio opens (``/vsicurl/https://...``, ``https://...``, a local GeoTIFF, ...).
        bounds: (left, bottom, right, top) of the area in ``crs``.
        crs: target CRS (anything ``rasterio.crs.CRS.from_user_input`` takes, or a pyproj CRS).
        gsd_m: output pixel size in target CRS units (metres for projected metric CRSs).
        resampling: a ``rasterio.enums.Resampling`` name ('bilinear', 'nearest', 'cubic', ...).
        to_uint8_rgb: True: 3 uint8 bands (R, G, B); a single band is repeated, non-uint8 bands are stretched
            linearly from the 2nd-98th percentile of their valid pixels to 0-255 (a constant band becomes 0).
            False: the source's bands (minus alpha) in their own dtype.

    Returns:
        GeoRaster (C, H, W) with H = ceil((top - bottom) / gsd_m), W likewise, ``valid`` the warped source mask,
        tags ``source``, ``time`` (UTC ISO time of the read) and ``attribution`` when the source has one.
        Invalid pixels are 0 (nodata for ``to_uint8_rgb=False`` sources with a nodata value).

    Raises:
        MapReadError: the source cannot be opened or read (message names it).
        MapError: bad arguments, or the area holds no valid source pixel ("no data in the requested area").
    """
    dst_crs = _as_crs(crs)
    transform, width, height = grid_for_bounds(bounds, _positive_float(gsd_m, "gsd_m"))
    if width * height > MAX_AREA_PIXELS:
        raise MapError(f"requested area is {width} x {height} pixels, more than {MAX_AREA_PIXELS}: raise gsd_m")
    method = _resampling(resampling)
    with open_raster(src) as dataset:
        tags, nodata = _source_tags(dataset, src), dataset.nodata
        level = overview_level(dataset, dst_crs, transform.a)
    # reopening is cheap: GDAL caches the header (and /vsicurl/ the fetched bytes) in-process
    with open_raster(src, **({} if level is None else {"overview_level": level})) as dataset:
        bands, valid, interp, names = _read_warped(dataset, dst_crs, transform, (height, width), method)
    if not valid.any():
        raise MapError(f"no data in the requested area {tuple(bounds)} ({_crs_name(dst_crs)}) of {src}")
    if to_uint8_rgb:
        bands, names, nodata = to_rgb_uint8(bands, valid, interp), ("red", "green", "blue"), None
    else:
        bands[:, ~valid] = nodata if nodata is not None else 0  # the warp's alpha replaced the nodata fill
    return GeoRaster(
        array=bands,
        crs=dst_crs,
        transform=transform,
        valid=None if valid.all() else valid,
        nodata=nodata,
        band_names=names,
        tags=tags,
    )


def geotiff_info(src: str | os.PathLike) -> dict[str, Any]:
    """Describe a raster without reading its pixels (for the command line).

    Returns:
        dict with ``source``, ``crs`` (e.g. 'EPSG:32633'), ``bounds`` (left, bottom, right, top in that CRS),
        ``bounds_wgs84`` (west, south, east, north in degrees), ``res`` (x, y in CRS units), ``width``,
        ``height``, ``count`` (all bands), ``dtype``, ``nodata``, ``has_alpha`` and ``overviews`` (factors).
    """
    with open_raster(src) as dataset:
        if dataset.crs is None:
            raise MapError(f"raster {src} has no CRS: it cannot be placed on the map")
        box = dataset.bounds
        return {
            "source": str(src),
            "crs": _crs_name(dataset.crs),
            "bounds": tuple(float(v) for v in box),
            "bounds_wgs84": tuple(float(v) for v in transform_bounds(dataset.crs, "EPSG:4326", *box)),
            "res": tuple(float(v) for v in dataset.res),
            "width": dataset.width,
            "height": dataset.height,
            "count": dataset.count,
            "dtype": dataset.dtypes[0],
            "nodata": dataset.nodata,
            "has_alpha": _alpha_index(dataset) is not None,
            "overviews": list(dataset.overviews(1)) if dataset.count else [],
        }


@contextmanager
def open_raster(src: str | os.PathLike, **open_options: Any) -> Iterator[DatasetReader]:
    """Open a raster for reading; GDAL errors become one-line ``MapReadError`` naming ``src``.

    Remote sources (``/vsi...`` and URLs) are opened with ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`` so GDAL does
    not list the remote folder looking for sidecar files. ``open_options`` go to ``rasterio.open`` (e.g.
    ``overview_level=0`` opens the first overview as a dataset of its own).
    """
    name = os.fspath(src)
    options = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"} if name.startswith(_REMOTE_PREFIXES) else {}
    try:
        with rasterio.Env(**options), rasterio.open(name, **open_options) as dataset:
            yield dataset
    except CrossviewError:
        raise
    except (RasterioError, OSError) as error:
        message = " ".join(str(error).split())
        raise MapReadError(f"cannot read raster {name}: {message}") from None


def overview_level(dataset: DatasetReader, crs: Any, gsd: float) -> int | None:
    """The coarsest overview (0-based level) still at least as fine as ``gsd``, or None for full resolution.

    Like ``gdalwarp -ovr AUTO``: a coarse read of a big COG then fetches overview blocks instead of every
    full-resolution block. The source's native pixel size in ``crs`` units is taken at its centre.

    Args:
        dataset: an open source raster.
        crs: the target CRS.
        gsd: target pixel size in ``crs`` units.
    """
    factors = dataset.overviews(1) if dataset.count else []
    if not factors:
        return None
    try:
        native = native_pixel_size(dataset.crs, dataset.transform, dataset.width, dataset.height, crs)
    except (MapError, RasterioError):  # the source centre does not exist in crs: read full resolution
        return None
    ratio = gsd / native
    levels = [level for level, factor in enumerate(factors) if factor <= ratio * 1.01]
    return levels[-1] if levels else None


def to_rgb_uint8(bands: np.ndarray, valid: np.ndarray, colorinterp: Sequence[ColorInterp] = ()) -> np.ndarray:
    """(C, H, W) bands of any dtype -> (3, H, W) uint8 RGB.

    Band choice: red, green and blue by colour interpretation when all three are present, else the first three
    bands, else band 1 repeated three times. uint8 bands keep their values; other dtypes are stretched per band
    linearly from the ``STRETCH_PERCENTILES`` of their valid pixels to 0-255 (a constant band becomes 0).
    Invalid pixels are 0.

    Args:
        bands: (C, H, W) pixel values.
        valid: (H, W) bool mask of valid pixels.
        colorinterp: optional colour interpretation of each band.
    """
    rgb = bands[_rgb_indexes(bands.shape[0], colorinterp)]
    out = rgb.copy() if rgb.dtype == np.uint8 else np.stack([_stretch_band(band, valid) for band in rgb])
    out[:, ~valid] = 0
    return out


# ---- helpers ----------------------------------------------------------------------------------------------------


def _alpha_index(dataset: DatasetReader) -> int | None:
    """1-based index of the alpha band, or None."""
    for index, interp in zip(dataset.indexes, dataset.colorinterp, strict=True):
        if interp == ColorInterp.alpha:
            return index
    return None


def _read_warped(
    dataset: DatasetReader, crs: Any, transform: Affine, shape: tuple[int, int], method: Resampling
) -> tuple[np.ndarray, np.ndarray, list[ColorInterp], list[str]]:
    """Warp through a VRT with an alpha band (the source's, or one added from its nodata/mask) and read it."""
    height, width = shape
    with WarpedVRT(
        dataset, crs=crs, transform=transform, width=width, height=height, resampling=method,
        add_alpha=_alpha_index(dataset) is None,
    ) as vrt:  # fmt: skip
        return _read_vrt(vrt)


def _read_vrt(vrt: WarpedVRT) -> tuple[np.ndarray, np.ndarray, list[ColorInterp], list[str]]:
    """Data bands (alpha dropped), valid mask, their colour interpretations and names from a warped VRT."""
    alpha = _alpha_index(vrt)
    indexes = [index for index in vrt.indexes if index != alpha]
    bands = vrt.read(indexes)
    valid = vrt.read(alpha) >= ALPHA_VALID_MIN if alpha is not None else vrt.dataset_mask() > 0
    interp = [vrt.colorinterp[index - 1] for index in indexes]
    names = [vrt.descriptions[index - 1] or interp[i].name for i, index in enumerate(indexes)]
    return bands, valid, interp, names


def _source_tags(dataset: DatasetReader, src: str | os.PathLike) -> dict[str, str]:
    tags = {"source": os.fspath(src), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for key, value in dataset.tags().items():
        if key.lower() in _ATTRIBUTION_TAGS and value.strip():
            tags["attribution"] = value.strip()
            break
    return tags


def _rgb_indexes(count: int, colorinterp: Sequence[ColorInterp]) -> list[int]:
    wanted = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(interp in colorinterp for interp in wanted):
        return [list(colorinterp).index(interp) for interp in wanted]
    return [0, 1, 2] if count >= 3 else [0, 0, 0]


def _stretch_band(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """One band -> uint8 by a linear stretch of its valid pixels' percentiles to 0-255 (constant -> 0)."""
    values = band[valid].astype(np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros(band.shape, dtype=np.uint8)
    low, high = np.percentile(values, STRETCH_PERCENTILES)
    if not high > low:
        return np.zeros(band.shape, dtype=np.uint8)
    scaled = (band.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 255.0).round().astype(np.uint8)

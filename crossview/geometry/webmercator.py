"""Web Mercator (EPSG:3857) pixel and tile arithmetic for XYZ tile sources.

Convention:
    Global pixel coordinates at a zoom are continuous and edge-based (GDAL): (col_px, row_px) = (0, 0) is the
    outer top-left corner of the world, i.e. (lat MAX_LATITUDE_DEG, lon -180); the world is
    ``tile_size * 2**zoom`` pixels wide and high, rows grow southwards, and tile (x, y) covers the pixels
    [tile_size * x, tile_size * (x + 1)) by [tile_size * y, tile_size * (y + 1)). Latitudes beyond
    +/-MAX_LATITUDE_DEG do not exist in Web Mercator and raise :class:`~crossview.errors.CoordinateError`.
    Metres per pixel follow DESIGN's VIGOR formula ``156543.03392 * cos(lat) / 2**zoom`` (for 256-pixel tiles).

Array convention: as in :mod:`crossview.geometry.frames` (scalars in -> floats out, arrays -> float64 arrays).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import mercantile
import numpy as np
import numpy.typing as npt

from crossview.errors import CoordinateError
from crossview.geometry.bbox import BBox
from crossview.geometry.frames import (
    FloatOrArray,
    LatLon,
    _as_float_arrays,
    _check_finite,
    _first_bad,
    _output,
)

MAX_LATITUDE_DEG = 85.0511287798066
"""Latitude of the top edge of Web Mercator's square world, atan(sinh(pi)) in degrees."""

EARTH_EQUATOR_M = 2.0 * math.pi * 6378137.0
"""Length of the equator of Web Mercator's sphere (the WGS84 semi-major axis), metres."""

EQUATOR_M_PER_PIXEL_ZOOM0 = 156543.03392
"""Metres per pixel on the equator at zoom 0 for 256-pixel tiles (EARTH_EQUATOR_M / 256, as VIGOR rounds it)."""

MAX_TILE_ZOOM = 30
"""Largest zoom accepted by the tile functions (2**30 tiles per row keeps indices well inside int64)."""

# Inputs this close beyond the world's edges are accepted and clamped: absorbs float round-off.
_EDGE_TOLERANCE_DEG = 1e-9
_EDGE_TOLERANCE_REL = 1e-12  # of the world's size in pixels
# mercantile.tiles clamps latitudes at this value (its own rounding of MAX_LATITUDE_DEG); count_tiles mirrors it.
_MERCANTILE_LAT_CLAMP_DEG = 85.051129


class PixelXY(NamedTuple):
    """Continuous global pixel coordinates (edge-based): column (east) and row (south)."""

    col_px: FloatOrArray
    row_px: FloatOrArray


class MercatorBounds(NamedTuple):
    """A box in EPSG:3857 metres."""

    left_m: float
    bottom_m: float
    right_m: float
    top_m: float


# ---- validation --------------------------------------------------------------------------------------------


def _check_zoom(zoom: Any) -> float:
    try:
        value = float(zoom)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= MAX_TILE_ZOOM):
        raise CoordinateError(f"zoom={zoom!r} must be a number in [0, {MAX_TILE_ZOOM}]")
    return value


def _check_tile_zoom(zoom: Any) -> int:
    if isinstance(zoom, bool) or not isinstance(zoom, (int, np.integer)):
        raise CoordinateError(f"zoom={zoom!r} must be an integer tile zoom level")
    return int(_check_zoom(zoom))


def _check_tile_size(tile_size: Any) -> int:
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size <= 0:
        raise CoordinateError(f"tile_size={tile_size!r} must be a positive integer number of pixels")
    return int(tile_size)


def _check_tile(x: Any, y: Any, zoom: Any) -> tuple[int, int, int]:
    z = _check_tile_zoom(zoom)
    for name, value in (("x", x), ("y", y)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise CoordinateError(f"tile {name}={value!r} must be an integer")
        if not 0 <= value < 2**z:
            raise CoordinateError(f"tile ({x}, {y}, {z}) does not exist: x and y must be in [0, {2**z - 1}]")
    return int(x), int(y), z


def _mercator_lat(lat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Check latitudes against Web Mercator's limit; clamp those within round-off of it."""
    _check_finite(lat, "lat")
    bad = np.abs(lat) > MAX_LATITUDE_DEG + _EDGE_TOLERANCE_DEG
    if bad.any():
        raise CoordinateError(f"lat={_first_bad(lat, bad)} is out of range: Web Mercator is limited to +/-85.0511 deg")
    return np.clip(lat, -MAX_LATITUDE_DEG, MAX_LATITUDE_DEG)


def _world_lon(lon: npt.NDArray[np.float64], name: str) -> npt.NDArray[np.float64]:
    _check_finite(lon, name)
    bad = np.abs(lon) > 180.0 + _EDGE_TOLERANCE_DEG
    if bad.any():
        raise CoordinateError(f"{name}={_first_bad(lon, bad)} is outside [-180, 180] degrees")
    return np.clip(lon, -180.0, 180.0)


def _check_in_world(pixels: np.ndarray, name: str, world_px: float, zoom: float, *, limit: str) -> None:
    """Pixels must lie in [0, world_px], up to round-off (a relative tolerance), else raise."""
    tolerance_px = _EDGE_TOLERANCE_REL * world_px
    bad = (pixels < -tolerance_px) | (pixels > world_px + tolerance_px)
    if bad.any():
        raise CoordinateError(
            f"{name}={_first_bad(pixels, bad)} is outside the world [0, {world_px:g}] at zoom {zoom:g} ({limit})"
        )


# ---- pixels ------------------------------------------------------------------------------------------------


def meters_per_pixel(*, lat: npt.ArrayLike, zoom: float, tile_size: int = 256) -> FloatOrArray:
    """Ground size of a Web Mercator pixel: ``156543.03392 * cos(lat) / 2**zoom * (256 / tile_size)``.

    This is the spherical scale used by VIGOR and tile providers. On the WGS84 ellipsoid the true ground
    size differs by up to ~0.3% (Web Mercator is not conformal there): along north by the factor M/a
    (meridional radius of curvature over the semi-major axis), along east by N/a.

    Args:
        lat: (...) latitudes, degrees, within +/-MAX_LATITUDE_DEG.
        zoom: zoom level (fractional zooms allowed).
        tile_size: tile width in pixels (512 for "retina" tiles halves the metres per pixel).

    Returns:
        (...) metres per pixel.
    """
    (lat_a,), scalar = _as_float_arrays(lat=lat)
    lat_a = _mercator_lat(lat_a)
    z = _check_zoom(zoom)
    size_ratio = 256.0 / _check_tile_size(tile_size)
    return _output(EQUATOR_M_PER_PIXEL_ZOOM0 * np.cos(np.radians(lat_a)) / 2.0**z * size_ratio, scalar)


def latlon_to_pixel(*, lat: npt.ArrayLike, lon: npt.ArrayLike, zoom: float, tile_size: int = 256) -> PixelXY:
    """WGS84 degrees -> continuous global pixel coordinates at a zoom (edge-based, origin top-left).

    Args:
        lat: (...) latitudes, degrees, within +/-MAX_LATITUDE_DEG.
        lon: (...) longitudes, degrees, in [-180, 180].
        zoom: zoom level.
        tile_size: tile width in pixels.

    Returns:
        ``PixelXY`` of (...) columns (east) and rows (south) in [0, tile_size * 2**zoom].
    """
    (lat_a, lon_a), scalar = _as_float_arrays(lat=lat, lon=lon)
    lat_a, lon_a = _mercator_lat(lat_a), _world_lon(lon_a, "lon")
    world_px = _check_tile_size(tile_size) * 2.0 ** _check_zoom(zoom)
    col = (lon_a + 180.0) / 360.0 * world_px
    mercator_y = np.log(np.tan(np.pi / 4.0 + np.radians(lat_a) / 2.0))  # in units of the sphere's radius
    row = (1.0 - mercator_y / np.pi) / 2.0 * world_px
    return PixelXY(_output(col, scalar), _output(row, scalar))


def pixel_to_latlon(col_px: npt.ArrayLike, row_px: npt.ArrayLike, *, zoom: float, tile_size: int = 256) -> LatLon:
    """Continuous global pixel coordinates at a zoom -> WGS84 degrees (inverse of ``latlon_to_pixel``).

    Args:
        col_px: (...) columns in [0, tile_size * 2**zoom].
        row_px: (...) rows in [0, tile_size * 2**zoom].
        zoom: zoom level.
        tile_size: tile width in pixels.

    Returns:
        ``LatLon`` of (...) degrees.

    Raises:
        CoordinateError: pixels outside the world (beyond +/-85.0511 deg or +/-180 deg).
    """
    (col, row), scalar = _as_float_arrays(col_px=col_px, row_px=row_px)
    _check_finite(col, "col_px")
    _check_finite(row, "row_px")
    world_px = _check_tile_size(tile_size) * 2.0 ** _check_zoom(zoom)
    _check_in_world(col, "col_px", world_px, zoom, limit="+/-180 deg")
    _check_in_world(row, "row_px", world_px, zoom, limit="Web Mercator is limited to +/-85.0511 deg")
    col, row = np.clip(col, 0.0, world_px), np.clip(row, 0.0, world_px)
    lon = col / world_px * 360.0 - 180.0
    lat = np.degrees(np.arctan(np.sinh(np.pi * (1.0 - 2.0 * row / world_px))))
    return LatLon(_output(lat, scalar), _output(lon, scalar))


# ---- tiles -------------------------------------------------------------------------------------------------


def tile_bounds(x: int, y: int, zoom: int) -> BBox:
    """WGS84 bounds of XYZ tile (x, y, zoom), via ``mercantile.bounds``."""
    x, y, z = _check_tile(x, y, zoom)
    bounds = mercantile.bounds(x, y, z)
    return BBox(bounds.west, bounds.south, bounds.east, bounds.north)


def tile_bounds_mercator(x: int, y: int, zoom: int) -> MercatorBounds:
    """EPSG:3857 bounds (left, bottom, right, top) of XYZ tile (x, y, zoom) in metres, via mercantile."""
    x, y, z = _check_tile(x, y, zoom)
    bounds = mercantile.xy_bounds(x, y, z)
    return MercatorBounds(bounds.left, bounds.bottom, bounds.right, bounds.top)


def _check_bbox_in_mercator(bbox: BBox) -> None:
    if not isinstance(bbox, BBox):
        raise CoordinateError(f"expected a BBox, got {bbox!r}")
    if bbox.south >= MAX_LATITUDE_DEG or bbox.north <= -MAX_LATITUDE_DEG:
        raise CoordinateError(
            f"{bbox} lies entirely beyond the tiles' latitudes: Web Mercator is limited to +/-85.0511 deg"
        )


def tiles_for_bbox(bbox: BBox, zoom: int) -> list[tuple[int, int, int]]:
    """The XYZ tiles overlapping a box at one zoom, as ``(x, y, z)`` (``mercantile.tiles``).

    Latitudes beyond the Web Mercator limit are clamped to it; a box that merely touches a tile's east or
    south edge does not include that tile.
    """
    _check_bbox_in_mercator(bbox)
    z = _check_tile_zoom(zoom)
    tiles = mercantile.tiles(bbox.west, bbox.south, bbox.east, bbox.north, zooms=[z])
    return [(tile.x, tile.y, tile.z) for tile in tiles]


def count_tiles(bbox: BBox, zoom: int) -> int:
    """``len(tiles_for_bbox(bbox, zoom))`` in O(1), without listing the tiles (for --max-tiles checks).

    Uses the same clamping and corner tiles as ``mercantile.tiles``, so the two always agree.
    """
    _check_bbox_in_mercator(bbox)
    z = _check_tile_zoom(zoom)
    west, east = max(-180.0, bbox.west), min(180.0, bbox.east)
    south = max(-_MERCANTILE_LAT_CLAMP_DEG, bbox.south)
    north = min(_MERCANTILE_LAT_CLAMP_DEG, bbox.north)
    upper_left = mercantile.tile(west, north, z)
    lower_right = mercantile.tile(east - mercantile.LL_EPSILON, south + mercantile.LL_EPSILON, z)
    columns = max(0, lower_right.x - upper_left.x + 1)
    rows = max(0, lower_right.y - upper_left.y + 1)
    return columns * rows


def zoom_for_gsd(gsd_m: float, *, lat: float, tile_size: int = 256, max_zoom: int = 22) -> int:
    """The coarsest zoom whose pixels are at least as fine as ``gsd_m`` at a latitude.

    Returns the smallest integer zoom z in [0, max_zoom] with ``meters_per_pixel(lat, z) <= gsd_m``. The
    result is clamped: ``max_zoom`` when even that zoom is coarser than ``gsd_m`` (the caller then has to
    upsample), 0 when zoom 0 is already fine enough.

    Args:
        gsd_m: wanted ground sampling distance, metres per pixel (> 0).
        lat: latitude of the area, degrees.
        tile_size: tile width in pixels.
        max_zoom: the largest zoom the tile source serves.
    """
    try:
        gsd = float(gsd_m)
    except (TypeError, ValueError):
        gsd = math.nan
    if not (math.isfinite(gsd) and gsd > 0.0):
        raise CoordinateError(f"gsd_m={gsd_m!r} must be a finite positive number of metres per pixel")
    if np.ndim(lat):
        raise CoordinateError(f"zoom_for_gsd takes one latitude, got lat={lat!r}")
    top = _check_tile_zoom(max_zoom)
    for zoom in range(top + 1):
        if meters_per_pixel(lat=lat, zoom=zoom, tile_size=tile_size) <= gsd:
            return zoom
    return top


def quadkey(x: int, y: int, z: int) -> str:
    """Bing-style quadkey of XYZ tile (x, y, z) (``mercantile.quadkey``); the empty string at zoom 0."""
    x, y, z = _check_tile(x, y, z)
    return mercantile.quadkey(x, y, z)

"""``GeoRaster``: an in-memory map raster (bands + CRS + affine transform + valid mask + tags), its GeoTIFF I/O,
chip cropping and reprojection.

Convention:
    Pixel coordinates are continuous and edge-based (GDAL/rasterio): ``transform * (col, row)`` is the world position
    of the point (col, row); pixel (row i, col j) has its centre at (i + 0.5, j + 0.5). Map rasters written by
    crossview are north-up (no rotation terms in the transform).

Chip convention (``GeoRaster.crop``):
    A chip is a square of ``size_px`` pixels of ``gsd_m`` GROUND metres centred on a point; chip pixel (row i, col j)
    has its centre at (i + 0.5, j + 0.5) and the chip centre is at (S/2, S/2). The chip is oriented by a TRUE heading
    ψ (degrees clockwise from true north): ψ points to the top of the chip, so heading 0 gives a true-north-up chip
    (rotated by the meridian convergence relative to a UTM grid) and heading 90 puts east at the top. A chip pixel
    offset (right, up) = gsd * (u - S/2, S/2 - v) is the body vector (right, forward) of DESIGN's pose convention:
    (east, north) = R(ψ) @ (right, up) with R(ψ) = [[cos ψ, sin ψ], [-sin ψ, cos ψ]].
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyproj
import rasterio
import rasterio.warp
import torch
import torch.nn.functional as F
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds
from torch import Tensor

from crossview.errors import CoordinateError, CrossviewError
from crossview.fsio import atomic_path
from crossview.geometry.cameras import pixel_centers
from crossview.geometry.frames import LatLon, LocalFrame, validate_latlon

CROP_RESAMPLING = ("nearest", "bilinear")
"""Resampling modes of ``GeoRaster.crop``: ``nearest`` for class rasters (OSM), ``bilinear`` for imagery."""

JACOBIAN_STEP_M = 1.0
"""Geodesic step of the central differences that give the ground -> CRS Jacobian, metres."""

_WGS84 = pyproj.CRS.from_epsg(4326)


class MapError(CrossviewError, ValueError):
    """A map raster is unusable (bad shape, unknown CRS, unreadable file, empty area)."""


class MapReadError(CrossviewError, OSError):
    """A map file could not be read or written."""


# ---- grids, CRSs and local ground geometry (module functions: the source of truth) ------------------------------


def grid_for_bounds(bounds: Sequence[float], gsd: float) -> tuple[Affine, int, int]:
    """The north-up grid of square pixels whose top-left corner is (left, top) and which covers ``bounds``.

    Args:
        bounds: (left, bottom, right, top) in CRS units.
        gsd: pixel size in CRS units (> 0).

    Returns:
        (transform, width, height) with width = ceil((right - left) / gsd) (at least 1), likewise height; the grid
        may reach a fraction of a pixel beyond ``right`` and ``bottom``.
    """
    left, bottom, right, top = _check_bounds(bounds)
    gsd = _positive_float(gsd, "gsd_m")
    width = max(1, math.ceil((right - left) / gsd - 1e-6))  # tolerance: 400.0000001 pixels is 400
    height = max(1, math.ceil((top - bottom) / gsd - 1e-6))
    return Affine(gsd, 0.0, left, 0.0, -gsd, top), width, height


def native_pixel_size(src_crs: Any, transform: Affine, width: int, height: int, dst_crs: Any) -> float:
    """Size, in ``dst_crs`` units, of a source pixel at the source's centre (geometric mean of its two sides).

    The resolution a warp into ``dst_crs`` keeps when it neither up- nor downsamples (at the centre).
    """
    col, row = width / 2.0, height / 2.0
    corners = [transform @ (col, row), transform @ (col + 1.0, row), transform @ (col, row + 1.0)]
    xs, ys = rasterio.warp.transform(_as_crs(src_crs), _as_crs(dst_crs), *zip(*corners, strict=True))
    side_col = math.hypot(xs[1] - xs[0], ys[1] - ys[0])
    side_row = math.hypot(xs[2] - xs[0], ys[2] - ys[0])
    size = math.sqrt(side_col * side_row)
    if not (math.isfinite(size) and size > 0):
        raise MapError(f"the raster's pixels cannot be expressed in CRS {_crs_name(dst_crs)}")
    return size


def ground_to_crs_jacobian(crs: Any, x: npt.ArrayLike, y: npt.ArrayLike) -> np.ndarray:
    """Local linear map from ground offsets (east_m, north_m) to CRS offsets (dx, dy), at CRS points.

    Central differences of ``JACOBIAN_STEP_M`` geodesic steps east, west, north and south on the ellipsoid of the
    CRS's own geodetic datum (no datum shift involved). Examples: UTM ``k * R(convergence)`` (R rotating vectors
    counter-clockwise, i.e. azimuths anticlockwise by the convergence); Web Mercator about ``diag(1/cos lat)``;
    EPSG:4326 degrees of longitude/latitude per metre.

    Args:
        crs: the CRS (anything ``rasterio.crs.CRS.from_user_input`` takes).
        x, y: (N,) points in that CRS.

    Returns:
        (N, 2, 2) float64 ``J`` with ``(dx, dy) = J[n] @ (east_m, north_m)``.

    Raises:
        MapError: a point lies outside the CRS's domain.
    """
    to_geodetic, from_geodetic, geod = _geodetic_tools(_as_crs(crs).to_wkt())
    x_a, y_a = (np.atleast_1d(np.asarray(v, dtype=np.float64)).ravel() for v in (x, y))
    lon, lat = to_geodetic.transform(x_a, y_a)
    azimuths_deg = np.tile([90.0, 270.0, 0.0, 180.0], len(x_a))  # east, west, north, south
    lon4, lat4, _ = geod.fwd(
        np.repeat(lon, 4), np.repeat(lat, 4), azimuths_deg, np.full(azimuths_deg.shape, JACOBIAN_STEP_M)
    )
    x4, y4 = (np.asarray(v, dtype=np.float64).reshape(-1, 4) for v in from_geodetic.transform(lon4, lat4))
    half = 0.5 / JACOBIAN_STEP_M
    d_east = np.stack([x4[:, 0] - x4[:, 1], y4[:, 0] - y4[:, 1]], axis=-1) * half
    d_north = np.stack([x4[:, 2] - x4[:, 3], y4[:, 2] - y4[:, 3]], axis=-1) * half
    jacobian = np.stack([d_east, d_north], axis=-1)
    bad = ~np.isfinite(jacobian).all(axis=(1, 2))
    if bad.any():
        index = int(np.argmax(bad))
        raise MapError(
            f"point ({float(x_a[index])!r}, {float(y_a[index])!r}) is outside the domain of CRS {_crs_name(crs)}"
        )
    return jacobian


@lru_cache(maxsize=32)
def _geodetic_tools(crs_wkt: str) -> tuple[pyproj.Transformer, pyproj.Transformer, pyproj.Geod]:
    """(CRS -> its geodetic CRS, the inverse, the ellipsoid's Geod), all in (x, y) = (lon, lat) order."""
    crs = pyproj.CRS.from_wkt(crs_wkt)
    geodetic = crs.geodetic_crs
    if geodetic is None:
        raise MapError(f"CRS {crs.name!r} has no geodetic datum: ground distances are undefined")
    forward = pyproj.Transformer.from_crs(crs, geodetic, always_xy=True)
    inverse = pyproj.Transformer.from_crs(geodetic, crs, always_xy=True)
    return forward, inverse, crs.get_geod()


@lru_cache(maxsize=32)
def _wgs84_transformers(crs_wkt: str) -> tuple[pyproj.Transformer, pyproj.Transformer]:
    """(WGS84 -> CRS, CRS -> WGS84) in (x, y) = (lon, lat) order."""
    crs = pyproj.CRS.from_wkt(crs_wkt)
    return (
        pyproj.Transformer.from_crs(_WGS84, crs, always_xy=True),
        pyproj.Transformer.from_crs(crs, _WGS84, always_xy=True),
    )


def _as_crs(crs: Any) -> CRS:
    """Anything ``CRS.from_user_input`` takes, or a pyproj CRS, as a rasterio CRS (MapError otherwise)."""
    try:
        if isinstance(crs, pyproj.CRS):
            epsg = crs.to_epsg()
            return CRS.from_epsg(epsg) if epsg is not None else CRS.from_wkt(crs.to_wkt())
        return CRS.from_user_input(crs)
    except Exception as error:
        raise MapError(f"unknown CRS {crs!r}: {error}") from None


def _crs_name(crs: Any) -> str:
    try:
        return _as_crs(crs).to_string() or repr(crs)
    except MapError:
        return repr(crs)


def _resampling(name: str, allowed: Sequence[str] | None = None) -> Resampling:
    """A rasterio ``Resampling`` member by name ('nearest', 'bilinear', ...)."""
    choices = allowed if allowed is not None else [member.name for member in Resampling]
    if name not in choices:
        raise MapError(f"unknown resampling {name!r}; choose one of {', '.join(choices)}")
    return Resampling[name]


def _positive_float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MapError(f"{name}={value!r} is not a number") from None
    if not (math.isfinite(number) and number > 0.0):
        raise MapError(f"{name}={value!r} must be a finite number > 0")
    return number


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise MapError(f"{name}={value!r} must be an integer >= 1")
    return int(value)


def _check_bounds(bounds: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        left, bottom, right, top = (float(v) for v in bounds)
    except (TypeError, ValueError):
        raise MapError(f"bounds={bounds!r} must be four numbers (left, bottom, right, top)") from None
    if not all(math.isfinite(v) for v in (left, bottom, right, top)) or left >= right or bottom >= top:
        raise MapError(f"bounds={bounds!r} must be finite with left < right and bottom < top")
    return left, bottom, right, top


def _centers_array(centers_xy: npt.ArrayLike) -> np.ndarray:
    try:
        centers = np.asarray(centers_xy, dtype=np.float64)
    except (TypeError, ValueError):
        raise MapError(f"centers_xy must be an (N, 2) array of numbers, got {centers_xy!r}") from None
    if centers.ndim != 2 or centers.shape[1] != 2:
        raise MapError(f"centers_xy must have shape (N, 2), got {centers.shape}")
    if not np.isfinite(centers).all():
        raise MapError(f"centers_xy has non-finite values at rows {np.where(~np.isfinite(centers).all(1))[0][:5]}")
    return centers


def _headings_array(heading_deg: npt.ArrayLike, count: int) -> np.ndarray:
    heading = np.asarray(heading_deg, dtype=np.float64)
    if heading.ndim > 1 or (heading.ndim == 1 and heading.shape[0] != count):
        raise MapError(f"heading_deg must be a number or have shape ({count},), got shape {heading.shape}")
    if not np.isfinite(heading).all():
        raise MapError("heading_deg has non-finite values")
    return np.broadcast_to(heading, (count,))


def _rotation_ground_from_chip(heading_deg: np.ndarray) -> np.ndarray:
    """(N, 2, 2) rotations taking chip (right, up) vectors to ground (east, north): R(ψ) = [[c, s], [-s, c]]."""
    psi = np.radians(heading_deg)
    cos_h, sin_h = np.cos(psi), np.sin(psi)
    return np.stack([np.stack([cos_h, sin_h], -1), np.stack([-sin_h, cos_h], -1)], axis=-2)


@dataclass
class GeoRaster:
    """A georeferenced raster held in memory.

    Attributes:
        array: (C, H, W) pixel values (any numeric dtype).
        crs: coordinate reference system of the transform (anything ``CRS.from_user_input`` accepts).
        transform: affine transform from (col, row) pixel coordinates to CRS coordinates.
        valid: optional (H, W) bool mask, True where pixels hold data; ``None`` means every pixel is valid.
        nodata: optional nodata value of the bands (informative; ``valid`` is authoritative).
        band_names: one name per band (GeoTIFF band descriptions), default ``band_1``...
        tags: dataset metadata written as GeoTIFF tags: ``source``, ``attribution``, ``time``, ``CLASSES``, ...
    """

    array: np.ndarray
    crs: Any
    transform: Affine
    valid: np.ndarray | None = None
    nodata: float | None = None
    band_names: Sequence[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    _torch_cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise MapError(f"GeoRaster expects a (C, H, W) array, got shape {self.array.shape}")
        try:
            self.crs = CRS.from_user_input(self.crs)
        except Exception as error:
            raise MapError(f"unknown CRS {self.crs!r}: {error}") from None
        if self.valid is not None:
            self.valid = np.asarray(self.valid, dtype=bool)
            if self.valid.shape != self.array.shape[1:]:
                raise MapError(f"valid mask shape {self.valid.shape} does not match raster {self.array.shape[1:]}")
        names = tuple(self.band_names) or tuple(f"band_{i + 1}" for i in range(self.count))
        if len(names) != self.count:
            raise MapError(f"{len(names)} band names for {self.count} bands")
        self.band_names = names
        self.tags = {str(k): str(v) for k, v in dict(self.tags).items()}

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the sampling cache (data-loader workers rebuild it on first use)."""
        return {**self.__dict__, "_torch_cache": {}}

    # ---- shape and grid ------------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self.array.shape[0])

    @property
    def height(self) -> int:
        return int(self.array.shape[1])

    @property
    def width(self) -> int:
        return int(self.array.shape[2])

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units (positive)."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def valid_mask(self) -> np.ndarray:
        """(H, W) bool mask of valid pixels (all True when ``valid`` is None)."""
        return self.valid if self.valid is not None else np.ones(self.array.shape[1:], dtype=bool)

    def pixel_to_world(self, col: np.ndarray | float, row: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Continuous pixel coordinates (col, row) -> CRS coordinates (x, y)."""
        col, row = np.asarray(col, dtype=np.float64), np.asarray(row, dtype=np.float64)
        t = self.transform
        return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f

    def world_to_pixel(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """CRS coordinates (x, y) -> continuous pixel coordinates (col, row)."""
        inverse = ~self.transform
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return inverse.a * x + inverse.b * y + inverse.c, inverse.d * x + inverse.e * y + inverse.f

    def bounds(self, crs: Any = None) -> BoundingBox:
        """(left, bottom, right, top) in the raster's CRS, or in ``crs`` (densified edges: encloses the raster)."""
        xs, ys = self.pixel_to_world(np.array([0, self.width]), np.array([0, self.height]))
        box = BoundingBox(min(xs), min(ys), max(xs), max(ys))
        if crs is None:
            return box
        return BoundingBox(*transform_bounds(self.crs, CRS.from_user_input(crs), *box, densify_pts=21))

    @property
    def gsd_m(self) -> float:
        """Mean pixel size in metres, for CRSs in metres (Web Mercator: projected metres, not ground metres)."""
        axes = pyproj.CRS.from_wkt(self.crs.to_wkt()).axis_info[:2]
        if not self.crs.is_projected or not all(axis.unit_name in ("metre", "meter") for axis in axes):
            raise MapError(f"gsd_m needs a projected CRS in metres, the raster's CRS is {_crs_name(self.crs)}")
        return float(np.mean(self.res))

    def center_latlon(self) -> LatLon:
        """WGS84 position of the raster's centre (the centre of its bounds, transformed as a point)."""
        box = self.bounds()
        _, to_wgs84 = _wgs84_transformers(self.crs.to_wkt())
        lon, lat = to_wgs84.transform(0.5 * (box.left + box.right), 0.5 * (box.bottom + box.top))
        if not (math.isfinite(lat) and math.isfinite(lon)):
            raise MapError(f"the centre of the raster cannot be expressed in WGS84 (CRS {_crs_name(self.crs)})")
        return LatLon(float(lat), float(lon))

    # ---- chips ---------------------------------------------------------------------------------------------
    def crop(
        self,
        centers_xy: npt.ArrayLike,
        size_px: int,
        gsd_m: float,
        heading_deg: npt.ArrayLike = 0.0,
        *,
        resampling: str = "bilinear",
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Cut square chips around many centres at once from the in-memory array (no file is read).

        Works in any CRS: at each centre, the local Jacobian from ground metres to CRS units
        (``ground_to_crs_jacobian``) maps the chip's pixel grid into the raster (scale, convergence and the
        anisotropy of e.g. Web Mercator or EPSG:4326 are handled; the map is linearised over a chip). See the
        module docstring for the chip convention: heading_deg points to the top of the chip.

        Validity: the raster's valid mask (and, for float rasters, finite values) is sampled like the bands with
        zeros outside the raster. With ``bilinear`` a chip pixel is valid where the sampled mask weight is >= 0.5
        (at least half of its bilinear support is valid data: about where the nearest source pixel is valid) and
        its values are renormalised by that weight, so invalid or outside pixels never bleed into valid ones;
        with ``nearest`` the nearest source pixel decides. Invalid chip pixels are 0.

        The float32 copy of the raster used for sampling is cached on the instance (for the last device used) on
        first use; it is rebuilt when ``array`` or ``valid`` is replaced, not when they are modified in place.

        Args:
            centers_xy: (N, 2) chip centres (x, y) in the raster's CRS.
            size_px: chip width and height S in pixels.
            gsd_m: ground metres per chip pixel.
            heading_deg: float or (N,) TRUE headings, degrees clockwise from true north, pointing to the chip top.
            resampling: ``bilinear`` (imagery) or ``nearest`` (class rasters such as OSM).
            device: torch device of the sampling and of the results (default CPU).

        Returns:
            chips: (N, C, S, S) float32 on the raster's value scale.
            valid: (N, S, S) bool, inside the raster and its valid mask.
        """
        centers = _centers_array(centers_xy)
        size = _positive_int(size_px, "size_px")
        gsd = _positive_float(gsd_m, "gsd_m")
        headings = _headings_array(heading_deg, len(centers))
        mode = _resampling(resampling, CROP_RESAMPLING).name
        device = torch.device(device if device is not None else "cpu")
        grid = self._chip_grid(centers, headings, size, gsd, device)
        return self._sample_chips(grid, mode)

    def crop_latlon(
        self,
        *,
        lat: npt.ArrayLike,
        lon: npt.ArrayLike,
        size_px: int,
        gsd_m: float,
        heading_deg: npt.ArrayLike = 0.0,
        resampling: str = "bilinear",
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``crop`` at WGS84 centres: lat, lon (N,) or scalars in degrees (converted with pyproj).

        Returns:
            chips (N, C, S, S) float32 and valid (N, S, S) bool, as ``crop``.
        """
        try:
            validate_latlon(lat=lat, lon=lon)
        except CoordinateError as error:
            raise MapError(str(error)) from None
        lat_a, lon_a = (
            np.atleast_1d(v).ravel() for v in np.broadcast_arrays(np.asarray(lat, float), np.asarray(lon, float))
        )
        to_crs, _ = _wgs84_transformers(self.crs.to_wkt())
        x, y = to_crs.transform(lon_a, lat_a)
        centers = np.stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)], axis=-1)
        return self.crop(centers, size_px, gsd_m, heading_deg, resampling=resampling, device=device)

    def _chip_grid(
        self, centers: np.ndarray, headings: np.ndarray, size: int, gsd: float, device: torch.device
    ) -> Tensor:
        """(N, S, S, 2) normalised grid_sample coordinates (x = col, y = row) of every chip pixel centre."""
        jacobian = (
            ground_to_crs_jacobian(self.crs, centers[:, 0], centers[:, 1]) if len(centers) else np.zeros((0, 2, 2))
        )
        inverse = ~self.transform
        pixel_from_crs = np.array([[inverse.a, inverse.b], [inverse.d, inverse.e]])
        chip_to_ground = _rotation_ground_from_chip(headings) @ np.diag([gsd, -gsd])  # chip (du, dv) px -> metres
        to_normalised = np.array([2.0 / self.width, 2.0 / self.height])
        linear = to_normalised[:, None] * (pixel_from_crs @ jacobian @ chip_to_ground)  # (N, 2, 2)
        col, row = self.world_to_pixel(centers[:, 0], centers[:, 1])
        origin = np.stack([col, row], axis=-1) * to_normalised - 1.0  # chip centre, normalised
        # float32 is enough: ~1e-7 relative error on normalised coordinates, ~1e-3 pixel on a 10^4-pixel raster
        offsets = pixel_centers(size, size, dtype=torch.float32, device=device) - size / 2.0  # (S, S, 2) (du, dv)
        linear_t = torch.as_tensor(linear, dtype=torch.float32, device=device)
        origin_t = torch.as_tensor(origin, dtype=torch.float32, device=device)
        du, dv = offsets[None, ..., :1], offsets[None, ..., 1:]  # (1, S, S, 1): a 2x2 matmul is slow in torch
        grid = origin_t[:, None, None, :] + du * linear_t[:, None, None, :, 0]
        return grid.addcmul_(dv, linear_t[:, None, None, :, 1])

    def _sample_chips(self, grid: Tensor, mode: str) -> tuple[Tensor, Tensor]:
        """Sample the cached (C + 1, H, W) stack (masked bands + mask) at an (N, S, S, 2) grid."""
        stack = self._sampling_stack(grid.device)
        count, size = grid.shape[0], grid.shape[1]
        flat_grid = grid.reshape(1, count * size, size, 2)  # one input, N chips stacked along the rows
        sampled = F.grid_sample(stack[None], flat_grid, mode=mode, padding_mode="zeros", align_corners=False)
        sampled = sampled[0].reshape(stack.shape[0], count, size, size).transpose(0, 1)
        weight = sampled[:, -1]
        valid = weight >= 0.5
        chips = sampled[:, :-1] / weight.clamp_min(0.5)[:, None]  # also makes (N, C, S, S) contiguous
        return chips.masked_fill_(~valid[:, None], 0.0), valid

    def _sampling_stack(self, device: torch.device) -> Tensor:
        """(C + 1, H, W) float32: bands set to 0 where invalid, then the valid mask; cached for the last device."""
        cache = self._torch_cache
        # identity, not id(): the cache holds the arrays, so a new array can never reuse a freed one's id
        fresh = cache.get("array") is self.array and cache.get("valid") is self.valid and cache.get("device") == device
        if not fresh:
            stack = np.empty((self.count + 1, self.height, self.width), dtype=np.float32)
            stack[:-1] = self.array
            valid = self.valid_mask & np.isfinite(stack[:-1]).all(axis=0)
            stack[:-1, ~valid] = 0.0
            stack[-1] = valid
            cache.clear()
            cache.update(array=self.array, valid=self.valid, device=device, stack=torch.from_numpy(stack).to(device))
        return cache["stack"]

    # ---- reprojection --------------------------------------------------------------------------------------
    def reproject(
        self,
        crs: Any,
        gsd_m: float | None = None,
        *,
        bounds: Sequence[float] | None = None,
        resampling: str = "bilinear",
    ) -> GeoRaster:
        """Warp into a north-up grid of square pixels in another CRS (rasterio.warp.reproject, i.e. GDAL).

        Invalid source pixels never contribute to values (the source is passed as a masked array); the valid
        mask is reprojected separately with ``nearest``. Band names, tags and nodata are kept.

        Args:
            crs: target CRS (anything ``CRS.from_user_input`` takes, or a pyproj CRS).
            gsd_m: pixel size in target CRS units (metres for projected metric CRSs); default: the size of a
                source pixel there (``native_pixel_size``).
            bounds: (left, bottom, right, top) to cover, in the target CRS; default: this raster's bounds there.
            resampling: a ``rasterio.enums.Resampling`` name ('bilinear', 'nearest', 'cubic', ...).

        Returns:
            A new GeoRaster (same dtype) whose top-left corner is (left, top) of ``bounds``.
        """
        dst_crs = _as_crs(crs)
        method = _resampling(resampling)
        box = tuple(bounds) if bounds is not None else tuple(self.bounds(dst_crs))
        gsd = (
            gsd_m
            if gsd_m is not None
            else native_pixel_size(self.crs, self.transform, self.width, self.height, dst_crs)
        )
        transform, width, height = grid_for_bounds(box, gsd)
        grid = (dst_crs, transform, (height, width))
        valid = self._warp_valid(*grid)
        return GeoRaster(
            array=self._warp_values(*grid, method),
            crs=dst_crs,
            transform=transform,
            valid=None if valid.all() else valid,
            nodata=self.nodata,
            band_names=self.band_names,
            tags=self.tags,
        )

    def to_local_utm(self, gsd_m: float, *, resampling: str = "bilinear") -> GeoRaster:
        """``reproject`` into the UTM (or UPS) zone of the raster's centre (``LocalFrame.from_center``)."""
        center = self.center_latlon()
        frame = LocalFrame.from_center(lat=center.lat, lon=center.lon)
        return self.reproject(frame.crs, gsd_m, resampling=resampling)

    def _warp_values(self, crs: CRS, transform: Affine, shape: tuple[int, int], method: Resampling) -> np.ndarray:
        fill = self.nodata if self.nodata is not None else 0
        destination = np.full((self.count, *shape), fill, dtype=self.array.dtype)
        source: np.ndarray = self.array
        if self.valid is not None:
            source = np.ma.masked_array(self.array, mask=np.broadcast_to(~self.valid, self.array.shape))
        rasterio.warp.reproject(
            source,
            destination,
            src_transform=self.transform,
            src_crs=self.crs,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=self.nodata,
            resampling=method,
        )
        return destination

    def _warp_valid(self, crs: CRS, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
        destination = np.zeros(shape, dtype=np.uint8)
        rasterio.warp.reproject(
            self.valid_mask.astype(np.uint8),
            destination,
            src_transform=self.transform,
            src_crs=self.crs,
            dst_transform=transform,
            dst_crs=crs,
            src_nodata=0,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
        return destination > 0

    # ---- GeoTIFF I/O ---------------------------------------------------------------------------------------
    def write(self, path: str | os.PathLike, *, compress: str = "deflate", blocksize: int = 256) -> Path:
        """Write a tiled, compressed GeoTIFF atomically (temp file in the same folder, then rename).

        Band names become band descriptions, ``tags`` dataset tags, ``valid`` an internal mask band.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        profile = self._profile(compress, blocksize)
        try:
            with (
                atomic_path(path) as temp,
                rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
                rasterio.open(temp, "w", **profile) as dst,
            ):
                dst.write(self.array)
                for index, name in enumerate(self.band_names, start=1):
                    dst.set_band_description(index, name)
                dst.update_tags(**self.tags)
                if self.valid is not None:
                    dst.write_mask(self.valid.astype(np.uint8) * 255)
        except (RasterioError, OSError) as error:
            raise MapReadError(f"cannot write {path}: {error}") from None
        return path

    def _profile(self, compress: str, blocksize: int) -> dict[str, Any]:
        tiled = self.width >= blocksize and self.height >= blocksize
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": self.width,
            "height": self.height,
            "count": self.count,
            "dtype": self.array.dtype.name,
            "crs": self.crs,
            "transform": self.transform,
            "compress": compress,
            "tiled": tiled,
            "BIGTIFF": "IF_SAFER",
        }
        if tiled:
            profile.update(blockxsize=blocksize, blockysize=blocksize)
        if self.nodata is not None:
            profile["nodata"] = self.nodata
        return profile

    @classmethod
    def read(cls, path: str | os.PathLike) -> GeoRaster:
        """Read a whole raster file; its dataset mask (mask band, alpha or nodata) becomes ``valid``."""
        try:
            with rasterio.open(path) as src:
                array = src.read()
                mask = src.dataset_mask() > 0
                names = [d or f"band_{i + 1}" for i, d in enumerate(src.descriptions)]
                return cls(
                    array=array,
                    crs=src.crs,
                    transform=src.transform,
                    valid=None if mask.all() else mask,
                    nodata=src.nodata,
                    band_names=names,
                    tags=src.tags(),
                )
        except RasterioError as error:
            raise MapReadError(f"cannot read raster {path}: {error}") from None

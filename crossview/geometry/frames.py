"""Local metric map frames (UTM/UPS or any projected metric CRS), headings and geodesics on WGS84.

Convention:
    Geographic coordinates are WGS84 degrees and every Python API takes them by name (``lat=..., lon=...``).
    The map frame is a projected metric CRS with x = east, y = north in metres (by default the UTM zone of the
    area's centre). Headings are degrees clockwise from true north in [0, 360). ``convergence_deg`` is the
    clockwise angle from true north to grid north (positive east of the central meridian in the northern
    hemisphere), so ``grid heading = true heading - convergence``.

Array convention:
    Numeric inputs may be Python scalars or array-likes; they are broadcast together and computed in float64.
    When every numeric input is a scalar (0-d) the results are Python ``float``; otherwise they are float64
    ``numpy.ndarray`` with the broadcast shape. Out-of-range or non-finite inputs raise
    :class:`~crossview.errors.CoordinateError` (a ``ValueError``) naming the first offending value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
from pyproj import CRS, Geod, Proj, Transformer
from pyproj.exceptions import CRSError

from crossview.errors import CoordinateError

FloatOrArray: TypeAlias = float | npt.NDArray[np.float64]

_WGS84 = CRS.from_epsg(4326)
_GEOD = Geod(ellps="WGS84")

UTM_NORTH_LIMIT_DEG = 84.0
UTM_SOUTH_LIMIT_DEG = -80.0
UPS_NORTH_EPSG = 32661
UPS_SOUTH_EPSG = 32761


class LatLon(NamedTuple):
    """A WGS84 position in degrees (floats, or float64 arrays of one shape)."""

    lat: FloatOrArray
    lon: FloatOrArray


class XY(NamedTuple):
    """A position in a metric map frame: x = east, y = north, metres."""

    x_m: FloatOrArray
    y_m: FloatOrArray


# ---- array helpers (shared with webmercator/bbox) ----------------------------------------------------------


def _as_float_arrays(**named: Any) -> tuple[list[npt.NDArray[np.float64]], bool]:
    """Broadcast named numeric inputs to float64 arrays; also says whether all were scalars."""
    arrays = []
    for name, value in named.items():
        try:
            arrays.append(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            raise CoordinateError(f"{name}={value!r} is not a number or an array of numbers") from None
    try:
        broadcast = np.broadcast_arrays(*arrays)
    except ValueError:
        shapes = ", ".join(f"{name}{a.shape}" for name, a in zip(named, arrays, strict=True))
        raise CoordinateError(f"input shapes do not broadcast together: {shapes}") from None
    scalar = all(a.ndim == 0 for a in arrays)
    return [np.array(a, dtype=np.float64) for a in broadcast], scalar


def _output(values: npt.NDArray[np.float64], scalar: bool) -> FloatOrArray:
    return float(values) if scalar else values


def _first_bad(values: npt.NDArray[np.float64], bad: npt.NDArray[np.bool_]) -> str:
    """Describe the first offending element, with its index when the input is an array."""
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    value = float(values[index])
    return f"{value!r}" if values.ndim == 0 else f"{value!r} (at index {index})"


def _check_finite(values: npt.NDArray[np.float64], name: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise CoordinateError(f"{name}={_first_bad(values, bad)} is not finite")


def _check_range(values: npt.NDArray[np.float64], name: str, low: float, high: float, unit: str) -> None:
    _check_finite(values, name)
    bad = (values < low) | (values > high)
    if bad.any():
        raise CoordinateError(f"{name}={_first_bad(values, bad)} is outside [{low:g}, {high:g}] {unit}")


def _finite_array(value: Any, name: str) -> npt.NDArray[np.float64]:
    (array,), _ = _as_float_arrays(**{name: value})
    _check_finite(array, name)
    return array


def _check_latlon(
    lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64], lat_name: str = "lat", lon_name: str = "lon"
) -> None:
    _check_range(lat, lat_name, -90.0, 90.0, "degrees")
    _check_range(lon, lon_name, -180.0, 180.0, "degrees")


def _latlon_arrays(lat: Any, lon: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], bool]:
    (lat_a, lon_a), scalar = _as_float_arrays(lat=lat, lon=lon)
    _check_latlon(lat_a, lon_a)
    return lat_a, lon_a, scalar


def _wrap_lon_deg(lon: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Longitudes to [-180, 180) (keeps +180 as +180: pyproj and Geod return it at the antimeridian)."""
    wrapped = (lon + 180.0) % 360.0 - 180.0
    return np.where(lon == 180.0, 180.0, wrapped)


# ---- validation, headings, geodesics -----------------------------------------------------------------------


def validate_latlon(*, lat: npt.ArrayLike, lon: npt.ArrayLike) -> None:
    """Check WGS84 coordinates.

    Args:
        lat: (...) latitudes, degrees, must lie in [-90, 90].
        lon: (...) longitudes, degrees, must lie in [-180, 180]; broadcastable with ``lat``.

    Raises:
        CoordinateError: naming the first non-finite or out-of-range value (latitudes are checked first).
    """
    _latlon_arrays(lat, lon)


def wrap_heading_deg(heading_deg: npt.ArrayLike) -> FloatOrArray:
    """Wrap headings (degrees) to [0, 360).

    Args:
        heading_deg: (...) finite angles in degrees.

    Returns:
        (...) the same directions in [0, 360); never 360.0, even for tiny negative inputs such as -1e-15
        (whose exact wrap, 360 - 1e-15, rounds to 360.0 in float64 and is returned as 0.0).
    """
    heading = _finite_array(heading_deg, "heading_deg")
    wrapped = np.mod(heading, 360.0)
    return _output(np.where(wrapped >= 360.0, 0.0, wrapped), heading.ndim == 0)


def geodesic_distance_m(
    *, lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> FloatOrArray:
    """Geodesic (shortest path) distance on the WGS84 ellipsoid.

    Args:
        lat1, lon1: (...) first points, degrees.
        lat2, lon2: (...) second points, degrees (all four broadcast together).

    Returns:
        (...) distances in metres.
    """
    (lat1_a, lon1_a, lat2_a, lon2_a), scalar = _as_float_arrays(lat1=lat1, lon1=lon1, lat2=lat2, lon2=lon2)
    _check_latlon(lat1_a, lon1_a, "lat1", "lon1")
    _check_latlon(lat2_a, lon2_a, "lat2", "lon2")
    shape = lat1_a.shape
    _, _, dist = _GEOD.inv(lon1_a.ravel(), lat1_a.ravel(), lon2_a.ravel(), lat2_a.ravel())
    return _output(np.asarray(dist, dtype=np.float64).reshape(shape), scalar)


def geodesic_destination(
    *, lat: npt.ArrayLike, lon: npt.ArrayLike, azimuth_deg: npt.ArrayLike, distance_m: npt.ArrayLike
) -> LatLon:
    """Point reached by following a geodesic on WGS84 (the direct geodesic problem).

    Args:
        lat, lon: (...) start points, degrees.
        azimuth_deg: (...) start azimuths, degrees clockwise from true north.
        distance_m: (...) distances along the geodesic, metres (negative goes backwards).

    Returns:
        ``LatLon`` of (...) end points; longitudes in [-180, 180].
    """
    (lat_a, lon_a, az, dist), scalar = _as_float_arrays(
        lat=lat, lon=lon, azimuth_deg=azimuth_deg, distance_m=distance_m
    )
    _check_latlon(lat_a, lon_a)
    _check_finite(az, "azimuth_deg")
    _check_finite(dist, "distance_m")
    shape = lat_a.shape
    lon2, lat2, _ = _GEOD.fwd(lon_a.ravel(), lat_a.ravel(), az.ravel(), dist.ravel())
    lat2 = np.asarray(lat2, dtype=np.float64).reshape(shape)
    lon2 = np.asarray(lon2, dtype=np.float64).reshape(shape)
    return LatLon(_output(lat2, scalar), _output(lon2, scalar))


# ---- UTM zone selection ------------------------------------------------------------------------------------


def true_offset_to_grid(east_m: float, north_m: float, *, convergence_rad: float, scale: float) -> tuple[float, float]:
    """A ground offset (east, TRUE north, metres) -> the grid offset (dx, dy) of a projected frame whose grid
    north lies ``convergence_rad`` clockwise of true north and whose point scale factor is ``scale``."""
    cos_g, sin_g = math.cos(convergence_rad), math.sin(convergence_rad)
    return scale * (east_m * cos_g - north_m * sin_g), scale * (north_m * cos_g + east_m * sin_g)


def grid_offset_to_true(dx_m: float, dy_m: float, *, convergence_rad: float, scale: float) -> tuple[float, float]:
    """The inverse of :func:`true_offset_to_grid`: grid offset -> (east, true north) ground metres."""
    cos_g, sin_g = math.cos(convergence_rad), math.sin(convergence_rad)
    dx, dy = dx_m / scale, dy_m / scale
    return dx * cos_g + dy * sin_g, dy * cos_g - dx * sin_g


def _utm_zone(lat: float, lon: float) -> int:
    zone = min(math.floor((lon + 180.0) / 6.0) + 1, 60)  # lon = 180 belongs to zone 60
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:  # band V: south-western Norway
        return 32
    if 72.0 <= lat <= UTM_NORTH_LIMIT_DEG and 0.0 <= lon < 42.0:  # band X: Svalbard uses 31, 33, 35, 37
        for zone_x, east_edge in ((31, 9.0), (33, 21.0), (35, 33.0), (37, 42.0)):
            if lon < east_edge:
                return zone_x
    return zone


def utm_epsg(*, lat: float, lon: float) -> int:
    """EPSG code of the WGS84 UTM zone containing a point, or of UPS outside UTM's domain.

    UTM zones are 6 degrees wide (zone 1 starts at 180 W; longitude 180 belongs to zone 60), with the
    standard exceptions: band V (56-64 N) uses zone 32 for 3-12 E (Norway), and band X (72-84 N) uses zones
    31 (0-9 E), 33 (9-21 E), 35 (21-33 E) and 37 (33-42 E) (Svalbard). UTM covers 80 S to 84 N (both
    included); beyond, the Universal Polar Stereographic CRSs are returned: 32661 (UPS North) for lat > 84,
    32761 (UPS South) for lat < -80. Latitude 0 counts as northern.

    Args:
        lat: latitude, degrees (scalar).
        lon: longitude, degrees (scalar).

    Returns:
        326zz (north) or 327zz (south) for UTM zone zz, or 32661 / 32761 for UPS.
    """
    if np.ndim(lat) or np.ndim(lon):
        raise CoordinateError(f"utm_epsg takes one point, got lat={lat!r}, lon={lon!r}")
    lat_a, lon_a, _ = _latlon_arrays(lat, lon)
    lat_f, lon_f = float(lat_a), float(lon_a)
    if lat_f > UTM_NORTH_LIMIT_DEG:
        return UPS_NORTH_EPSG
    if lat_f < UTM_SOUTH_LIMIT_DEG:
        return UPS_SOUTH_EPSG
    return (32600 if lat_f >= 0.0 else 32700) + _utm_zone(lat_f, lon_f)


# ---- cached pyproj objects ---------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _transformers(crs: CRS) -> tuple[Transformer, Transformer]:
    """(WGS84 -> crs, crs -> WGS84), both in (lon, lat) / (x, y) order."""
    forward = Transformer.from_crs(_WGS84, crs, always_xy=True)
    inverse = Transformer.from_crs(crs, _WGS84, always_xy=True)
    return forward, inverse


@lru_cache(maxsize=64)
def _proj(crs: CRS) -> Proj:
    horizontal = crs.sub_crs_list[0] if crs.is_compound else crs
    return Proj(horizontal)


def _is_metre(axis: Any) -> bool:
    return axis.unit_name in ("metre", "meter") and math.isclose(axis.unit_conversion_factor, 1.0)


# ---- LocalFrame --------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class LocalFrame:
    """A metric map frame: a projected CRS with x = east, y = north in metres.

    Attributes:
        crs: the projected CRS (axes in metres; always used in (x, y) = (easting, northing) order).
        epsg: its EPSG code, or None when it has none.

    Scale factor and convergence come from PROJ's factors in the CRS's own geographic datum; for datums other
    than WGS84 the sub-arcsecond difference is irrelevant to them.
    """

    crs: CRS
    epsg: int | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.crs, CRS):
            raise CoordinateError(f"LocalFrame needs a pyproj.CRS, got {self.crs!r}; use LocalFrame.from_crs")
        if not self.crs.is_projected:
            raise CoordinateError(
                f"CRS {self.crs.name!r} is not projected: the map frame must be a metric projected CRS "
                "(e.g. a UTM zone), not geographic degrees"
            )
        if not all(_is_metre(axis) for axis in self.crs.axis_info[:2]):
            units = ", ".join(axis.unit_name for axis in self.crs.axis_info[:2])
            raise CoordinateError(f"CRS {self.crs.name!r} has axes in {units}: the map frame must be in metres")
        object.__setattr__(self, "epsg", self.crs.to_epsg())

    def __repr__(self) -> str:
        code = f"EPSG:{self.epsg}" if self.epsg is not None else "custom CRS"
        return f"LocalFrame({code}, {self.crs.name!r})"

    @classmethod
    def from_center(cls, *, lat: float, lon: float) -> LocalFrame:
        """The UTM (or UPS) frame of ``utm_epsg(lat=lat, lon=lon)`` for an area centred there."""
        return cls(CRS.from_epsg(utm_epsg(lat=lat, lon=lon)))

    @classmethod
    def from_crs(cls, crs_like: Any) -> LocalFrame:
        """A frame from anything ``pyproj.CRS.from_user_input`` takes ("EPSG:32633", 32633, WKT, a CRS).

        Raises:
            CoordinateError: the input is not a CRS, or the CRS is not projected in metres.
        """
        try:
            crs = CRS.from_user_input(crs_like)
        except CRSError as error:
            raise CoordinateError(f"not a valid CRS: {crs_like!r} ({error})") from None
        return cls(crs)

    @property
    def name(self) -> str:
        """The CRS's name, e.g. 'WGS 84 / UTM zone 33N'."""
        return self.crs.name

    # ---- points -------------------------------------------------------------------------------------------

    def to_xy(self, *, lat: npt.ArrayLike, lon: npt.ArrayLike) -> XY:
        """Project WGS84 points into the frame.

        Args:
            lat, lon: (...) WGS84 degrees.

        Returns:
            ``XY`` of (...) eastings and northings in metres.

        Raises:
            CoordinateError: out-of-range input or a point outside the projection's domain.
        """
        lat_a, lon_a, scalar = _latlon_arrays(lat, lon)
        forward, _ = _transformers(self.crs)
        x, y = forward.transform(lon_a.ravel(), lat_a.ravel())
        x = np.asarray(x, dtype=np.float64).reshape(lat_a.shape)
        y = np.asarray(y, dtype=np.float64).reshape(lat_a.shape)
        self._check_in_domain(np.isfinite(x) & np.isfinite(y), lat_a, lon_a)
        return XY(_output(x, scalar), _output(y, scalar))

    def to_latlon(self, x_m: npt.ArrayLike, y_m: npt.ArrayLike) -> LatLon:
        """Unproject frame coordinates to WGS84.

        Args:
            x_m, y_m: (...) eastings and northings in metres.

        Returns:
            ``LatLon`` of (...) degrees (latitude first); longitudes in [-180, 180].
        """
        (x, y), scalar = _as_float_arrays(x_m=x_m, y_m=y_m)
        _check_finite(x, "x_m")
        _check_finite(y, "y_m")
        _, inverse = _transformers(self.crs)
        lon, lat = inverse.transform(x.ravel(), y.ravel())
        lat = np.asarray(lat, dtype=np.float64).reshape(x.shape)
        lon = np.asarray(lon, dtype=np.float64).reshape(x.shape)
        bad = ~(np.isfinite(lat) & np.isfinite(lon))
        if bad.any():
            raise CoordinateError(
                f"x_m={_first_bad(x, bad)}, y_m={_first_bad(y, bad)} cannot be unprojected from {self!r}"
            )
        return LatLon(_output(lat, scalar), _output(_wrap_lon_deg(lon), scalar))

    def _check_in_domain(self, ok: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> None:
        """Raise for the first point PROJ could not handle (``ok`` False: inf/NaN results)."""
        if not np.all(ok):
            bad = ~ok
            raise CoordinateError(
                f"lat={_first_bad(lat, bad)}, lon={_first_bad(lon, bad)} is outside the domain of {self!r}"
            )

    # ---- local distortion ----------------------------------------------------------------------------------

    def _factors(self, lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[Any, tuple[int, ...], bool]:
        lat_a, lon_a, scalar = _latlon_arrays(lat, lon)
        factors = _proj(self.crs).get_factors(lon_a.ravel(), lat_a.ravel())
        ok = np.isfinite(factors.dx_dphi) & np.isfinite(factors.dy_dphi) & np.isfinite(factors.parallel_scale)
        self._check_in_domain(ok, lat_a.ravel(), lon_a.ravel())
        return factors, lat_a.shape, scalar

    def convergence_deg(self, *, lat: npt.ArrayLike, lon: npt.ArrayLike) -> FloatOrArray:
        """Meridian convergence: the clockwise angle from true north to grid north.

        Computed from PROJ's partial derivatives as minus the grid azimuth of the meridian's northward tangent,
        ``-atan2(dx/dphi, dy/dphi)``, so the sign follows from the definition rather than from PROJ's own
        convergence field (tests check it by walking true north with pyproj.Geod). Positive east of the central
        meridian in the northern hemisphere (UTM), negative west of it; the signs flip in the southern
        hemisphere. Undefined at the poles themselves.

        Args:
            lat, lon: (...) WGS84 degrees.

        Returns:
            (...) degrees in (-180, 180].
        """
        factors, shape, scalar = self._factors(lat, lon)
        grid_azimuth_of_north = np.degrees(np.arctan2(factors.dx_dphi, factors.dy_dphi))
        convergence = -np.asarray(grid_azimuth_of_north, dtype=np.float64).reshape(shape)
        convergence = np.where(convergence <= -180.0, convergence + 360.0, convergence)
        return _output(convergence, scalar)

    def scale_factor(self, *, lat: npt.ArrayLike, lon: npt.ArrayLike) -> FloatOrArray:
        """Point scale factor k: grid length / ground (ellipsoid) length for a short segment.

        For conformal projections (UTM, UPS, ...) k is the same in every direction: 0.9996 on a UTM central
        meridian, above 1 near zone edges. For non-conformal CRSs this is the scale along the parallel.

        Args:
            lat, lon: (...) WGS84 degrees.

        Returns:
            (...) dimensionless scale factors.
        """
        factors, shape, scalar = self._factors(lat, lon)
        return _output(np.asarray(factors.parallel_scale, dtype=np.float64).reshape(shape), scalar)

    # ---- headings and distances ----------------------------------------------------------------------------

    def true_to_grid_heading_deg(
        self, heading_deg: npt.ArrayLike, *, lat: npt.ArrayLike, lon: npt.ArrayLike
    ) -> FloatOrArray:
        """Heading clockwise from true north -> heading clockwise from grid north (+y), in [0, 360).

        ``grid = true - convergence_deg(lat, lon)``.
        """
        heading = _finite_array(heading_deg, "heading_deg")
        return wrap_heading_deg(heading - self.convergence_deg(lat=lat, lon=lon))

    def grid_to_true_heading_deg(
        self, heading_deg: npt.ArrayLike, *, lat: npt.ArrayLike, lon: npt.ArrayLike
    ) -> FloatOrArray:
        """Heading clockwise from grid north (+y) -> heading clockwise from true north, in [0, 360).

        ``true = grid + convergence_deg(lat, lon)``.
        """
        heading = _finite_array(heading_deg, "heading_deg")
        return wrap_heading_deg(heading + self.convergence_deg(lat=lat, lon=lon))

    def ground_offset_to_grid(self, x_m: float, y_m: float, east_m: float, north_m: float) -> tuple[float, float]:
        """The grid point ``(east_m, north_m)`` ground metres (east, TRUE north) from grid point (x_m, y_m), with
        the convergence and scale factor of (x_m, y_m) (exact to millimetres over a few hundred metres)."""
        lat, lon = self.to_latlon(float(x_m), float(y_m))
        gamma = math.radians(float(self.convergence_deg(lat=lat, lon=lon)))
        scale = float(self.scale_factor(lat=lat, lon=lon))
        dx, dy = true_offset_to_grid(east_m, north_m, convergence_rad=gamma, scale=scale)
        return float(x_m) + dx, float(y_m) + dy

    def ground_distance_m(
        self, x1_m: npt.ArrayLike, y1_m: npt.ArrayLike, x2_m: npt.ArrayLike, y2_m: npt.ArrayLike
    ) -> FloatOrArray:
        """Approximate ellipsoidal (geodesic) distance between two frame points.

        The grid distance divided by the scale factor at the grid midpoint; for conformal frames this is
        within 1 mm per km of the WGS84 geodesic inside a UTM zone (the error grows with the square of the
        length as k varies along the line).

        Args:
            x1_m, y1_m: (...) first points, metres.
            x2_m, y2_m: (...) second points, metres.

        Returns:
            (...) distances in metres.
        """
        (x1, y1, x2, y2), scalar = _as_float_arrays(x1_m=x1_m, y1_m=y1_m, x2_m=x2_m, y2_m=y2_m)
        grid_m = np.hypot(x2 - x1, y2 - y1)
        mid = self.to_latlon(0.5 * (x1 + x2), 0.5 * (y1 + y2))
        scale = np.asarray(self.scale_factor(lat=mid.lat, lon=mid.lon), dtype=np.float64)
        return _output(grid_m / scale, scalar)

"""Geographic bounding boxes in WGS84 degrees (the CLI's ``--bbox W,S,E,N``).

Convention:
    A ``BBox`` is (west, south, east, north) in WGS84 degrees, the order of ``--bbox`` and of GeoJSON's
    ``bbox`` member (RFC 7946). Boxes are closed (edges included), have positive width and height, and never
    cross the antimeridian (west < east): split such an area into two boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from crossview.errors import CoordinateError
from crossview.geometry.frames import (
    LatLon,
    _as_float_arrays,
    _check_latlon,
    geodesic_destination,
    geodesic_distance_m,
    validate_latlon,
)

# Azimuth search for the circle's easternmost point: coarse step, then refinements (degrees).
_AZIMUTH_SEARCH_STEPS_DEG = (1.0, 0.01, 1e-4, 1e-6)
_LON_MARGIN_DEG = 1e-12


@dataclass(frozen=True)
class BBox:
    """A geographic box (west, south, east, north), WGS84 degrees.

    Raises:
        CoordinateError: a non-finite value, a value out of range, an empty box (west >= east or
            south >= north) or a box crossing the antimeridian (west > east).
    """

    west: float
    south: float
    east: float
    north: float

    def __post_init__(self) -> None:
        values = {"west": self.west, "south": self.south, "east": self.east, "north": self.north}
        for name, value in values.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise CoordinateError(f"bbox {name}={value!r} is not a number") from None
            if not math.isfinite(number):
                raise CoordinateError(f"bbox {name}={number!r} is not finite")
            object.__setattr__(self, name, number)
        self._check_ranges()

    def _check_ranges(self) -> None:
        box = f"bbox (W,S,E,N) = ({self.west!r}, {self.south!r}, {self.east!r}, {self.north!r})"
        for name, value, limit in (
            ("west", self.west, 180.0),
            ("east", self.east, 180.0),
            ("south", self.south, 90.0),
            ("north", self.north, 90.0),
        ):
            if abs(value) > limit:
                raise CoordinateError(f"{box}: {name}={value!r} is outside [-{limit:g}, {limit:g}] degrees")
        if self.west > self.east:
            raise CoordinateError(
                f"{box}: west > east: the values are out of W,S,E,N order or the box crosses the "
                "antimeridian, which is not supported (split it into two boxes at longitude 180)"
            )
        if self.west == self.east:
            raise CoordinateError(f"{box}: west must be less than east (the box has zero width)")
        if self.south >= self.north:
            raise CoordinateError(f"{box}: south must be less than north")

    # ---- construction --------------------------------------------------------------------------------------

    @classmethod
    def from_string(cls, text: str) -> BBox:
        """Parse the command line's ``--bbox W,S,E,N`` (four comma-separated numbers, spaces allowed).

        Raises:
            CoordinateError: naming the option text when it is malformed or describes an invalid box.
        """
        parts = [part.strip() for part in str(text).split(",")]
        if len(parts) != 4:
            raise CoordinateError(
                f"--bbox {text!r}: expected 4 comma-separated numbers W,S,E,N, got {len(parts)} values"
            )
        try:
            west, south, east, north = (float(part) for part in parts)
        except ValueError:
            raise CoordinateError(f"--bbox {text!r}: W,S,E,N must all be numbers (degrees)") from None
        try:
            return cls(west, south, east, north)
        except CoordinateError as error:
            raise CoordinateError(f"--bbox {text!r}: {error}") from None

    @classmethod
    def from_center(cls, *, lat: float, lon: float, radius_m: float) -> BBox:
        """The smallest box containing the geodesic circle of ``radius_m`` around a point.

        North and south edges are the points reached due north and south; the east and west edges come from
        a search over azimuths for the circle's largest longitude offset (the geodesic circle is symmetric
        about the centre's meridian). A circle enclosing a pole gives a box spanning all longitudes, from
        that pole to the other edge.

        Args:
            lat, lon: centre, WGS84 degrees.
            radius_m: circle radius in metres (> 0).

        Raises:
            CoordinateError: bad centre or radius, or a circle crossing the antimeridian.
        """
        if np.ndim(lat) or np.ndim(lon):
            raise CoordinateError(f"BBox.from_center takes one centre, got lat={lat!r}, lon={lon!r}")
        validate_latlon(lat=lat, lon=lon)
        radius = _positive_metres(radius_m, "radius_m")
        lat, lon = float(lat), float(lon)
        north = _edge_lat_deg(lat, lon, radius, pole_deg=90.0)
        south = _edge_lat_deg(lat, lon, radius, pole_deg=-90.0)
        if north == 90.0 or south == -90.0:
            return cls(-180.0, south, 180.0, north)
        half_width_deg = _max_east_offset_deg(lat, lon, radius)
        west, east = lon - half_width_deg, lon + half_width_deg
        if west < -180.0 or east > 180.0:
            raise CoordinateError(
                f"the circle of {radius:g} m around lat={lat!r}, lon={lon!r} crosses the antimeridian "
                f"(longitudes {west:.6f} to {east:.6f}); this is not supported"
            )
        return cls(west, south, east, north)

    # ---- queries -------------------------------------------------------------------------------------------

    @property
    def center(self) -> LatLon:
        """``LatLon`` of the box's centre: the midpoints of its latitude and longitude ranges (degrees)."""
        return LatLon(0.5 * (self.south + self.north), 0.5 * (self.west + self.east))

    def contains(self, *, lat: npt.ArrayLike, lon: npt.ArrayLike) -> bool | npt.NDArray[np.bool_]:
        """Whether points lie in the closed box.

        Args:
            lat, lon: (...) WGS84 degrees.

        Returns:
            A bool for scalar inputs, else a (...) boolean array.
        """
        (lat_a, lon_a), scalar = _as_float_arrays(lat=lat, lon=lon)
        _check_latlon(lat_a, lon_a)
        inside = (lat_a >= self.south) & (lat_a <= self.north) & (lon_a >= self.west) & (lon_a <= self.east)
        return bool(inside) if scalar else inside

    def intersects(self, other: BBox) -> bool:
        """Whether two closed boxes share at least one point (touching edges count)."""
        return (
            self.west <= other.east
            and other.west <= self.east
            and self.south <= other.north
            and other.south <= self.north
        )

    def to_geojson_bbox(self) -> list[float]:
        """``[west, south, east, north]``, the GeoJSON ``bbox`` member (RFC 7946 section 5)."""
        return [self.west, self.south, self.east, self.north]


def _positive_metres(value: object, name: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0.0):
        raise CoordinateError(f"{name}={value!r} must be a finite positive number of metres")
    return number


def _edge_lat_deg(lat: float, lon: float, radius_m: float, *, pole_deg: float) -> float:
    """Northern (pole 90) or southern (pole -90) latitude limit of a geodesic circle.

    The circle's point nearest a pole lies on the centre's meridian (the meridian is the geodesic to the
    pole), so the limit is reached due north or south; a circle enclosing the pole reaches the pole itself.
    """
    pole_m = geodesic_distance_m(lat1=lat, lon1=lon, lat2=pole_deg, lon2=lon)
    if radius_m >= pole_m:
        return pole_deg
    azimuth_deg = 0.0 if pole_deg > 0 else 180.0
    return float(geodesic_destination(lat=lat, lon=lon, azimuth_deg=azimuth_deg, distance_m=radius_m).lat)


def _east_offsets_deg(lat: float, lon: float, radius_m: float, azimuths_deg: np.ndarray) -> np.ndarray:
    """Longitude offsets (degrees, unwrapped to (-180, 180]) of circle points at the given azimuths."""
    points = geodesic_destination(lat=lat, lon=lon, azimuth_deg=azimuths_deg, distance_m=radius_m)
    offset = np.asarray(points.lon) - lon  # no modulo on the small values: it would cost precision
    return np.where(offset > 180.0, offset - 360.0, np.where(offset <= -180.0, offset + 360.0, offset))


def _max_east_offset_deg(lat: float, lon: float, radius_m: float) -> float:
    """Largest longitude offset of the geodesic circle (east side), by a coarse-to-fine azimuth scan.

    The offset is a smooth unimodal function of azimuth on (0, 180); after the last refinement the azimuth
    is known to 1e-6 degrees, which leaves an offset error far below a nanodegree. A margin of 1e-12 degrees
    (0.1 micrometre) keeps the circle inside the box despite rounding in ``lon +/- offset``.
    """
    low, high, best_offset = 0.0, 180.0, 0.0
    for step in _AZIMUTH_SEARCH_STEPS_DEG:
        azimuths = np.arange(low, high + 0.5 * step, step)
        offsets = _east_offsets_deg(lat, lon, radius_m, azimuths)
        best = int(np.argmax(offsets))
        best_offset = max(best_offset, float(offsets[best]))
        low, high = max(azimuths[best] - step, 0.0), min(azimuths[best] + step, 180.0)
    return best_offset + _LON_MARGIN_DEG

"""Uncertainty ellipses and heading lines as WGS84 geometry (pure array math on the WGS84 ellipsoid).

Convention:
    Shapes are built in the local east-north plane of the pose (ground metres) and placed on the ellipsoid by
    geodesics from the pose: an offset (east, north) becomes the point at geodesic distance ``hypot(east, north)``
    and true azimuth ``atan2(east, north)`` (an azimuthal equidistant placement: exact along every ray, and well
    under a millimetre off elsewhere for ellipses of a few hundred metres). Rings are closed (first point
    repeated) and run counter-clockwise in (lon, lat), as RFC 7946 asks of exterior rings.

Confidence: a 2-D Gaussian puts probability ``p`` inside its 1-sigma ellipse scaled by
``sqrt(-2 ln(1 - p))`` (the chi-square quantile with 2 degrees of freedom): 2.4477 for 95 %.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from crossview.errors import CoordinateError
from crossview.geometry.frames import geodesic_destination

DEFAULT_ELLIPSE_CONFIDENCE = 0.95
"""Probability mass inside the drawn uncertainty ellipses (GeoJSON ``ellipses=True`` and ``crossview plot``)."""

DEFAULT_HEADING_LINE_M = 10.0
"""Length of the heading line from each located position, ground metres."""

ELLIPSE_VERTICES = 72
"""Vertices of a drawn ellipse (5 degree steps of the parametric angle), not counting the closing repeat."""


def confidence_scale(confidence: float) -> float:
    """Factor turning 1-sigma semi-axes into those of the ``confidence`` region of a 2-D Gaussian.

    Args:
        confidence: probability in (0, 1), e.g. 0.95.

    Returns:
        ``sqrt(-2 ln(1 - confidence))`` (2.4477 for 0.95, 1.0 for 0.3935).
    """
    if not 0.0 < confidence < 1.0:
        raise CoordinateError(f"confidence={confidence!r} must lie strictly between 0 and 1")
    return math.sqrt(-2.0 * math.log1p(-confidence))


def ellipse_offsets_en(
    semi_major_m: float, semi_minor_m: float, azimuth_deg: float, *, vertices: int = ELLIPSE_VERTICES
) -> npt.NDArray[np.float64]:
    """Points of an ellipse around the origin of the local (east, north) plane, counter-clockwise.

    Args:
        semi_major_m, semi_minor_m: semi-axes, ground metres.
        azimuth_deg: direction of the major axis, degrees clockwise from true north.
        vertices: number of distinct points (>= 8).

    Returns:
        (vertices, 2) (east_m, north_m) offsets, starting at the major axis's tip along ``azimuth_deg``.
    """
    if vertices < 8:
        raise CoordinateError(f"an ellipse needs at least 8 vertices, got {vertices}")
    t = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    azimuth = math.radians(azimuth_deg)
    major = np.array([math.sin(azimuth), math.cos(azimuth)])  # (east, north) unit vector
    minor = np.array([-major[1], major[0]])  # major turned 90 degrees anticlockwise: the ring runs anticlockwise
    return semi_major_m * np.cos(t)[:, None] * major + semi_minor_m * np.sin(t)[:, None] * minor


def offsets_to_lonlat(*, lat: float, lon: float, offsets_en: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Place local (east, north) ground offsets around (``lat``, ``lon``) on WGS84 (geodesics from the point).

    Args:
        lat, lon: the origin, WGS84 degrees.
        offsets_en: (N, 2) offsets in ground metres.

    Returns:
        (N, 2) [lon, lat] degrees.
    """
    offsets = np.asarray(offsets_en, dtype=np.float64).reshape(-1, 2)
    distance_m = np.hypot(offsets[:, 0], offsets[:, 1])
    azimuth_deg = np.degrees(np.arctan2(offsets[:, 0], offsets[:, 1]))
    end = geodesic_destination(lat=lat, lon=lon, azimuth_deg=azimuth_deg, distance_m=distance_m)
    return np.stack([np.asarray(end.lon), np.asarray(end.lat)], axis=-1)


def ellipse_ring_lonlat(
    *,
    lat: float,
    lon: float,
    semi_major_m: float,
    semi_minor_m: float,
    azimuth_deg: float,
    vertices: int = ELLIPSE_VERTICES,
) -> npt.NDArray[np.float64]:
    """Closed counter-clockwise ring of an ellipse centred on a WGS84 point.

    Args:
        lat, lon: the centre, WGS84 degrees.
        semi_major_m, semi_minor_m: semi-axes, ground metres (already scaled to the wanted confidence).
        azimuth_deg: major axis direction, degrees clockwise from true north.
        vertices: distinct points of the ring.

    Returns:
        (vertices + 1, 2) [lon, lat] degrees; the last point repeats the first.
    """
    ring = offsets_to_lonlat(
        lat=lat, lon=lon, offsets_en=ellipse_offsets_en(semi_major_m, semi_minor_m, azimuth_deg, vertices=vertices)
    )
    return np.concatenate([ring, ring[:1]], axis=0)


def heading_line_lonlat(*, lat: float, lon: float, heading_deg: float, length_m: float) -> npt.NDArray[np.float64]:
    """Geodesic segment from a WGS84 point along a true heading.

    Args:
        lat, lon: start, WGS84 degrees.
        heading_deg: degrees clockwise from true north.
        length_m: ground metres.

    Returns:
        (2, 2) [lon, lat] of the start and the end.
    """
    end = geodesic_destination(lat=lat, lon=lon, azimuth_deg=heading_deg, distance_m=length_m)
    return np.array([[lon, lat], [float(end.lon), float(end.lat)]], dtype=np.float64)

"""Tests of crossview.geometry.bbox.BBox: validation, --bbox parsing, circles, queries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from crossview.errors import CoordinateError
from crossview.geometry.bbox import BBox

GEOD = Geod(ellps="WGS84")
SETTINGS = settings(max_examples=100, deadline=None)


@st.composite
def boxes(draw: st.DrawFn) -> BBox:
    west = draw(st.floats(-180.0, 179.0))
    east = draw(st.floats(west, 180.0).filter(lambda e: e > west))
    south = draw(st.floats(-90.0, 89.0))
    north = draw(st.floats(south, 90.0).filter(lambda n: n > south))
    return BBox(west, south, east, north)


# ---- validation -----------------------------------------------------------------------------------------------


def test_valid_box_fields_and_geojson_order() -> None:
    box = BBox(2.25, 48.8, 2.45, 48.9)
    assert (box.west, box.south, box.east, box.north) == (2.25, 48.8, 2.45, 48.9)
    assert box.to_geojson_bbox() == [2.25, 48.8, 2.45, 48.9]  # RFC 7946: [W, S, E, N]
    assert BBox(-180, -90, 180, 90).to_geojson_bbox() == [-180.0, -90.0, 180.0, 90.0]
    assert all(type(v) is float for v in BBox(-180, -90, 180, 90).to_geojson_bbox())


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ((0.0, 0.0, 0.0, 1.0), "zero width"),
        ((0.0, 1.0, 1.0, 1.0), "south must be less than north"),
        ((0.0, 2.0, 1.0, 1.0), "south must be less than north"),
        ((170.0, 0.0, -170.0, 1.0), "antimeridian"),
        ((-181.0, 0.0, 1.0, 1.0), "west=-181.0"),
        ((0.0, 0.0, 180.5, 1.0), "east=180.5"),
        ((0.0, -91.0, 1.0, 1.0), "south=-91.0"),
        ((0.0, 0.0, 1.0, 90.1), "north=90.1"),
        ((math.nan, 0.0, 1.0, 1.0), "west=nan"),
        ((0.0, 0.0, math.inf, 1.0), "east=inf"),
        ((0.0, "x", 1.0, 1.0), "south='x'"),
    ],
)
def test_invalid_box_raises_naming_values(values: tuple, fragment: str) -> None:
    with pytest.raises(CoordinateError) as info:
        BBox(*values)
    assert isinstance(info.value, ValueError)
    assert fragment in str(info.value)


def test_box_is_frozen() -> None:
    box = BBox(0.0, 0.0, 1.0, 1.0)
    with pytest.raises(AttributeError):
        box.west = 0.5  # type: ignore[misc]


# ---- --bbox parsing -------------------------------------------------------------------------------------------


def test_from_string_parses_w_s_e_n() -> None:
    assert BBox.from_string("-122.5,37.7,-122.3,37.8") == BBox(-122.5, 37.7, -122.3, 37.8)
    assert BBox.from_string(" 2.25, 48.8 ,2.45,48.9 ") == BBox(2.25, 48.8, 2.45, 48.9)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1,2,3", "expected 4"),
        ("1,2,3,4,5", "expected 4"),
        ("", "expected 4"),
        ("a,b,c,d", "must all be numbers"),
        ("1;2;3;4", "expected 4"),
        ("3,1,2,4", "west > east"),  # W >= E
        ("2,1,2,4", "zero width"),
        ("0,5,1,4", "south must be less than north"),
        ("0,0,1,nan", "north=nan"),
        ("0,0,200,1", "east=200.0"),
    ],
)
def test_from_string_rejects_malformed(text: str, fragment: str) -> None:
    with pytest.raises(CoordinateError) as info:
        BBox.from_string(text)
    message = str(info.value)
    assert message.startswith(f"--bbox {text!r}")  # the error names the option text
    assert fragment in message
    assert "\n" not in message


@SETTINGS
@given(boxes())
def test_from_string_round_trip(box: BBox) -> None:
    text = ",".join(repr(v) for v in box.to_geojson_bbox())
    assert BBox.from_string(text) == box


# ---- circles --------------------------------------------------------------------------------------------------


def circle_points(lat: float, lon: float, radius_m: float, n: int = 3600) -> tuple[np.ndarray, np.ndarray]:
    azimuths = np.linspace(0.0, 360.0, n, endpoint=False)
    lons, lats, _ = GEOD.fwd(np.full(n, lon), np.full(n, lat), azimuths, np.full(n, radius_m))
    return np.asarray(lats), np.asarray(lons)


@pytest.mark.parametrize(
    ("lat", "lon", "radius_m"),
    [(47.6, -122.3, 1000.0), (0.0, 0.0, 50_000.0), (-33.9, 151.2, 300.0), (70.0, 25.0, 200_000.0)],
)
def test_from_center_contains_circle_tightly(lat: float, lon: float, radius_m: float) -> None:
    box = BBox.from_center(lat=lat, lon=lon, radius_m=radius_m)
    lats, lons = circle_points(lat, lon, radius_m)
    assert bool(np.all(box.contains(lat=lats, lon=lons)))
    # Tight: each edge is within 1e-6 deg (~0.1 m) of the sampled circle's extreme.
    assert box.north - lats.max() < 1e-6 and lats.min() - box.south < 1e-6
    assert box.east - lons.max() < 1e-6 and lons.min() - box.west < 1e-6
    # North/south edges are exactly one radius away along the meridian.
    _, _, north_m = GEOD.inv(lon, lat, lon, box.north)
    assert north_m == pytest.approx(radius_m, abs=1e-6)


@SETTINGS
@given(
    st.floats(-80.0, 80.0),
    st.floats(-170.0, 170.0),
    st.floats(1.0, 100_000.0),
)
def test_from_center_contains_circle(lat: float, lon: float, radius_m: float) -> None:
    box = BBox.from_center(lat=lat, lon=lon, radius_m=radius_m)
    lats, lons = circle_points(lat, lon, radius_m, n=720)
    assert bool(np.all(box.contains(lat=lats, lon=lons)))


def test_from_center_around_pole_spans_all_longitudes() -> None:
    box = BBox.from_center(lat=89.9, lon=10.0, radius_m=20_000.0)  # the pole is ~11 km away
    assert (box.west, box.east, box.north) == (-180.0, 180.0, 90.0)
    _, _, south_m = GEOD.inv(10.0, 89.9, 10.0, box.south)
    assert south_m == pytest.approx(20_000.0, abs=1e-6)


def test_from_center_rejects_bad_input() -> None:
    with pytest.raises(CoordinateError, match="antimeridian"):
        BBox.from_center(lat=0.0, lon=179.99, radius_m=5_000.0)
    for radius in (0.0, -1.0, math.nan, math.inf, "ten"):
        with pytest.raises(CoordinateError, match="radius_m"):
            BBox.from_center(lat=0.0, lon=0.0, radius_m=radius)  # type: ignore[arg-type]
    with pytest.raises(CoordinateError, match="lat=91"):
        BBox.from_center(lat=91.0, lon=0.0, radius_m=10.0)
    with pytest.raises(TypeError):
        BBox.from_center(10.0, 20.0, 30.0)  # type: ignore[misc]


# ---- queries -------------------------------------------------------------------------------------------------


def test_center_is_named_lat_lon() -> None:
    center = BBox(10.0, 40.0, 12.0, 41.0).center
    assert center.lat == 40.5 and center.lon == 11.0
    lat, lon = center
    assert (lat, lon) == (40.5, 11.0)


def test_contains_scalar_and_vectorised_with_closed_edges() -> None:
    box = BBox(10.0, 40.0, 12.0, 41.0)
    assert box.contains(lat=40.5, lon=11.0) is True
    assert box.contains(lat=39.0, lon=11.0) is False
    inside = box.contains(lat=np.array([40.0, 41.0, 40.5, 41.0001]), lon=np.array([10.0, 12.0, 9.9, 11.0]))
    assert inside.dtype == np.bool_
    assert inside.tolist() == [True, True, False, False]
    with pytest.raises(CoordinateError, match=r"lat=95\.0"):
        box.contains(lat=95.0, lon=11.0)
    with pytest.raises(TypeError):
        box.contains(40.5, 11.0)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        (BBox(11.0, 40.5, 13.0, 42.0), True),  # overlap
        (BBox(10.5, 40.2, 11.5, 40.8), True),  # inside
        (BBox(0.0, 0.0, 50.0, 80.0), True),  # contains
        (BBox(12.0, 40.0, 13.0, 41.0), True),  # shares the east edge
        (BBox(12.0001, 40.0, 13.0, 41.0), False),
        (BBox(10.0, 41.5, 12.0, 42.0), False),
        (BBox(-12.0, 40.0, -10.0, 41.0), False),
    ],
)
def test_intersects(other: BBox, expected: bool) -> None:
    box = BBox(10.0, 40.0, 12.0, 41.0)
    assert box.intersects(other) is expected
    assert other.intersects(box) is expected


@SETTINGS
@given(boxes(), boxes())
def test_intersects_matches_shared_point(a: BBox, b: BBox) -> None:
    """Closed boxes intersect iff the corner of the overlap region lies in both."""
    lat = max(a.south, b.south)
    lon = max(a.west, b.west)
    shared = bool(a.contains(lat=lat, lon=lon) and b.contains(lat=lat, lon=lon))
    assert a.intersects(b) is shared

"""Tests of crossview.geometry.frames: UTM/UPS frames, convergence, scale, headings and geodesics.

References are independent of the code under test: pyproj.Geod (Karney's geodesics) moves points on the
ellipsoid, UTM facts (zone layout, k0 = 0.9996, false easting/northing) come from the UTM definition, and
textbook series give the expected convergence and scale near zone edges.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import CRS, Geod

from crossview.errors import CoordinateError, CrossviewError
from crossview.geometry.frames import (
    LocalFrame,
    geodesic_destination,
    geodesic_distance_m,
    utm_epsg,
    validate_latlon,
    wrap_heading_deg,
)

GEOD = Geod(ellps="WGS84")
UTM_K0 = 0.9996
FALSE_NORTHING_SOUTH_M = 10_000_000.0
SETTINGS = settings(max_examples=100, deadline=None)


def grid_azimuth_deg(frame: LocalFrame, *, lat: float, lon: float, azimuth_deg: float) -> float:
    """Grid azimuth (clockwise from +y) of the geodesic leaving (lat, lon) at a true azimuth.

    Central difference over +/-1 m: the chord direction then matches the tangent to O(step^2).
    """
    lon_f, lat_f, _ = GEOD.fwd(lon, lat, azimuth_deg, 1.0)
    lon_b, lat_b, _ = GEOD.fwd(lon, lat, azimuth_deg + 180.0, 1.0)
    x_f, y_f = frame.to_xy(lat=lat_f, lon=lon_f)
    x_b, y_b = frame.to_xy(lat=lat_b, lon=lon_b)
    return math.degrees(math.atan2(x_f - x_b, y_f - y_b))


def angle_diff_deg(a: float, b: float) -> float:
    return (a - b + 180.0) % 360.0 - 180.0


def central_meridian_deg(epsg: int) -> float:
    return -183.0 + 6.0 * (epsg % 100)


# ---- conventions -----------------------------------------------------------------------------------------------


def test_convention_latlon_by_keyword() -> None:
    frame = LocalFrame.from_center(lat=48.0, lon=11.0)
    calls = [
        lambda: utm_epsg(48.0, 11.0),
        lambda: validate_latlon(48.0, 11.0),
        lambda: LocalFrame.from_center(48.0, 11.0),
        lambda: frame.to_xy(48.0, 11.0),
        lambda: frame.convergence_deg(48.0, 11.0),
        lambda: frame.scale_factor(48.0, 11.0),
        lambda: frame.true_to_grid_heading_deg(10.0, 48.0, 11.0),
        lambda: frame.grid_to_true_heading_deg(10.0, 48.0, 11.0),
        lambda: geodesic_distance_m(48.0, 11.0, 48.1, 11.0),
        lambda: geodesic_destination(48.0, 11.0, 0.0, 10.0),
    ]
    for call in calls:
        with pytest.raises(TypeError):
            call()


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(48.1, 11.6), (-33.9, 151.2), (60.0, 20.9), (-45.0, -68.5), (1.0, 0.5), (-1.0, 0.5)],
)
def test_convention_map_frame_x_east_y_north(lat: float, lon: float) -> None:
    frame = LocalFrame.from_center(lat=lat, lon=lon)
    x0, y0 = frame.to_xy(lat=lat, lon=lon)
    east = geodesic_destination(lat=lat, lon=lon, azimuth_deg=90.0, distance_m=100.0)
    north = geodesic_destination(lat=lat, lon=lon, azimuth_deg=0.0, distance_m=100.0)
    x_e, y_e = frame.to_xy(lat=east.lat, lon=east.lon)
    x_n, y_n = frame.to_xy(lat=north.lat, lon=north.lon)
    # East moves +x and north moves +y by ~100 m (scale ~1, convergence a few degrees at most).
    assert 99.0 < x_e - x0 < 101.0 and abs(y_e - y0) < 6.0
    assert 99.0 < y_n - y0 < 101.0 and abs(x_n - x0) < 6.0


@pytest.mark.parametrize(
    ("lat", "lon", "side"),
    [
        (48.0, 14.0, +1),  # zone 33 (CM 15E): west of the central meridian
        (48.0, 16.5, +1),  # east of it
        (60.0, 20.9, +1),  # near the east edge of zone 34 at 60N: convergence ~2.6 deg
        (-33.9, 151.2, -1),  # Sydney, zone 56 (CM 153E), west of the CM, southern hemisphere
        (-33.9, 155.5, -1),  # east of the CM, southern hemisphere
        (-70.0, 1.0, -1),
    ],
)
def test_convention_heading_true_vs_grid(lat: float, lon: float, side: int) -> None:
    frame = LocalFrame.from_center(lat=lat, lon=lon)
    convergence = frame.convergence_deg(lat=lat, lon=lon)
    # True north, followed on the ellipsoid, appears in the grid at azimuth -convergence.
    assert grid_azimuth_deg(frame, lat=lat, lon=lon, azimuth_deg=0.0) == pytest.approx(-convergence, abs=1e-6)
    # Sign: positive east of the central meridian in the north, negative there in the south.
    east_of_cm = lon > central_meridian_deg(frame.epsg)
    expected_sign = side * (1 if east_of_cm else -1)
    assert np.sign(convergence) == expected_sign
    # Any true heading maps to the grid direction actually travelled (UTM is conformal).
    for heading in (0.0, 33.0, 90.0, 200.0, 359.0):
        grid = frame.true_to_grid_heading_deg(heading, lat=lat, lon=lon)
        travelled = grid_azimuth_deg(frame, lat=lat, lon=lon, azimuth_deg=heading)
        assert angle_diff_deg(grid, travelled) == pytest.approx(0.0, abs=1e-6)
        assert frame.grid_to_true_heading_deg(grid, lat=lat, lon=lon) == pytest.approx(heading, abs=1e-9)


# ---- UTM zone selection ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "epsg"),
    [
        (45.0, 5.999999, 32631),  # zone 31 ends at 6E ...
        (45.0, 6.0, 32632),  # ... and zone 32 starts there
        (45.0, -180.0, 32601),
        (45.0, 180.0, 32660),  # the antimeridian belongs to zone 60
        (0.0, 0.0, 32631),  # the equator counts as northern
        (-0.000001, 0.0, 32731),
        (60.0, 4.0, 32632),  # Norway: band V, 3-12E uses zone 32
        (60.0, 2.9, 32631),
        (55.9, 4.0, 32631),  # band V starts at 56N
        (64.0, 4.0, 32631),  # and ends at 64N
        (78.0, 10.0, 32633),  # Svalbard: band X uses 31, 33, 35, 37
        (78.0, 8.9, 32631),
        (78.0, 21.0, 32635),
        (78.0, 33.0, 32637),
        (78.0, 42.0, 32638),  # back to the regular zone layout east of 42E
        (71.9, 10.0, 32632),  # band X starts at 72N
        (84.0, 10.0, 32633),  # UTM's northern limit is inclusive
        (-33.8688, 151.2093, 32756),  # Sydney
        (-80.0, 10.0, 32732),  # UTM's southern limit is inclusive
        (86.0, 10.0, 32661),  # beyond: UPS North
        (-85.0, 10.0, 32761),  # UPS South
    ],
)
def test_utm_epsg(lat: float, lon: float, epsg: int) -> None:
    assert utm_epsg(lat=lat, lon=lon) == epsg


def test_utm_epsg_names_match_pyproj() -> None:
    assert CRS.from_epsg(utm_epsg(lat=60.0, lon=4.0)).name == "WGS 84 / UTM zone 32N"
    assert CRS.from_epsg(utm_epsg(lat=-33.87, lon=151.21)).name == "WGS 84 / UTM zone 56S"
    assert "UPS North" in CRS.from_epsg(utm_epsg(lat=86.0, lon=0.0)).name
    assert "UPS South" in CRS.from_epsg(utm_epsg(lat=-85.0, lon=0.0)).name


def test_utm_epsg_rejects_arrays() -> None:
    with pytest.raises(CoordinateError):
        utm_epsg(lat=[1.0, 2.0], lon=3.0)


# ---- projection against UTM's definition -----------------------------------------------------------------------


@pytest.mark.parametrize("lat", [-33.8688, -60.0, 12.0, 45.0, 83.5])
def test_to_xy_on_central_meridian_is_scaled_meridian_arc(lat: float) -> None:
    """On the central meridian x = 500 km and y = k0 * (meridian arc from the equator) (+10,000 km south)."""
    lon = 153.0  # central meridian of zone 56
    frame = LocalFrame.from_center(lat=lat, lon=lon)
    x, y = frame.to_xy(lat=lat, lon=lon)
    arc_m = geodesic_distance_m(lat1=0.0, lon1=lon, lat2=lat, lon2=lon)
    expected_y = UTM_K0 * arc_m if lat >= 0 else FALSE_NORTHING_SOUTH_M - UTM_K0 * arc_m
    assert x == pytest.approx(500_000.0, abs=1e-6)
    assert y == pytest.approx(expected_y, abs=1e-3)


def test_sydney_southern_hemisphere_round_trip() -> None:
    lat, lon = -33.8688, 151.2093
    frame = LocalFrame.from_center(lat=lat, lon=lon)
    assert frame.epsg == 32756
    x, y = frame.to_xy(lat=lat, lon=lon)
    assert 6.24e6 < y < 6.26e6  # 10,000 km false northing minus ~3,750 km to the equator
    assert 300_000.0 < x < 500_000.0  # west of the central meridian (153E)
    back = frame.to_latlon(x, y)
    assert back.lat == pytest.approx(lat, abs=1e-9) and back.lon == pytest.approx(lon, abs=1e-9)


@pytest.mark.parametrize(("lat", "lon", "epsg"), [(86.0, 10.0, 32661), (89.5, -120.0, 32661), (-85.0, 10.0, 32761)])
def test_polar_frames_round_trip(lat: float, lon: float, epsg: int) -> None:
    frame = LocalFrame.from_center(lat=lat, lon=lon)
    assert frame.epsg == epsg
    x, y = frame.to_xy(lat=lat, lon=lon)
    back = frame.to_latlon(x, y)
    assert back.lat == pytest.approx(lat, abs=1e-9) and back.lon == pytest.approx(lon, abs=1e-9)
    # UPS: k0 = 0.994 at the pole, which sits at the 2,000 km false origin.
    pole = 90.0 if lat > 0 else -90.0
    assert frame.to_xy(lat=pole, lon=0.0) == pytest.approx((2_000_000.0, 2_000_000.0), abs=1e-6)
    assert frame.scale_factor(lat=pole - math.copysign(1e-4, pole), lon=0.0) == pytest.approx(0.994, abs=1e-6)
    assert frame.grid_to_true_heading_deg(
        frame.true_to_grid_heading_deg(123.0, lat=lat, lon=lon), lat=lat, lon=lon
    ) == pytest.approx(123.0, abs=1e-9)
    travelled = grid_azimuth_deg(frame, lat=lat, lon=lon, azimuth_deg=0.0)
    expected = -frame.convergence_deg(lat=lat, lon=lon)
    assert angle_diff_deg(travelled, expected) == pytest.approx(0.0, abs=1e-6)


@st.composite
def point_near_center(draw: st.DrawFn) -> tuple[float, float, float, float]:
    lat0 = draw(st.floats(-89.0, 89.0))
    lon0 = draw(st.floats(-180.0, 180.0))
    azimuth = draw(st.floats(0.0, 360.0))
    distance = draw(st.floats(0.0, 50_000.0))
    point = geodesic_destination(lat=lat0, lon=lon0, azimuth_deg=azimuth, distance_m=distance)
    return lat0, lon0, point.lat, point.lon


@SETTINGS
@given(point_near_center())
def test_round_trip_latlon_xy_latlon(case: tuple[float, float, float, float]) -> None:
    lat0, lon0, lat, lon = case
    frame = LocalFrame.from_center(lat=lat0, lon=lon0)
    x, y = frame.to_xy(lat=lat, lon=lon)
    back = frame.to_latlon(x, y)
    assert abs(back.lat - lat) < 1e-9
    # Longitude compared as arc on the ground (1e-9 deg of great circle): it is ill-defined at the pole.
    assert abs(angle_diff_deg(back.lon, lon)) * math.cos(math.radians(lat)) < 1e-9


def test_arrays_in_arrays_out_scalars_in_floats_out() -> None:
    frame = LocalFrame.from_center(lat=48.0, lon=11.0)
    lat = np.array([[48.0, 48.1], [48.2, 48.3]])
    x, y = frame.to_xy(lat=lat, lon=11.0)
    assert isinstance(x, np.ndarray) and x.shape == (2, 2) and x.dtype == np.float64
    back = frame.to_latlon(x, y)
    np.testing.assert_allclose(back.lat, lat, atol=1e-9)
    np.testing.assert_allclose(back.lon, 11.0, atol=1e-9)
    x0, y0 = frame.to_xy(lat=48.0, lon=11.0)
    assert type(x0) is float and type(y0) is float
    assert (x0, y0) == (float(x[0, 0]), float(y[0, 0]))
    assert type(frame.convergence_deg(lat=48.0, lon=11.0)) is float
    assert frame.scale_factor(lat=[48.0, 48.1], lon=11.0).shape == (2,)


# ---- convergence and scale factor ------------------------------------------------------------------------------


def test_convergence_near_zone_edge_at_60n() -> None:
    """At 60N, 3 deg from the central meridian, gamma ~ atan(tan(dlon) sin(lat)) ~ 2.6 deg."""
    frame = LocalFrame.from_crs("EPSG:32633")  # CM 15E
    for lon in (17.99, 12.01):
        dlon = math.radians(lon - 15.0)
        expected = math.degrees(math.atan(math.tan(dlon) * math.sin(math.radians(60.0))))
        convergence = frame.convergence_deg(lat=60.0, lon=lon)
        assert 2.0 < abs(convergence) < 3.0
        assert convergence == pytest.approx(expected, abs=1e-3)


def test_scale_factor_central_meridian_and_edge() -> None:
    frame = LocalFrame.from_crs(32633)
    # PROJ evaluates the factors by numerical differentiation: good to ~1e-10.
    assert frame.scale_factor(lat=45.0, lon=15.0) == pytest.approx(UTM_K0, abs=1e-9)
    assert frame.scale_factor(lat=0.0, lon=15.0) == pytest.approx(UTM_K0, abs=1e-9)
    # Spherical transverse Mercator: k = k0 / sqrt(1 - B^2), B = cos(lat) sin(dlon); ellipsoidal terms ~1e-5.
    for lat in (0.0, 30.0, 60.0):
        k = frame.scale_factor(lat=lat, lon=18.0)
        b = math.cos(math.radians(lat)) * math.sin(math.radians(3.0))
        assert k == pytest.approx(UTM_K0 / math.sqrt(1.0 - b * b), abs=2e-5)
    assert frame.scale_factor(lat=0.0, lon=18.0) > 1.0


def test_scale_factor_is_grid_over_ground_length() -> None:
    """k is the grid length of a short ground segment over its length, in every direction (conformal)."""
    frame = LocalFrame.from_crs(32633)
    lat, lon = 40.0, 17.5
    for azimuth in (0.0, 45.0, 90.0):
        start = geodesic_destination(lat=lat, lon=lon, azimuth_deg=azimuth + 180.0, distance_m=5.0)
        end = geodesic_destination(lat=lat, lon=lon, azimuth_deg=azimuth, distance_m=5.0)
        x0, y0 = frame.to_xy(lat=start.lat, lon=start.lon)
        x1, y1 = frame.to_xy(lat=end.lat, lon=end.lon)
        grid_over_ground = math.hypot(x1 - x0, y1 - y0) / 10.0
        assert grid_over_ground == pytest.approx(frame.scale_factor(lat=lat, lon=lon), abs=1e-9)


# ---- distances ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lat", "lon"), [(0.5, 17.9), (45.0, 15.1), (60.0, 17.9), (-35.0, 12.2)])
@pytest.mark.parametrize("azimuth", [0.0, 37.0, 90.0, 135.0])
def test_ground_distance_matches_geodesic(lat: float, lon: float, azimuth: float) -> None:
    frame = LocalFrame.from_crs(32633 if lat >= 0 else 32733)
    end = geodesic_destination(lat=lat, lon=lon, azimuth_deg=azimuth, distance_m=1000.0)
    x1, y1 = frame.to_xy(lat=lat, lon=lon)
    x2, y2 = frame.to_xy(lat=end.lat, lon=end.lon)
    geodesic = geodesic_distance_m(lat1=lat, lon1=lon, lat2=end.lat, lon2=end.lon)
    assert geodesic == pytest.approx(1000.0, abs=1e-8)
    assert abs(frame.ground_distance_m(x1, y1, x2, y2) - geodesic) < 1e-3


def test_grid_distance_alone_is_wrong_near_zone_edge() -> None:
    """Without dividing by k the error is ~1 m per km at the zone edge: the correction matters."""
    frame = LocalFrame.from_crs(32633)
    end = geodesic_destination(lat=0.5, lon=17.9, azimuth_deg=90.0, distance_m=1000.0)
    x1, y1 = frame.to_xy(lat=0.5, lon=17.9)
    x2, y2 = frame.to_xy(lat=end.lat, lon=end.lon)
    assert abs(math.hypot(x2 - x1, y2 - y1) - 1000.0) > 0.5
    assert abs(frame.ground_distance_m(x1, y1, x2, y2) - 1000.0) < 1e-3


def test_geodesic_helpers_match_pyproj_geod_vectorised() -> None:
    lat = np.array([10.0, -20.0, 50.0])
    lon = np.array([5.0, 100.0, -120.0])
    azimuth = np.array([0.0, 123.0, 270.0])
    distance = np.array([10.0, 5_000.0, 1e6])
    end = geodesic_destination(lat=lat, lon=lon, azimuth_deg=azimuth, distance_m=distance)
    ref_lon, ref_lat, _ = GEOD.fwd(lon, lat, azimuth, distance)
    np.testing.assert_allclose(end.lat, ref_lat, atol=1e-12)
    np.testing.assert_allclose(end.lon, ref_lon, atol=1e-12)
    np.testing.assert_allclose(
        geodesic_distance_m(lat1=lat, lon1=lon, lat2=end.lat, lon2=end.lon), distance, rtol=1e-10
    )
    # The first degree of latitude from the equator is 110.574 km long on WGS84 (a published value).
    assert geodesic_distance_m(lat1=0.0, lon1=0.0, lat2=1.0, lon2=0.0) == pytest.approx(110_574.0, abs=1.0)


# ---- headings -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "expected"),
    [(0.0, 0.0), (360.0, 0.0), (-90.0, 270.0), (725.0, 5.0), (-1e-15, 0.0), (-1e-300, 0.0), (359.5, 359.5)],
)
def test_wrap_heading_deg(heading: float, expected: float) -> None:
    wrapped = wrap_heading_deg(heading)
    assert type(wrapped) is float and 0.0 <= wrapped < 360.0
    assert wrapped == pytest.approx(expected, abs=1e-12)


@SETTINGS
@given(st.floats(-1e6, 1e6, allow_nan=False))
def test_wrap_heading_deg_range(heading: float) -> None:
    wrapped = wrap_heading_deg(np.array([heading]))[0]
    assert 0.0 <= wrapped < 360.0
    assert angle_diff_deg(wrapped, heading) == pytest.approx(0.0, abs=1e-9)


# ---- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "fragment"),
    [
        (91.0, 0.0, "lat=91.0"),
        (-90.5, 0.0, "lat=-90.5"),
        (0.0, 181.0, "lon=181.0"),
        (math.nan, 0.0, "lat=nan"),
        (0.0, math.inf, "lon=inf"),
        ([0.0, 95.0], 0.0, "lat=95.0 (at index (1,))"),
        ("north", 0.0, "lat='north'"),
    ],
)
def test_out_of_range_latlon_raises(lat: object, lon: object, fragment: str) -> None:
    frame = LocalFrame.from_center(lat=10.0, lon=10.0)
    for call in (
        lambda: validate_latlon(lat=lat, lon=lon),
        lambda: frame.to_xy(lat=lat, lon=lon),
        lambda: frame.convergence_deg(lat=lat, lon=lon),
        lambda: geodesic_distance_m(lat1=lat, lon1=lon, lat2=0.0, lon2=0.0),
    ):
        with pytest.raises(CoordinateError) as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, CrossviewError)
    with pytest.raises(CoordinateError) as info:
        validate_latlon(lat=lat, lon=lon)
    assert fragment in str(info.value)


def test_utm_epsg_rejects_bad_input() -> None:
    with pytest.raises(CoordinateError, match=r"lat=91\.0"):
        utm_epsg(lat=91.0, lon=0.0)
    with pytest.raises(CoordinateError, match="lon=nan"):
        utm_epsg(lat=0.0, lon=math.nan)


@pytest.mark.parametrize("crs_like", ["EPSG:4326", 4326, "+proj=longlat +datum=WGS84"])
def test_from_crs_rejects_geographic(crs_like: object) -> None:
    with pytest.raises(CoordinateError, match="not projected"):
        LocalFrame.from_crs(crs_like)


def test_from_crs_rejects_non_metric_and_garbage() -> None:
    with pytest.raises(CoordinateError, match="metres"):
        LocalFrame.from_crs("EPSG:2263")  # NAD83 / New York Long Island, US survey feet
    with pytest.raises(CoordinateError, match="not a valid CRS"):
        LocalFrame.from_crs("EPSG:not-a-code")


def test_from_crs_accepts_user_inputs() -> None:
    assert LocalFrame.from_crs("EPSG:32633").epsg == 32633
    assert LocalFrame.from_crs(32633) == LocalFrame.from_crs(CRS.from_epsg(32633))
    assert LocalFrame.from_crs("EPSG:3857").epsg == 3857
    assert "32633" in repr(LocalFrame.from_crs(32633))


def test_non_finite_map_coordinates_and_headings_raise() -> None:
    frame = LocalFrame.from_crs(32633)
    with pytest.raises(CoordinateError, match="x_m=nan"):
        frame.to_latlon(math.nan, 5e6)
    with pytest.raises(CoordinateError, match="heading_deg=inf"):
        frame.true_to_grid_heading_deg(math.inf, lat=45.0, lon=15.0)
    with pytest.raises(CoordinateError, match="heading_deg=nan"):
        wrap_heading_deg(math.nan)
    with pytest.raises(CoordinateError, match="distance_m=nan"):
        geodesic_destination(lat=0.0, lon=0.0, azimuth_deg=0.0, distance_m=math.nan)


def test_point_outside_projection_domain_raises() -> None:
    frame = LocalFrame.from_crs(32633)  # transverse Mercator: undefined 90 deg from the central meridian
    with pytest.raises(CoordinateError, match="outside the domain"):
        frame.to_xy(lat=0.0, lon=105.0)

"""Tests of crossview.geometry.webmercator: pixels, tiles and metres per pixel.

References: mercantile (tile bounds and listings), pyproj's EPSG:3857 (metres), pyproj.Geod (ground
distances on WGS84), DESIGN's VIGOR formula and the ellipsoid's radii of curvature (textbook geodesy).
"""

from __future__ import annotations

import math

import mercantile
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod, Transformer

from crossview.errors import CoordinateError
from crossview.geometry.bbox import BBox
from crossview.geometry.webmercator import (
    EARTH_EQUATOR_M,
    MAX_LATITUDE_DEG,
    count_tiles,
    latlon_to_pixel,
    meters_per_pixel,
    pixel_to_latlon,
    quadkey,
    tile_bounds,
    tile_bounds_mercator,
    tiles_for_bbox,
    zoom_for_gsd,
)

GEOD = Geod(ellps="WGS84")
WGS84_A_M = 6378137.0
WGS84_E2 = 0.00669437999014  # first eccentricity squared
VIGOR_ZOOM = 20
SETTINGS = settings(max_examples=100, deadline=None)

lats = st.floats(-MAX_LATITUDE_DEG, MAX_LATITUDE_DEG)
lons = st.floats(-180.0, 180.0)
zooms = st.integers(0, 22)


def vigor_mpp(lat: float) -> float:
    """DESIGN: metres per pixel of a zoom-20 VIGOR tile."""
    return 156543.03392 * math.cos(math.radians(lat)) / 2**20


# ---- conventions -----------------------------------------------------------------------------------------------


def test_convention_latlon_by_keyword() -> None:
    calls = [
        lambda: meters_per_pixel(40.0, 20),
        lambda: latlon_to_pixel(40.0, -74.0, 20),
        lambda: latlon_to_pixel(40.0, -74.0, zoom=20),
        lambda: pixel_to_latlon(1.0, 2.0, 20),
        lambda: zoom_for_gsd(0.3, 40.0),
    ]
    for call in calls:
        with pytest.raises(TypeError):
            call()


@pytest.mark.parametrize("lat", [0.0, 37.7749, 40.7128, 41.8781, 47.6062, -33.9])
def test_convention_webmercator_vigor_mpp(lat: float) -> None:
    mpp = meters_per_pixel(lat=lat, zoom=VIGOR_ZOOM)
    assert mpp == pytest.approx(vigor_mpp(lat), rel=1e-15)
    assert pytest.approx(EARTH_EQUATOR_M / 256.0, rel=1e-10) == 156543.03392
    # Ground metres per pixel measured through latlon_to_pixel: move 10 m north and 10 m east on WGS84.
    col0, row0 = latlon_to_pixel(lat=lat, lon=-74.0, zoom=VIGOR_ZOOM)
    lon_n, lat_n, _ = GEOD.fwd(-74.0, lat, 0.0, 10.0)
    lon_e, lat_e, _ = GEOD.fwd(-74.0, lat, 90.0, 10.0)
    _, row_n = latlon_to_pixel(lat=lat_n, lon=lon_n, zoom=VIGOR_ZOOM)
    col_e, _ = latlon_to_pixel(lat=lat_e, lon=lon_e, zoom=VIGOR_ZOOM)
    north_mpp = 10.0 / (row0 - row_n)  # rows grow southwards
    east_mpp = 10.0 / (col_e - col0)
    # The spherical formula is within e^2 = 0.67% of the ground scale on WGS84 (0.3% at VIGOR's US cities,
    # 37-48 N): Web Mercator is not conformal on the ellipsoid ...
    tolerance = 3e-3 if 37.0 <= lat <= 48.0 else 7e-3
    assert north_mpp == pytest.approx(mpp, rel=tolerance)
    assert east_mpp == pytest.approx(mpp, rel=tolerance)
    # ... and the remaining difference is exactly the ellipsoid's curvature: ground/pixel = mpp * M/a north,
    # mpp * N/a east (M, N: meridional and prime-vertical radii of curvature).
    w = 1.0 - WGS84_E2 * math.sin(math.radians(lat)) ** 2
    meridional_m = WGS84_A_M * (1.0 - WGS84_E2) / w**1.5
    prime_vertical_m = WGS84_A_M / math.sqrt(w)
    assert north_mpp == pytest.approx(mpp * meridional_m / WGS84_A_M, rel=1e-5)
    assert east_mpp == pytest.approx(mpp * prime_vertical_m / WGS84_A_M, rel=1e-5)


@pytest.mark.parametrize("zoom", [0, 1, 5, 12, 20])
def test_convention_pixel_edges(zoom: int) -> None:
    top_left = pixel_to_latlon(0.0, 0.0, zoom=zoom)
    assert top_left.lat == pytest.approx(MAX_LATITUDE_DEG, abs=1e-12) and top_left.lon == -180.0
    world_px = 256 * 2**zoom
    bottom_right = pixel_to_latlon(world_px, world_px, zoom=zoom)
    assert bottom_right.lat == pytest.approx(-MAX_LATITUDE_DEG, abs=1e-12) and bottom_right.lon == 180.0
    x, y = 2**zoom // 3, 2**zoom // 2
    ref = mercantile.bounds(x, y, zoom)
    box = tile_bounds(x, y, zoom)
    assert box.to_geojson_bbox() == [ref.west, ref.south, ref.east, ref.north]
    # Tile (x, y) spans pixels [256x, 256(x+1)) x [256y, 256(y+1)): its corners are those pixel edges.
    north_west = pixel_to_latlon(256 * x, 256 * y, zoom=zoom)
    south_east = pixel_to_latlon(256 * (x + 1), 256 * (y + 1), zoom=zoom)
    assert north_west.lat == pytest.approx(ref.north, abs=1e-9) and north_west.lon == pytest.approx(ref.west)
    assert south_east.lat == pytest.approx(ref.south, abs=1e-9) and south_east.lon == pytest.approx(ref.east)
    # A point inside the tile has pixel coordinates inside that span, and mercantile agrees on the tile.
    lat_in, lon_in = 0.3 * ref.north + 0.7 * ref.south, 0.8 * ref.west + 0.2 * ref.east
    col, row = latlon_to_pixel(lat=lat_in, lon=lon_in, zoom=zoom)
    assert (math.floor(col / 256), math.floor(row / 256)) == (x, y)
    assert tuple(mercantile.tile(lon_in, lat_in, zoom))[:2] == (x, y)


# ---- pixels ---------------------------------------------------------------------------------------------------


@SETTINGS
@given(lats, lons, zooms, st.sampled_from([256, 512]))
def test_round_trip_latlon_pixel_latlon(lat: float, lon: float, zoom: int, tile_size: int) -> None:
    col, row = latlon_to_pixel(lat=lat, lon=lon, zoom=zoom, tile_size=tile_size)
    world_px = tile_size * 2**zoom
    assert -1e-6 <= col <= world_px + 1e-6 and -1e-6 <= row <= world_px + 1e-6
    back = pixel_to_latlon(col, row, zoom=zoom, tile_size=tile_size)
    assert back.lat == pytest.approx(lat, abs=1e-9)
    assert back.lon == pytest.approx(lon, abs=1e-9)


@SETTINGS
@given(lats, lons, zooms)
def test_pixels_match_pyproj_epsg3857(lat: float, lon: float, zoom: int) -> None:
    """Pixel = (EPSG:3857 metres + half the world) / (metres per pixel at the equator), rows downwards."""
    x_m, y_m = Transformer.from_crs(4326, 3857, always_xy=True).transform(lon, lat)
    equator_mpp = EARTH_EQUATOR_M / (256 * 2**zoom)
    col, row = latlon_to_pixel(lat=lat, lon=lon, zoom=zoom)
    assert col == pytest.approx((x_m + EARTH_EQUATOR_M / 2) / equator_mpp, abs=1e-6)
    assert row == pytest.approx((EARTH_EQUATOR_M / 2 - y_m) / equator_mpp, abs=1e-6)


def test_pixels_vectorised_and_scalar_types() -> None:
    lat = np.array([[10.0, 20.0], [30.0, 40.0]])
    col, row = latlon_to_pixel(lat=lat, lon=5.0, zoom=10)
    assert isinstance(col, np.ndarray) and col.shape == (2, 2) and row.dtype == np.float64
    back = pixel_to_latlon(col, row, zoom=10)
    np.testing.assert_allclose(back.lat, lat, atol=1e-9)
    for i in range(2):
        for j in range(2):
            single = latlon_to_pixel(lat=float(lat[i, j]), lon=5.0, zoom=10)
            assert type(single.col_px) is float
            assert single == pytest.approx((col[i, j], row[i, j]), rel=1e-14)
    assert meters_per_pixel(lat=[0.0, 60.0], zoom=0) == pytest.approx([156543.03392, 156543.03392 / 2])


def test_tile_size_512_halves_metres_per_pixel() -> None:
    assert meters_per_pixel(lat=45.0, zoom=10, tile_size=512) == pytest.approx(
        meters_per_pixel(lat=45.0, zoom=10) / 2, rel=1e-15
    )
    col256, row256 = latlon_to_pixel(lat=45.0, lon=7.0, zoom=10)
    col512, row512 = latlon_to_pixel(lat=45.0, lon=7.0, zoom=10, tile_size=512)
    assert (col512, row512) == pytest.approx((2 * col256, 2 * row256), rel=1e-15)


# ---- tiles ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "y", "zoom"), [(0, 0, 0), (1, 0, 1), (301, 385, 10), (2**20 - 1, 12345, 20)])
def test_tile_bounds_match_mercantile(x: int, y: int, zoom: int) -> None:
    ref = mercantile.bounds(x, y, zoom)
    assert tile_bounds(x, y, zoom) == BBox(ref.west, ref.south, ref.east, ref.north)
    left, bottom, right, top = tile_bounds_mercator(x, y, zoom)
    size_m = EARTH_EQUATOR_M / 2**zoom
    assert left == pytest.approx(-EARTH_EQUATOR_M / 2 + x * size_m, abs=1e-6)
    assert top == pytest.approx(EARTH_EQUATOR_M / 2 - y * size_m, abs=1e-6)
    assert right - left == pytest.approx(size_m, abs=1e-6) and top - bottom == pytest.approx(size_m, abs=1e-6)
    to_3857 = Transformer.from_crs(4326, 3857, always_xy=True)
    west_m, north_m = to_3857.transform(ref.west, ref.north)
    assert (left, top) == pytest.approx((west_m, north_m), abs=1e-3)


def test_quadkey() -> None:
    assert quadkey(0, 0, 0) == ""
    assert quadkey(3, 5, 3) == "213"  # Bing Maps tile system documentation example
    assert quadkey(301, 385, 10) == mercantile.quadkey(301, 385, 10)


@pytest.mark.parametrize(
    ("x", "y", "zoom"), [(2, 0, 1), (0, -1, 3), (0, 0, -1), (1.5, 0, 2), (0, 0, 31), (0, 0, 2.0), (True, 0, 1)]
)
def test_invalid_tiles_raise(x: object, y: object, zoom: object) -> None:
    for function in (tile_bounds, tile_bounds_mercator, quadkey):
        with pytest.raises(CoordinateError):
            function(x, y, zoom)  # type: ignore[arg-type]


def test_tiles_for_bbox_small_area() -> None:
    box = BBox(-122.42, 37.77, -122.40, 37.79)
    tiles = tiles_for_bbox(box, 16)
    assert tiles == [tuple(t) for t in mercantile.tiles(-122.42, 37.77, -122.40, 37.79, zooms=[16])]
    assert all(isinstance(t, tuple) and len(t) == 3 and t[2] == 16 for t in tiles)
    # The tiles cover the box: each corner lies in one of them.
    for lat, lon in ((37.77, -122.42), (37.79, -122.40)):
        col, row = latlon_to_pixel(lat=lat, lon=lon, zoom=16)
        assert (int(col // 256), int(row // 256), 16) in tiles


def test_tile_listing_of_exact_tile_bounds_is_that_tile() -> None:
    box = tile_bounds(301, 385, 10)
    assert tiles_for_bbox(box, 10) == [(301, 385, 10)]
    assert count_tiles(box, 10) == 1
    assert count_tiles(box, 12) == 16


@st.composite
def small_boxes(draw: st.DrawFn) -> BBox:
    west = draw(st.floats(-180.0, 179.0))
    east = draw(st.floats(west, min(180.0, west + 120.0)).filter(lambda e: e > west))
    south = draw(st.floats(-90.0, 89.0))
    north = draw(st.floats(south, min(90.0, south + 80.0)).filter(lambda n: n > south))
    return BBox(west, south, east, north)


@SETTINGS
@given(small_boxes(), st.integers(0, 6))
def test_count_tiles_equals_listing(box: BBox, zoom: int) -> None:
    if box.south >= MAX_LATITUDE_DEG or box.north <= -MAX_LATITUDE_DEG:
        with pytest.raises(CoordinateError, match=r"85\.0511"):
            count_tiles(box, zoom)
        return
    assert count_tiles(box, zoom) == len(tiles_for_bbox(box, zoom))


@SETTINGS
@given(st.integers(1, 6), st.data())
def test_count_tiles_equals_listing_on_tile_aligned_boxes(zoom: int, data: st.DataObject) -> None:
    """Boxes whose edges are tile edges: the case where off-by-one errors would show."""
    last = 2**zoom - 1
    x0 = data.draw(st.integers(0, last))
    x1 = data.draw(st.integers(x0, last))
    y0 = data.draw(st.integers(0, last))
    y1 = data.draw(st.integers(y0, last))
    north_west, south_east = tile_bounds(x0, y0, zoom), tile_bounds(x1, y1, zoom)
    box = BBox(north_west.west, south_east.south, south_east.east, north_west.north)
    assert count_tiles(box, zoom) == (x1 - x0 + 1) * (y1 - y0 + 1)
    for z in (zoom - 1, zoom, zoom + 1):
        assert count_tiles(box, z) == len(tiles_for_bbox(box, z))


def test_count_tiles_huge_request_is_arithmetic() -> None:
    world = BBox(-180.0, -90.0, 180.0, 90.0)
    assert count_tiles(world, 22) == 4**22  # instant, no listing
    assert count_tiles(world, 3) == len(tiles_for_bbox(world, 3)) == 64


def test_tiles_beyond_mercator_raise() -> None:
    polar = BBox(0.0, 86.0, 10.0, 89.0)
    for function in (tiles_for_bbox, count_tiles):
        with pytest.raises(CoordinateError, match=r"Web Mercator is limited to \+/-85\.0511 deg"):
            function(polar, 5)


# ---- zoom selection -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lat", [0.0, 40.7, -60.0])
@pytest.mark.parametrize("gsd_m", [0.05, 0.3, 0.6, 1.0, 10.0, 1000.0])
def test_zoom_for_gsd_picks_coarsest_sufficient_zoom(lat: float, gsd_m: float) -> None:
    zoom = zoom_for_gsd(gsd_m, lat=lat)
    mpp = [156543.03392 * math.cos(math.radians(lat)) / 2**z for z in range(23)]
    expected = next((z for z in range(23) if mpp[z] <= gsd_m), 22)
    assert zoom == expected
    if zoom < 22:
        assert mpp[zoom] <= gsd_m
    if zoom > 0:
        assert mpp[zoom - 1] > gsd_m


def test_zoom_for_gsd_edges_and_clamping() -> None:
    exact = meters_per_pixel(lat=45.0, zoom=17)
    assert zoom_for_gsd(exact, lat=45.0) == 17  # equal counts as fine enough
    assert zoom_for_gsd(exact * 0.999999, lat=45.0) == 18
    assert zoom_for_gsd(1e-6, lat=45.0) == 22  # finer than any zoom: clamped to max_zoom
    assert zoom_for_gsd(1e-6, lat=45.0, max_zoom=19) == 19
    assert zoom_for_gsd(1e9, lat=45.0) == 0
    assert zoom_for_gsd(0.3, lat=45.0, tile_size=512) == zoom_for_gsd(0.3, lat=45.0) - 1
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(CoordinateError, match="gsd_m"):
            zoom_for_gsd(bad, lat=45.0)


# ---- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lat", [86.0, -85.06, 91.0, math.nan])
def test_latitudes_beyond_web_mercator_raise(lat: float) -> None:
    calls = [
        lambda: latlon_to_pixel(lat=lat, lon=0.0, zoom=3),
        lambda: meters_per_pixel(lat=lat, zoom=3),
        lambda: zoom_for_gsd(1.0, lat=lat),
    ]
    for call in calls:
        with pytest.raises(CoordinateError) as info:
            call()
        assert isinstance(info.value, ValueError)
        if math.isfinite(lat):
            assert "Web Mercator is limited to +/-85.0511 deg" in str(info.value)


def test_pixels_outside_world_raise() -> None:
    with pytest.raises(CoordinateError, match="Web Mercator is limited"):
        pixel_to_latlon(10.0, -1.0, zoom=0)
    with pytest.raises(CoordinateError, match="Web Mercator is limited"):
        pixel_to_latlon(10.0, 257.0, zoom=0)
    with pytest.raises(CoordinateError, match="col_px"):
        pixel_to_latlon(-0.5, 10.0, zoom=0)
    with pytest.raises(CoordinateError, match="lon"):
        latlon_to_pixel(lat=0.0, lon=181.0, zoom=0)
    with pytest.raises(CoordinateError, match="zoom"):
        latlon_to_pixel(lat=0.0, lon=0.0, zoom=-1)
    with pytest.raises(CoordinateError, match="tile_size"):
        meters_per_pixel(lat=0.0, zoom=1, tile_size=0)

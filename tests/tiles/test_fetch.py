"""fetch_tiles / mosaic_tiles / fetch_xyz through a real local tile server and a real on-disk cache."""

from __future__ import annotations

import datetime
import io
import math
import random
from collections.abc import Iterator
from pathlib import Path

import mercantile
import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pyproj import Transformer
from tileserver import Fault, TileServer, generated_tile, serve_tiles, tile_alpha, tile_rgb

from crossview.errors import ConfigError, ImageReadError
from crossview.geometry.bbox import BBox
from crossview.maps.raster import MapError
from crossview.tiles.cache import TileCache
from crossview.tiles.client import TileClient, TileFetchError
from crossview.tiles.fetch import (
    check_tile_budget,
    fetch_tiles,
    fetch_xyz,
    mosaic_tiles,
    plan_tiles,
    zoom_for_request,
)
from crossview.tiles.sources import resolve_source

EQUATOR_M = 2 * math.pi * 6378137.0
TO_MERCATOR = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
TO_LONLAT = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)

# Real robosat z18 tiles (512 px): 69108/105091 lies directly north of 69108/105092.
REAL_TILES = [(69108, 105091, 18), (69108, 105092, 18)]
# A box inside those two tiles, straddling their common edge (lat 33.57343808...).
REAL_BBOX = BBox(-85.09450, 33.57300, -85.09340, 33.57450)


@pytest.fixture
def server() -> Iterator[TileServer]:
    with serve_tiles() as running:
        yield running


@pytest.fixture
def real_server(realdata: Path) -> Iterator[TileServer]:
    with serve_tiles(real_tiles_dir=realdata / "tiles" / "robosat_jpg") as running:
        yield running


def quiet_client(**kwargs) -> TileClient:
    """A client for tests: no real sleeping, no rate limit, no proxies from the environment."""
    options = {
        "sleep": lambda seconds: None,
        "rng": random.Random(0),
        "rate_limit_per_s": None,
        "timeout_s": 2.0,
        "max_attempts": 3,
        "trust_env": False,
    }
    return TileClient(**{**options, **kwargs})


def decoded_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def xy_bounds_of(tiles: list[tuple[int, int, int]]) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in EPSG:3857 of a set of tiles, from mercantile."""
    boxes = [mercantile.xy_bounds(*tile) for tile in tiles]
    return (
        min(b.left for b in boxes),
        min(b.bottom for b in boxes),
        max(b.right for b in boxes),
        max(b.top for b in boxes),
    )


GRID = [(x, y, 3) for y in (1, 2) for x in (2, 3)]  # 2 x 2 tiles at zoom 3


# ---- planning ----------------------------------------------------------------------------------------------


def test_plan_tiles_matches_mercantile() -> None:
    bbox = BBox(-122.31, 37.80, -122.29, 37.82)
    planned = plan_tiles(bbox, 15)
    assert sorted(planned) == sorted(tuple(t) for t in mercantile.tiles(*bbox.to_geojson_bbox(), zooms=[15]))
    assert planned == sorted(planned, key=lambda tile: (tile[1], tile[0]))  # north to south, west to east
    assert check_tile_budget(bbox, 15) == len(planned)


def test_tile_budget_refuses_before_any_request(server: TileServer, tmp_path: Path) -> None:
    bbox = BBox(-10.0, -10.0, 10.0, 10.0)
    zoom = 12
    n = 2**zoom

    def row(lat: float) -> int:  # slippy-map tile row of a latitude (OSM wiki formula)
        lat_rad = math.radians(lat)
        return math.floor((1 - math.asinh(math.tan(lat_rad)) / math.pi) / 2 * n)

    expected = (math.floor(10 / 360 * n + n / 2) - math.floor(-10 / 360 * n + n / 2) + 1) * (row(-10) - row(10) + 1)
    with pytest.raises(ConfigError) as info:
        fetch_xyz(server.template(), bbox, zoom=zoom, cache_dir=str(tmp_path), max_tiles=1000, client=quiet_client())
    message = str(info.value)
    assert str(expected) in message and "1000" in message and "zoom" in message and "smaller area" in message
    assert server.total == 0
    assert not any(tmp_path.iterdir())


def test_tile_budget_of_a_huge_request_is_instant() -> None:
    with pytest.raises(ConfigError, match="more than --max-tiles"):
        check_tile_budget(BBox(-180.0, -85.0, 180.0, 85.0), 22)  # ~10^13 tiles: counted, never listed


@pytest.mark.parametrize("max_tiles", [0, -5, 2.5, True])
def test_tile_budget_must_be_a_positive_integer(max_tiles: object) -> None:
    with pytest.raises(ConfigError, match="max-tiles"):
        check_tile_budget(BBox(0.0, 0.0, 1.0, 1.0), 5, max_tiles)  # type: ignore[arg-type]


def test_zoom_for_request_against_the_metres_per_pixel_formula() -> None:
    bbox = BBox(-122.31, 37.80, -122.29, 37.82)
    lat = bbox.center.lat
    osm = resolve_source("OpenStreetMap.Mapnik")  # 256 px, max zoom 19

    def expected(gsd_m: float, tile_size: int, max_zoom: int) -> int:
        for zoom in range(max_zoom + 1):
            if 156543.03392 * math.cos(math.radians(lat)) / 2**zoom * 256 / tile_size <= gsd_m:
                return zoom
        return max_zoom

    for gsd_m in (0.3, 0.5, 1.0, 10.0, 1000.0):
        assert zoom_for_request(osm, bbox, gsd_m) == expected(gsd_m, 256, 19)
    retina = resolve_source("https://t.test/{z}/{x}/{y}.png", tile_size=512)
    assert zoom_for_request(retina, bbox, 0.5) == expected(0.5, 512, 22) == expected(0.5, 256, 22) - 1
    assert zoom_for_request(osm, bbox, 0.01) == 19  # clamped to the source's max zoom


# ---- fetching ----------------------------------------------------------------------------------------------


def test_cache_reuse_across_two_runs(server: TileServer, tmp_path: Path) -> None:
    source = resolve_source(server.template())
    cache = TileCache(tmp_path, source.slug)
    with quiet_client() as client:
        first = fetch_tiles(source, GRID, cache=cache, client=client, workers=4)
    assert server.total == len(GRID)
    assert all(cache.find(*tile) is not None for tile in GRID)
    with quiet_client() as client:
        second = fetch_tiles(source, GRID, cache=TileCache(tmp_path, source.slug), client=client)
    assert server.total == len(GRID)  # second run: zero requests
    assert first == second == {tile: generated_tile(*tile) for tile in GRID}
    assert list(second) == GRID


def test_duplicates_are_fetched_once(server: TileServer, tmp_path: Path) -> None:
    source = resolve_source(server.template())
    with quiet_client() as client:
        result = fetch_tiles(source, [GRID[0], GRID[0], GRID[1]], cache=TileCache(tmp_path, "s"), client=client)
    assert list(result) == GRID[:2] and server.total == 2


def test_corrupt_cached_tile_is_refetched(server: TileServer, tmp_path: Path) -> None:
    source = resolve_source(server.template())
    cache = TileCache(tmp_path, source.slug)
    with quiet_client() as client:
        fetch_tiles(source, GRID, cache=cache, client=client)
        broken = cache.find(*GRID[1])
        broken.write_bytes(broken.read_bytes()[:100])
        again = fetch_tiles(source, GRID, cache=cache, client=client)
    assert server.total == len(GRID) + 1
    assert server.count(source.url(*GRID[1])) == 2
    assert again[GRID[1]] == generated_tile(*GRID[1])
    assert cache.get(*GRID[1]) == generated_tile(*GRID[1])


def test_offline_with_a_complete_cache_needs_no_server(tmp_path: Path) -> None:
    with serve_tiles() as server:
        source = resolve_source(server.template())
        with quiet_client() as client:
            online = fetch_tiles(source, GRID, cache=TileCache(tmp_path, source.slug), client=client)
    # The server is gone: offline reads must not try it.
    offline = fetch_tiles(source, GRID, cache=TileCache(tmp_path, source.slug), offline=True)
    assert offline == online


def test_offline_with_missing_tiles_names_them(server: TileServer, tmp_path: Path) -> None:
    source = resolve_source(server.template())
    cache = TileCache(tmp_path, source.slug)
    with quiet_client() as client:
        fetch_tiles(source, GRID, cache=cache, client=client)
    cache.find(3, 2, 3).unlink()
    with pytest.raises(TileFetchError) as info:
        fetch_tiles(source, GRID, cache=cache, offline=True)
    assert "3/3/2" in str(info.value) and "1 of 4" in str(info.value) and "offline" in str(info.value)
    assert server.total == len(GRID)


def test_offline_lists_the_first_ten_missing_tiles_and_the_count(tmp_path: Path) -> None:
    source = resolve_source("http://127.0.0.1:9/{z}/{x}/{y}.png")
    wanted = [(x, y, 4) for y in range(3) for x in range(5)]
    with pytest.raises(TileFetchError) as info:
        fetch_tiles(source, wanted, cache=TileCache(tmp_path, source.slug), offline=True)
    message = str(info.value)
    assert "15 of 15" in message and "and 5 more" in message
    assert sum(f"4/{x}/{y}" in message for x, y, _ in wanted) == 10


def test_failed_tiles_are_listed_and_the_others_cached(server: TileServer, tmp_path: Path) -> None:
    source = resolve_source(server.template())
    failing = GRID[2]
    server.add_fault(Fault("status", status=503, path_contains=f"/{failing[2]}/{failing[0]}/{failing[1]}."))
    cache = TileCache(tmp_path, source.slug)
    with quiet_client(max_attempts=2) as client, pytest.raises(TileFetchError) as info:
        fetch_tiles(source, GRID, cache=cache, client=client)
    assert source.url(*failing) in str(info.value) and "1 of 4" in str(info.value) and "503" in str(info.value)
    assert server.count(source.url(*failing)) == 2
    assert cache.find(*failing) is None
    assert all(cache.get(*tile) == generated_tile(*tile) for tile in GRID if tile != failing)


def test_many_failures_are_summarised(server: TileServer, tmp_path: Path) -> None:
    server.add_fault(Fault("status", status=500))
    source = resolve_source(server.template())
    wanted = [(x, y, 4) for y in range(3) for x in range(4)]
    with quiet_client(max_attempts=2) as client, pytest.raises(TileFetchError) as info:
        fetch_tiles(source, wanted, cache=TileCache(tmp_path, source.slug), client=client)
    assert "12 of 12" in str(info.value) and "and 2 more" in str(info.value)
    assert server.total == 24
    assert not any(tmp_path.rglob("*.png"))


def test_downloads_run_in_parallel_with_latency(server: TileServer, tmp_path: Path) -> None:
    server.add_fault(Fault("latency", seconds=0.05))
    source = resolve_source(server.template())
    wanted = [(x, 0, 3) for x in range(8)]
    with quiet_client(workers=4) as client:
        result = fetch_tiles(source, wanted, cache=TileCache(tmp_path, source.slug), client=client, workers=4)
    assert len(result) == 8 and server.total == 8
    assert 2 <= server.max_in_flight <= 4


def test_fetch_retries_through_faults_then_succeeds(server: TileServer, tmp_path: Path) -> None:
    server.add_fault(Fault("status", count=1, status=429, retry_after="1"))
    server.add_fault(Fault("truncate", count=2, path_contains="/3/2/"))
    source = resolve_source(server.template())
    with quiet_client(max_attempts=4) as client:
        result = fetch_tiles(source, GRID, cache=TileCache(tmp_path, source.slug), client=client)
    assert result == {tile: generated_tile(*tile) for tile in GRID}


def test_without_a_cache_nothing_is_written(server: TileServer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = resolve_source(server.template())
    with quiet_client() as client:
        fetch_tiles(source, GRID[:1], cache=None, client=client)
    assert not any(tmp_path.iterdir())


# ---- mosaics -----------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_mosaic_of_real_robosat_tiles_is_pixel_exact(real_server: TileServer, realdata: Path, tmp_path: Path) -> None:
    source = resolve_source(real_server.real_template(), tile_size=512)
    with quiet_client() as client:
        tiles_bytes = fetch_tiles(source, REAL_TILES, cache=TileCache(tmp_path, source.slug), client=client)
    mosaic = mosaic_tiles(source, tiles_bytes, 18)
    files = [realdata / "tiles" / "robosat_jpg" / "18" / str(x) / f"{y}.jpg" for x, y, _ in REAL_TILES]
    north, south = (np.asarray(Image.open(file).convert("RGB")) for file in files)
    assert mosaic.array.shape == (3, 1024, 512) and mosaic.array.dtype == np.uint8
    np.testing.assert_array_equal(mosaic.array[:, :512].transpose(1, 2, 0), north)
    np.testing.assert_array_equal(mosaic.array[:, 512:].transpose(1, 2, 0), south)
    assert mosaic.valid is None
    assert tuple(mosaic.bounds()) == pytest.approx(xy_bounds_of(REAL_TILES), abs=1e-6)
    assert mosaic.res == pytest.approx((EQUATOR_M / (512 * 2**18),) * 2, rel=1e-12)
    assert mosaic.tags["tile_size"] == "512" and mosaic.tags["zoom"] == "18"


@pytest.mark.realdata
def test_fetch_xyz_crops_real_tiles_on_whole_pixels(real_server: TileServer, tmp_path: Path) -> None:
    source = resolve_source(real_server.real_template(), tile_size=512)
    assert plan_tiles(REAL_BBOX, 18) == REAL_TILES
    with quiet_client() as client:
        raster = fetch_xyz(source, REAL_BBOX, zoom=18, cache_dir=str(tmp_path), client=client)
        mosaic = mosaic_tiles(source, fetch_tiles(source, REAL_TILES, cache=TileCache(tmp_path, source.slug)), 18)
    assert real_server.total == 2  # the second fetch came from the cache
    left, bottom, right, top = raster.bounds()
    res, _ = raster.res
    (west_m, east_m), (south_m, north_m) = TO_MERCATOR.transform(
        [REAL_BBOX.west, REAL_BBOX.east], [REAL_BBOX.south, REAL_BBOX.north]
    )
    tol = 1e-6
    assert left - tol <= west_m < left + res and right - res < east_m <= right + tol
    assert bottom - tol <= south_m < bottom + res and top - res < north_m <= top + tol
    col0 = (left - mosaic.transform.c) / res
    row0 = (mosaic.transform.f - top) / res
    assert col0 == pytest.approx(round(col0), abs=1e-6) and row0 == pytest.approx(round(row0), abs=1e-6)
    col0, row0 = round(col0), round(row0)
    expected = mosaic.array[:, row0 : row0 + raster.height, col0 : col0 + raster.width]
    np.testing.assert_array_equal(raster.array, expected)
    assert raster.tags["source"] == source.name and raster.tags["bbox"].startswith("-85.0945,")


def test_mosaic_of_generated_tiles_is_pixel_exact(server: TileServer, tmp_path: Path) -> None:
    source = resolve_source(server.template())
    with quiet_client() as client:
        mosaic = mosaic_tiles(source, fetch_tiles(source, GRID, cache=None, client=client), 3)
    top = np.concatenate([tile_rgb(2, 1, 3), tile_rgb(3, 1, 3)], axis=1)
    bottom = np.concatenate([tile_rgb(2, 2, 3), tile_rgb(3, 2, 3)], axis=1)
    np.testing.assert_array_equal(mosaic.array.transpose(1, 2, 0), np.concatenate([top, bottom], axis=0))
    assert tuple(mosaic.bounds()) == pytest.approx(xy_bounds_of(GRID), abs=1e-6)
    assert mosaic.band_names == ("red", "green", "blue") and mosaic.valid is None


@pytest.mark.parametrize("ext", ["jpg", "webp"])
def test_mosaic_keeps_decoded_pixels_of_other_formats(ext: str) -> None:
    source = resolve_source(f"https://t.test/{{z}}/{{x}}/{{y}}.{ext}")
    tiles_bytes = {tile: generated_tile(*tile, ext=ext) for tile in GRID}
    mosaic = mosaic_tiles(source, tiles_bytes, 3)
    np.testing.assert_array_equal(mosaic.array[:, 256:, :256].transpose(1, 2, 0), decoded_rgb(tiles_bytes[GRID[2]]))


def test_generated_512_pixel_tiles(tmp_path: Path) -> None:
    with serve_tiles(tile_size=512) as server:
        source = resolve_source(server.template(), tile_size=512)
        with quiet_client() as client:
            mosaic = mosaic_tiles(source, fetch_tiles(source, GRID[:2], cache=None, client=client), 3)
    assert mosaic.array.shape == (3, 512, 1024)
    np.testing.assert_array_equal(mosaic.array[:, :, 512:].transpose(1, 2, 0), tile_rgb(3, 1, 3, 512))
    assert mosaic.res[0] == pytest.approx(EQUATOR_M / (512 * 8), rel=1e-12)


def test_transparent_pixels_become_invalid() -> None:
    source = resolve_source("https://t.test/{z}/{x}/{y}.png")
    tiles_bytes = {tile: generated_tile(*tile, style="rgba") for tile in GRID}
    mosaic = mosaic_tiles(source, tiles_bytes, 3)
    opaque = tile_alpha() > 0
    np.testing.assert_array_equal(mosaic.valid, np.tile(opaque, (2, 2)))
    np.testing.assert_array_equal(mosaic.array[:, :256, :256].transpose(1, 2, 0)[opaque], tile_rgb(2, 1, 3)[opaque])


@pytest.mark.parametrize("style", ["p", "l"])
def test_palette_and_grey_tiles_become_rgb(style: str) -> None:
    source = resolve_source("https://t.test/{z}/{x}/{y}.png")
    tiles_bytes = {tile: generated_tile(*tile, style=style) for tile in GRID}
    mosaic = mosaic_tiles(source, tiles_bytes, 3)
    assert mosaic.count == 3 and mosaic.array.dtype == np.uint8
    np.testing.assert_array_equal(mosaic.array[:, :256, 256:].transpose(1, 2, 0), decoded_rgb(tiles_bytes[GRID[1]]))


def test_tiles_missing_from_the_rectangle_are_invalid() -> None:
    source = resolve_source("https://t.test/{z}/{x}/{y}.png")
    mosaic = mosaic_tiles(source, {(0, 0, 1): generated_tile(0, 0, 1), (1, 1, 1): generated_tile(1, 1, 1)}, 1)
    assert mosaic.array.shape == (3, 512, 512)
    assert mosaic.valid[:256, :256].all() and mosaic.valid[256:, 256:].all()
    assert not mosaic.valid[:256, 256:].any() and not mosaic.valid[256:, :256].any()


def test_mosaic_refuses_inconsistent_tiles() -> None:
    source = resolve_source("https://t.test/{z}/{x}/{y}.png")
    small = generated_tile(0, 0, 1)
    big = generated_tile(1, 0, 1, tile_size=512)
    with pytest.raises(MapError, match="same size"):
        mosaic_tiles(source, {(0, 0, 1): small, (1, 0, 1): big}, 1)
    with pytest.raises(MapError, match="zoom"):
        mosaic_tiles(source, {(0, 0, 1): small}, 2)
    with pytest.raises(MapError, match="no tiles"):
        mosaic_tiles(source, {}, 1)
    with pytest.raises(ImageReadError, match="1/0/0"):
        mosaic_tiles(source, {(0, 0, 1): b"not an image"}, 1)


def test_mosaic_tags() -> None:
    source = resolve_source("OpenStreetMap.Mapnik")
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    mosaic = mosaic_tiles(source, {(0, 0, 1): generated_tile(0, 0, 1)}, 1)
    assert mosaic.tags["source"] == "OpenStreetMap.Mapnik"
    assert mosaic.tags["attribution"] == source.attribution and mosaic.tags["zoom"] == "1"
    time = datetime.datetime.fromisoformat(mosaic.tags["time"])
    assert time.utcoffset() == datetime.timedelta(0)
    assert before <= time <= datetime.datetime.now(datetime.timezone.utc)


def test_convention_mosaic_is_native_north_up_web_mercator() -> None:
    source = resolve_source("https://t.test/{z}/{x}/{y}.png")
    mosaic = mosaic_tiles(source, {tile: generated_tile(*tile) for tile in GRID}, 3)
    t = mosaic.transform
    assert mosaic.crs.to_epsg() == 3857
    assert t.b == 0 and t.d == 0 and t.a > 0 and t.e == -t.a
    assert t.a == pytest.approx(EQUATOR_M / (256 * 2**3), rel=1e-12)
    north_west = mercantile.xy_bounds(2, 1, 3)
    assert (t.c, t.f) == pytest.approx((north_west.left, north_west.top), abs=1e-6)


@pytest.mark.parametrize(("row", "col"), [(0, 0), (17, 300), (511, 511), (255, 256)])
def test_convention_mosaic_pixel_centres_are_edge_based(row: int, col: int) -> None:
    source = resolve_source("https://t.test/{z}/{x}/{y}.png")
    mosaic = mosaic_tiles(source, {tile: generated_tile(*tile) for tile in GRID}, 3)
    x_m, y_m = mosaic.pixel_to_world(col + 0.5, row + 0.5)
    lon, lat = TO_LONLAT.transform(x_m, y_m)
    # Pixel (row, col) of a 256-px tile mosaic at zoom 3 is tile (2*256 + col, 1*256 + row) at zoom 3 + 8.
    pixel_tile = mercantile.bounds(2 * 256 + col, 1 * 256 + row, 3 + 8)
    x_ref, y_ref = TO_MERCATOR.transform([pixel_tile.west, pixel_tile.east], [pixel_tile.south, pixel_tile.north])
    assert x_m == pytest.approx(0.5 * (x_ref[0] + x_ref[1]), abs=1e-4)
    assert y_m == pytest.approx(0.5 * (y_ref[0] + y_ref[1]), abs=1e-4)
    assert mercantile.tile(lon, lat, 11) == mercantile.Tile(2 * 256 + col, 1 * 256 + row, 11)


# ---- fetch_xyz ---------------------------------------------------------------------------------------------


def test_fetch_xyz_end_to_end_and_geotiff(server: TileServer, tmp_path: Path) -> None:
    bbox = BBox(-40.0, 50.0, 10.0, 70.0)  # inside tiles (2..4, 1..2) at zoom 3
    with quiet_client() as client:
        raster = fetch_xyz(server.template(), bbox, zoom=3, cache_dir=str(tmp_path / "cache"), client=client)
    assert server.total == len(plan_tiles(bbox, 3))
    left, bottom, right, top = raster.bounds()
    (west_m, east_m), (south_m, north_m) = TO_MERCATOR.transform([-40.0, 10.0], [50.0, 70.0])
    res = raster.res[0]
    assert left <= west_m < left + res and right - res < east_m <= right
    assert bottom <= south_m < bottom + res and top - res < north_m <= top
    out = raster.write(tmp_path / "map.tif")
    with rasterio.open(out) as dataset:
        assert dataset.crs.to_epsg() == 3857 and dataset.count == 3
        assert tuple(dataset.bounds) == pytest.approx((left, bottom, right, top), abs=1e-6)
        assert dataset.tags()["source"] == server.template()


def test_fetch_xyz_refuses_zooms_the_source_does_not_serve(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"0\.\.19"):
        fetch_xyz("OpenStreetMap.Mapnik", BBox(0.0, 0.0, 0.001, 0.001), zoom=20, cache_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_fetch_xyz_offline_uses_the_cache_dir(server: TileServer, tmp_path: Path) -> None:
    bbox = BBox(-40.0, 50.0, 10.0, 70.0)
    with quiet_client() as client:
        online = fetch_xyz(server.template(), bbox, zoom=3, cache_dir=str(tmp_path), client=client)
    requests = server.total
    offline = fetch_xyz(server.template(), bbox, zoom=3, cache_dir=str(tmp_path), offline=True)
    np.testing.assert_array_equal(offline.array, online.array)
    assert offline.transform == online.transform and server.total == requests


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A cache holding the generated tiles of GRID for an (unreachable) template: fetch_xyz works offline."""
    template = "http://127.0.0.1:9/rgb/{z}/{x}/{y}.png"
    root = tmp_path_factory.mktemp("filled-cache")
    cache = TileCache(root, resolve_source(template).slug)
    for tile in GRID:
        cache.put(*tile, generated_tile(*tile))
    return template, root


@given(
    west=st.floats(-89.99, -0.01),
    south=st.floats(41.0, 78.0),
    width=st.floats(1e-4, 89.0),
    height=st.floats(1e-4, 1.0),
)
@settings(max_examples=60, deadline=None)
def test_crop_covers_the_box_with_less_than_a_pixel_to_spare(
    filled_cache: tuple[str, Path], west: float, south: float, width: float, height: float
) -> None:
    template, root = filled_cache  # GRID: lon -90..0, lat 40.98..79.17 (zoom 3)
    bbox = BBox(west, south, min(west + width, 0.0), min(south + height, 79.0))
    raster = fetch_xyz(template, bbox, zoom=3, cache_dir=str(root), offline=True)
    left, bottom, right, top = raster.bounds()
    res = raster.res[0]
    (west_m, east_m), (south_m, north_m) = TO_MERCATOR.transform([bbox.west, bbox.east], [bbox.south, bbox.north])
    tol = 1e-6 * res
    assert left - tol <= west_m < left + res + tol and right - res - tol < east_m <= right + tol
    assert bottom - tol <= south_m < bottom + res + tol and top - res - tol < north_m <= top + tol
    mosaic_x_m = mercantile.xy_bounds(2, 1, 3).left
    assert (left - mosaic_x_m) / res == pytest.approx(round((left - mosaic_x_m) / res), abs=1e-6)


def test_progress_is_silent_when_stderr_is_not_a_terminal(
    filled_cache: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    template, root = filled_cache
    source = resolve_source(template)
    fetch_tiles(source, GRID, cache=TileCache(root, source.slug), offline=True, progress=True)
    assert capsys.readouterr().err == ""

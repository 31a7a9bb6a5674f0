"""OpenStreetMap source and rasterizer: loading (XML, vector files, a local Overpass double), classes, widths."""

from __future__ import annotations

import importlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import geopandas as gpd
import mercantile
import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from osm_fixtures import DIAGONAL_LENGTH_M, GSD_M, SCENE_LAT, SCENE_LON, Scene
from PIL import Image

from crossview.errors import ConfigError
from crossview.geometry.bbox import BBox
from crossview.geometry.frames import LocalFrame
from crossview.maps.osm import (
    ATTRIBUTION,
    CLASS_NAMES,
    CLASS_PRIORITY,
    OSM_CLASSES,
    classify_features,
    load_osm_features,
    osm_grid,
    osm_map,
    overpass_query_tags,
    parse_width_m,
    rasterize_osm,
    read_classes,
    way_width_m,
)
from crossview.maps.raster import GeoRaster, MapError, MapReadError

AREAS, WAYS, NODES = 0, 1, 2
CLOSED = "http://127.0.0.1:9/api"  # nothing listens on the discard port: any request would fail at once
REALDATA_EXTRACTS = [
    "West-Oakland.osm.bz2",
    "planet_10.068,48.135_10.071,48.137.osm",
    "Laufamholzstrasse.osm.xml",
    "bautzen.osm",
    "berlin-siegessaeule.osm.gz",
    "monaco.osm.gz",  # about 2 s: 966 buildings on a 5041 x 6324 grid
]


def index_of(band: str, name: str) -> int:
    return CLASS_NAMES[band].index(name) + 1


# ---- the hand-made scene ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene()


@pytest.fixture(scope="module")
def scene_xml(scene, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("osm") / "scene.osm"
    path.write_text(scene.to_osm_xml(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def scene_raster(scene, scene_xml) -> GeoRaster:
    return osm_map(scene_xml, bounds=scene.bounds(), crs=scene.frame.crs, gsd_m=GSD_M)


def pixel_centres(raster: GeoRaster) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) frame coordinates of pixel centres, from the north-up grid formula (col + 0.5, row + 0.5)."""
    left, top, gsd = raster.transform.c, raster.transform.f, raster.transform.a
    cols, rows = np.meshgrid(np.arange(raster.width), np.arange(raster.height))
    return left + (cols + 0.5) * gsd, top - (rows + 0.5) * gsd


def local_centres(scene: Scene, raster: GeoRaster) -> tuple[np.ndarray, np.ndarray]:
    x_m, y_m = pixel_centres(raster)
    x0, y0 = scene.origin_m
    return x_m - x0, y_m - y0


def scale_factor(scene: Scene) -> float:
    return float(scene.frame.scale_factor(lat=SCENE_LAT, lon=SCENE_LON))


def inside_box(x, y, left, bottom, right, top) -> np.ndarray:
    return (x > left) & (x < right) & (y > bottom) & (y < top)


def test_scene_building_is_exactly_the_square(scene, scene_raster):
    x, y = local_centres(scene, scene_raster)
    expected = inside_box(x, y, 10, 10, 20, 20)
    assert expected.sum() == 400  # 10 m x 10 m at 0.5 m
    np.testing.assert_array_equal(scene_raster.array[AREAS] == index_of("areas", "building"), expected)


def test_scene_building_wins_over_the_park_around_it(scene, scene_raster):
    x, y = local_centres(scene, scene_raster)
    park = inside_box(x, y, 5, 5, 30, 30) & ~inside_box(x, y, 10, 10, 20, 20)
    np.testing.assert_array_equal(scene_raster.array[AREAS] == index_of("areas", "park"), park)
    assert set(np.unique(scene_raster.array[AREAS])) == {0, index_of("areas", "building"), index_of("areas", "park")}


def test_scene_roads_have_the_lane_width(scene, scene_raster):
    x, y = local_centres(scene, scene_raster)
    road = scene_raster.array[WAYS] == index_of("ways", "road")
    two_lanes = inside_box(x, y, 0, 40 - 3, 60, 40 + 3)  # 2 lanes x 3 m, flat caps at the ends
    four_lanes = inside_box(x, y, 0, 70 - 6, 60, 70 + 6)  # lanes=4 -> 12 m
    np.testing.assert_array_equal(road & (y < 55), two_lanes)
    np.testing.assert_array_equal(road & (y > 55) & (y < 90), four_lanes)
    assert two_lanes.sum() == 120 * 12 and four_lanes.sum() == 120 * 24


def test_scene_oblique_road_width_is_area_over_length(scene, scene_raster):
    _, y = local_centres(scene, scene_raster)
    road = (scene_raster.array[WAYS] == index_of("ways", "road")) & (y > 90)
    width_m = road.sum() * GSD_M**2 / DIAGONAL_LENGTH_M
    assert width_m == pytest.approx(6.0 * scale_factor(scene), rel=0.02)


def test_scene_fence_and_building_outline_are_one_metre_bands(scene, scene_raster):
    x, y = local_centres(scene, scene_raster)
    ways = scene_raster.array[WAYS]
    fence = inside_box(x, y, 0, -10.5, 40, -9.5)
    np.testing.assert_array_equal(ways == index_of("ways", "fence"), fence)
    ring = shapely.LinearRing([(10, 10), (20, 10), (20, 20), (10, 20)])
    distance = shapely.distance(shapely.points(x, y), ring)
    np.testing.assert_array_equal(ways == index_of("ways", "building_outline"), distance < 0.5)


def test_scene_tree_is_a_one_metre_disk_at_its_node(scene, scene_raster):
    x, y = local_centres(scene, scene_raster)
    distance = np.hypot(x - 40.0, y - 15.0)
    radius = 1.0 * scale_factor(scene)
    assert not np.any(np.abs(distance - radius) < 0.05)  # no pixel centre on the edge of the disk
    np.testing.assert_array_equal(scene_raster.array[NODES] == index_of("nodes", "tree"), distance < radius)
    assert (scene_raster.array[NODES] > 0).sum() == 12


def test_convention_map_raster_north_up_square_pixels(scene, scene_raster):
    t = scene_raster.transform
    assert (t.a, t.b, t.d, t.e) == (GSD_M, 0.0, 0.0, -GSD_M)
    left, _, _, top = scene.bounds()
    assert (t.c, t.f) == (left, top)
    rows = np.flatnonzero((scene_raster.array[WAYS] == index_of("ways", "road")).any(axis=1))
    fence_rows = np.flatnonzero((scene_raster.array[WAYS] == index_of("ways", "fence")).any(axis=1))
    assert fence_rows.min() > rows.max()  # the fence is south of the roads: further down the image


def test_convention_pixel_centre_sampling(scene):
    """Pixel (row i, col j) has its centre at (i + 0.5, j + 0.5) and takes a class when its centre is inside."""
    gsd_m = 0.4
    x0, y0 = scene.xy(40.0, 15.0)
    transform = Affine(gsd_m, 0.0, x0 - 20.5 * gsd_m, 0.0, -gsd_m, y0 + 20.5 * gsd_m)  # node: centre of (20, 20)
    tree = gpd.GeoDataFrame({"natural": ["tree"]}, geometry=[shapely.Point(x0, y0)], crs=scene.frame.crs)
    raster = rasterize_osm(tree, crs=scene.frame.crs, transform=transform, width=41, height=41)
    rows, cols = np.nonzero(raster.array[NODES])
    assert (rows.mean(), cols.mean()) == (20.0, 20.0)
    i, j = np.meshgrid(np.arange(41), np.arange(41), indexing="ij")
    distance_m = np.hypot((j + 0.5) * gsd_m - 20.5 * gsd_m, (i + 0.5) * gsd_m - 20.5 * gsd_m)
    np.testing.assert_array_equal(raster.array[NODES] > 0, distance_m < 1.0)
    assert len(rows) == 21  # lattice points within 2.5 pixels: 1 + 4 + 4 + 4 + 8


def test_convention_geojson_is_lon_lat(scene, tmp_path):
    lat, lon = scene.latlon(13)
    document = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"natural": "tree"},
                "geometry": {"type": "Point", "coordinates": [lon, lat]},
            }
        ],
    }
    path = tmp_path / "tree.geojson"
    path.write_text(json.dumps(document), encoding="utf-8")
    features = load_osm_features(path)
    assert features.crs.to_epsg() == 4326
    assert (features.geometry.iloc[0].x, features.geometry.iloc[0].y) == pytest.approx((lon, lat))


def test_tags_record_source_attribution_time_and_legend(scene_xml, scene_raster):
    tags = scene_raster.tags
    assert tags["attribution"] == "© OpenStreetMap contributors, ODbL 1.0" == ATTRIBUTION
    assert tags["source"] == str(scene_xml)
    assert tags["time"].endswith("+00:00")
    assert json.loads(tags["CLASSES"]) == {band: list(names) for band, names in OSM_CLASSES.items()}
    assert scene_raster.band_names == ("areas", "ways", "nodes")
    assert scene_raster.array.dtype == np.uint8


def test_classes_tag_round_trips_through_geotiff(scene_raster, tmp_path):
    path = scene_raster.write(tmp_path / "osm.tif")
    back = GeoRaster.read(path)
    legend = read_classes(back)
    assert legend == {band: list(OSM_CLASSES[band]) for band in ("areas", "ways", "nodes")}
    assert legend["areas"][0] == "building" and "tree" in legend["nodes"]
    assert back.band_names == ("areas", "ways", "nodes")
    np.testing.assert_array_equal(back.array, scene_raster.array)


def test_read_classes_rejects_rasters_without_a_legend(scene_raster):
    bare = GeoRaster(array=scene_raster.array, crs=scene_raster.crs, transform=scene_raster.transform)
    with pytest.raises(MapError, match="CLASSES"):
        read_classes(bare)
    broken = GeoRaster(bare.array, bare.crs, bare.transform, tags={"CLASSES": "{not json"})
    with pytest.raises(MapError, match="JSON"):
        read_classes(broken)


@pytest.mark.parametrize(("driver", "suffix"), [("GeoJSON", ".geojson"), ("GPKG", ".gpkg")])
def test_vector_files_rasterize_like_the_xml(scene, scene_xml, scene_raster, tmp_path, driver, suffix):
    features = load_osm_features(scene_xml)
    path = tmp_path / f"scene{suffix}"
    features.to_file(path, driver=driver)
    raster = osm_map(path, bounds=scene.bounds(), crs=scene.frame.crs, gsd_m=GSD_M)
    np.testing.assert_array_equal(raster.array, scene_raster.array)
    assert raster.tags["source"] == str(path)


# ---- classes, widths, priority ------------------------------------------------------------------------------------


def test_priority_lists_are_permutations_of_the_classes():
    for band, names in CLASS_NAMES.items():
        assert sorted(CLASS_PRIORITY[band]) == sorted(names)
    assert CLASS_PRIORITY["areas"][0] == "building"


def test_classify_features_follows_the_tags_and_the_geometry():
    square = shapely.box(0, 0, 10, 10)
    line = shapely.LineString([(0, 0), (10, 0)])
    point = shapely.Point(0, 0)
    rows = [
        ({"building": "house"}, square, ("building", "building_outline", None)),
        ({"building": "no", "leisure": "park"}, square, ("park", None, None)),
        ({"natural": "wood"}, square, ("forest", None, None)),
        ({"leisure": "park", "landuse": "grass"}, square, ("grass", None, None)),  # grass is above park
        ({"barrier": "wall;fence"}, line, (None, "wall", None)),  # ';' lists, wall above fence
        ({"highway": "footway"}, line, (None, "path", None)),
        ({"highway": "residential"}, line, (None, "road", None)),
        ({"highway": "busway"}, line, (None, "busway", None)),
        ({"natural": "tree_row"}, line, (None, "tree_row", None)),
        ({"highway": "street_lamp"}, point, (None, None, "lamp")),
        ({"highway": "crossing", "crossing": "zebra"}, point, (None, None, "crossing")),
        ({"amenity": "bench"}, point, (None, None, "bench")),
        ({"building": "yes"}, point, (None, None, None)),  # a node cannot be an area
        ({"natural": "tree"}, square, (None, None, None)),  # nor a polygon a node
        ({"shop": "bakery"}, point, (None, None, None)),
    ]
    columns = sorted({key for tags, _, _ in rows for key in tags})
    data = {key: [tags.get(key) for tags, _, _ in rows] for key in columns}
    features = gpd.GeoDataFrame(data, geometry=[geometry for _, geometry, _ in rows], crs="EPSG:32632")
    classes = classify_features(features)
    for row, (tags, _, expected) in enumerate(rows):
        got = tuple(
            CLASS_NAMES[band][classes[band].iloc[row] - 1] if classes[band].iloc[row] else None
            for band in ("areas", "ways", "nodes")
        )
        assert got == expected, tags


def test_overpass_query_asks_for_every_rule():
    query = overpass_query_tags()
    for classes in OSM_CLASSES.values():
        for rules in classes.values():
            for rule in rules:
                key, _, value = rule.partition("=")
                assert query[key] is True or value in query[key], rule


@pytest.mark.parametrize(
    ("class_name", "tags", "width_m"),
    [
        ("road", {"highway": "residential"}, 2 * 3.0),
        ("road", {"highway": "residential", "lanes": "4"}, 4 * 3.0),
        ("road", {"highway": "residential", "lanes": "4", "width": "9.5 m"}, 9.5),
        ("road", {"highway": "residential", "oneway": "yes"}, 3.0),
        ("road", {"highway": "motorway", "oneway": "yes"}, 2 * 3.0),
        ("road", {"highway": "service"}, 3.0),
        ("road", {"highway": "residential", "width": "wide"}, 6.0),  # unparseable: lanes rule
        ("path", {"highway": "footway", "width": "3,5"}, 3.5),
        ("path", {"highway": "footway"}, 2.0),
        ("fence", {"barrier": "fence", "width": "5"}, 1.0),  # barriers ignore width tags
    ],
)
def test_way_width_rule(class_name, tags, width_m):
    assert way_width_m(class_name, tags) == pytest.approx(width_m)


@settings(max_examples=60, deadline=None)
@given(
    metres=st.floats(min_value=0.1, max_value=99.0, allow_nan=False),
    unit=st.sampled_from(["", " m", "m", " ft", "'"]),
)
def test_parse_width_units(metres, unit):
    text = f"{metres:.3f}{unit}"
    factor = 0.3048 if unit.strip() in ("ft", "'") else 1.0
    assert parse_width_m(text) == pytest.approx(float(f"{metres:.3f}") * factor)


@settings(max_examples=100, deadline=None)
@given(
    left=st.floats(-1e6, 1e6),
    bottom=st.floats(-1e6, 1e6),
    width_m=st.floats(0.1, 5000),
    height_m=st.floats(0.1, 5000),
    gsd_m=st.floats(0.05, 10),
)
def test_grid_covers_bounds_with_gsd_pixels(left, bottom, width_m, height_m, gsd_m):
    right, top = left + width_m, bottom + height_m
    transform, width, height = osm_grid((left, bottom, right, top), gsd_m)
    x_end, y_end = transform @ (width, height)
    assert (transform.c, transform.f) == (left, top)
    assert x_end >= right - 1e-6 * gsd_m and x_end < right + gsd_m
    assert y_end <= bottom + 1e-6 * gsd_m and y_end > bottom - gsd_m


# ---- errors --------------------------------------------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "absent.osm"
    with pytest.raises(MapReadError, match=r"absent\.osm"):
        load_osm_features(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.osm", b"<osm version='0.6'><node id='1' lat='48.0' lon="),
        ("broken.osm.gz", b"this is not gzip data"),
        ("broken.osm.bz2", b"this is not bzip2 data"),
        ("broken.geojson", b'{"type": "FeatureCollection", "features": ['),
    ],
)
def test_unparseable_file_names_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MapReadError, match=name.replace(".", r"\.")):
        load_osm_features(path)


def test_unknown_suffix_is_a_config_error(tmp_path):
    path = tmp_path / "map.png"
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"map\.png"):
        load_osm_features(path)


def test_file_without_tagged_features_is_a_map_error(tmp_path):
    path = tmp_path / "empty.osm"
    path.write_text("<osm version='0.6'><node id='1' lat='48.0' lon='11.0'/></osm>", encoding="utf-8")
    with pytest.raises(MapError, match=r"no OSM features in .*empty\.osm"):
        load_osm_features(path)


def test_area_without_features_is_a_map_error(scene, scene_xml):
    with pytest.raises(MapError, match="no OSM features"):
        load_osm_features(scene_xml, bbox=BBox(12.0, 49.0, 12.01, 49.01))
    x0, y0 = scene.xy(-5000.0, -5000.0)
    with pytest.raises(MapError, match="no OSM features"):
        osm_map(scene_xml, bounds=(x0, y0, x0 + 100, y0 + 100), crs=scene.frame.crs, gsd_m=1.0)


def test_overpass_needs_a_bbox():
    with pytest.raises(ConfigError, match="bbox"):
        load_osm_features("osm")


def test_geographic_crs_is_rejected(scene_xml):
    features = load_osm_features(scene_xml)
    with pytest.raises(MapError, match=r"WGS 84|EPSG:4326"):
        rasterize_osm(features, crs="EPSG:4326", transform=Affine(1e-5, 0, 11, 0, -1e-5, 48), width=10, height=10)
    with pytest.raises(MapError, match=r"WGS 84|EPSG:4326"):  # refused before any download is tried
        osm_map("osm", bounds=(11.0, 48.0, 11.001, 48.001), crs="EPSG:4326", gsd_m=1e-5, overpass_endpoint=CLOSED)


# ---- Overpass through osmnx, against a local double ---------------------------------------------------------------


class _OverpassDouble(BaseHTTPRequestHandler):
    """Answers POST .../interpreter with the scene (or nothing / an error page), records every request."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.server.requests.append(("POST", self.path, body))
        if self.path == "/broken/interpreter":
            self._reply(500, b"<html>Internal Server Error</html>", "text/html")
            return
        reply = self.server.reply if self.path == "/api/interpreter" else {**self.server.reply, "elements": []}
        self._reply(200, json.dumps(reply).encode(), "application/json")

    def do_GET(self):
        self.server.requests.append(("GET", self.path, ""))
        self._reply(404, b"", "text/plain")

    def _reply(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def overpass(scene, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OverpassDouble)
    server.requests = []
    server.reply = scene.to_overpass_json()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def osmnx_settings_snapshot() -> dict:
    import osmnx

    return {name: repr(getattr(osmnx.settings, name)) for name in dir(osmnx.settings) if not name.startswith("_")}


def scene_bbox(scene: Scene) -> BBox:
    lats, lons = zip(*(scene.latlon(node) for node in (5, 7, 9, 12, 14, 17)), strict=True)
    return BBox(min(lons) - 1e-4, min(lats) - 1e-4, max(lons) + 1e-4, max(lats) + 1e-4)


def test_overpass_double_serves_features_and_cache(scene, scene_xml, overpass, tmp_path):
    endpoint = f"http://127.0.0.1:{overpass.server_address[1]}/api"
    before, getaddrinfo = osmnx_settings_snapshot(), socket.getaddrinfo
    cache = tmp_path / "cache"
    features = load_osm_features("osm", bbox=scene_bbox(scene), overpass_endpoint=endpoint, cache_dir=cache)
    assert osmnx_settings_snapshot() == before
    assert socket.getaddrinfo is getaddrinfo
    assert [(method, path) for method, path, _ in overpass.requests] == [("POST", "/api/interpreter")]
    assert "out%3Ajson" in overpass.requests[0][2] and "building" in overpass.requests[0][2]
    expected = load_osm_features(scene_xml)
    assert sorted(features.index) == sorted(expected.index)
    for key in expected.index:
        assert shapely.equals_exact(features.geometry.loc[key], expected.geometry.loc[key], tolerance=1e-9)
    assert list(cache.glob("*.json"))  # the reply was cached ...
    again = load_osm_features("osm", bbox=scene_bbox(scene), overpass_endpoint=endpoint, cache_dir=cache)
    assert len(overpass.requests) == 1  # ... and the second call read it from the cache
    assert sorted(again.index) == sorted(features.index)
    assert osmnx_settings_snapshot() == before


def test_overpass_map_matches_the_xml_map(scene, scene_raster, overpass):
    endpoint = f"http://127.0.0.1:{overpass.server_address[1]}/api"
    raster = osm_map("osm", bounds=scene.bounds(), crs=scene.frame.crs, gsd_m=GSD_M, overpass_endpoint=endpoint)
    np.testing.assert_array_equal(raster.array, scene_raster.array)
    assert all(method == "POST" for method, _, _ in overpass.requests)


def test_overpass_errors_restore_settings(scene, overpass):
    port = overpass.server_address[1]
    before = osmnx_settings_snapshot()
    with pytest.raises(MapError, match="no OSM features"):
        load_osm_features("osm", bbox=scene_bbox(scene), overpass_endpoint=f"http://127.0.0.1:{port}/empty")
    with pytest.raises(MapReadError, match=r"127\.0\.0\.1"):
        load_osm_features("osm", bbox=scene_bbox(scene), overpass_endpoint=f"http://127.0.0.1:{port}/broken")
    assert osmnx_settings_snapshot() == before
    assert {method for method, _, _ in overpass.requests} == {"POST"}


def test_import_leaves_osmnx_settings_alone():
    """Importing crossview.maps.osm keeps osmnx's defaults (both modules' top levels are run again here)."""
    import osmnx

    import crossview.maps.osm as module

    current = {name: getattr(osmnx.settings, name) for name in dir(osmnx.settings) if not name.startswith("_")}
    try:
        importlib.reload(osmnx.settings)  # back to osmnx's own defaults
        defaults = osmnx_settings_snapshot()
        importlib.reload(module)
        assert osmnx_settings_snapshot() == defaults
    finally:
        for name, value in current.items():
            setattr(osmnx.settings, name, value)


# ---- real extracts ---------------------------------------------------------------------------------------------


def building_polygons(features: gpd.GeoDataFrame) -> gpd.GeoSeries:
    """Building polygons as OSM defines them (building=* except 'no'), independent of the classifier."""
    tagged = features["building"].notna() & (features["building"] != "no")
    polygonal = features.geom_type.isin(["Polygon", "MultiPolygon"])
    return features.geometry[tagged & polygonal]


@pytest.mark.realdata
@pytest.mark.parametrize("name", REALDATA_EXTRACTS)
def test_realdata_building_area_matches_polygons(realdata, name):
    features = load_osm_features(realdata / "osm" / name)
    west, south, east, north = features.total_bounds
    frame = LocalFrame.from_center(lat=(south + north) / 2, lon=(west + east) / 2)
    buildings = building_polygons(features.to_crs(frame.crs))
    assert len(buildings) >= 5
    bounds = tuple(buildings.total_bounds + np.array([-20.0, -20.0, 20.0, 20.0]))
    transform, width, height = osm_grid(bounds, 0.5)
    raster = rasterize_osm(features, crs=frame.crs, transform=transform, width=width, height=height)
    union = shapely.union_all(buildings.to_numpy()).intersection(shapely.box(*raster.bounds()))
    pixel_area = (raster.array[AREAS] == index_of("areas", "building")).sum() * 0.25
    assert pixel_area == pytest.approx(union.area, rel=0.03)
    assert read_classes(raster)["areas"][0] == "building"


@pytest.mark.realdata
def test_realdata_robosat_parking_masks(realdata):
    folder = realdata / "tiles" / "robosat_parking"
    features = gpd.read_file(folder / "features.geojson")
    features["amenity"] = "parking"  # robosat's extract keeps only the geometry of OSM amenity=parking polygons
    ious = []
    for line in (folder / "tiles.csv").read_text().split():
        x, y, z = (int(v) for v in line.split(","))
        label = np.array(Image.open(folder / "labels" / str(z) / str(x) / f"{y}.png")) == 1
        height, width = label.shape
        left, bottom, right, top = mercantile.xy_bounds(x, y, z)
        transform = Affine((right - left) / width, 0.0, left, 0.0, -(top - bottom) / height, top)
        raster = rasterize_osm(features, crs="EPSG:3857", transform=transform, width=width, height=height)
        mask = raster.array[AREAS] == index_of("areas", "parking")
        union = (mask | label).sum()
        if union == 0:
            continue  # a tile robosat left empty must stay empty
        ious.append((mask & label).sum() / union)
    assert len(ious) == 3
    assert min(ious) >= 0.95, ious


@pytest.mark.realdata
def test_realdata_residential_road_is_drawn_at_its_lane_width(realdata):
    features = load_osm_features(realdata / "osm" / "West-Oakland.osm.bz2")
    west, south, east, north = features.total_bounds
    lat, lon = (south + north) / 2, (west + east) / 2
    frame = LocalFrame.from_center(lat=lat, lon=lon)
    metric = features.to_crs(frame.crs)
    roads = metric[(metric["highway"] == "residential") & (metric.geom_type == "LineString")]
    longest = roads.iloc[[int(np.argmax(roads.length))]]  # drawn alone: no other way overlaps its pixels
    tags = longest.iloc[0]
    assert "width" not in longest or not isinstance(tags.get("width"), str)
    lanes = float(tags["lanes"]) if isinstance(tags.get("lanes"), str) else 2.0  # OSM default: two lanes
    expected_m = lanes * 3.0 * float(frame.scale_factor(lat=lat, lon=lon))
    transform, width, height = osm_grid(tuple(longest.total_bounds + np.array([-20, -20, 20, 20])), 0.5)
    raster = rasterize_osm(longest, crs=frame.crs, transform=transform, width=width, height=height)
    area_m2 = (raster.array[WAYS] == index_of("ways", "road")).sum() * 0.25
    assert longest.length.iloc[0] > 50
    assert area_m2 / longest.length.iloc[0] == pytest.approx(expected_m, rel=0.05)

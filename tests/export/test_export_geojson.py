"""Tests of crossview.export.geojson and formats: RFC 7946 output read back by GDAL (geopandas/pyogrio).

References: GDAL's GeoJSON driver (through geopandas.read_file) parses the files; shapely checks polygon
validity and ring orientation; pyproj.Geod measures distances and azimuths on the ellipsoid.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime

import geopandas
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod
from shapely.geometry import LinearRing, Point, shape

from crossview import __version__
from crossview.errors import ConfigError
from crossview.export import (
    CameraInfo,
    ErrorEllipse,
    ImageResult,
    Prior,
    ResultsError,
    ResultsReadError,
    confidence_scale,
    read_results,
    results_document,
    results_format,
    write_geojson,
    write_results,
)
from crossview.export.geojson import MIN_DRAWN_SEMI_AXIS_M
from crossview.export.shapes import DEFAULT_HEADING_LINE_M

GEOD = Geod(ellps="WGS84")


def ok_result(image: str, lat: float, lon: float, heading: float = 45.0, **overrides) -> ImageResult:
    fields = {
        "image": image,
        "status": "ok",
        "lat": lat,
        "lon": lon,
        "heading_deg": heading,
        "position_std_m": math.hypot(6.0, 2.0),
        "error_ellipse_m": ErrorEllipse(6.0, 2.0, 60.0),
        "heading_std_deg": 4.0,
        "score": 0.75,
        "prior": Prior("exif", 100.0, lat=lat, lon=lon),
        "camera": CameraInfo("pinhole", 65.0, 1.6),
        "model": "synth-v1",
        "map": "map.tif",
    }
    return ImageResult(**{**fields, **overrides})


RESULTS = [
    ok_result("photos/b.jpg", 60.3913211, 5.3221094, heading=350.0),  # Bergen: lat 60, lon 5 (lon < lat)
    ImageResult.failed("photos/broken.jpg", "cannot read image"),
    ok_result("photos/a.jpg", 60.3921177, 5.3201234, heading=90.0),
]


@pytest.fixture
def written(tmp_path):
    path = tmp_path / "results.geojson"
    write_geojson(RESULTS, path, meta={"settings": {"top_k": 5}}, ellipses=True)
    return path


def test_geopandas_reads_crs_points_and_properties(written):
    frame = geopandas.read_file(written)
    assert frame.crs.to_epsg() == 4326
    poses = frame[frame["kind"] == "pose"].reset_index(drop=True)
    assert list(poses["image"]) == [r.image for r in RESULTS]  # one feature per image, input order
    assert list(poses["status"]) == ["ok", "failed", "ok"]
    for row, result in zip(poses.itertuples(), RESULTS, strict=True):
        if result.ok:
            assert (row.geometry.x, row.geometry.y) == pytest.approx((result.lon, result.lat), abs=1e-9)
            assert row.heading_deg == pytest.approx(result.heading_deg)
            assert row.error_ellipse_m["semi_major"] == pytest.approx(6.0)
            assert row.camera["model"] == "pinhole" and row.prior["source"] == "exif"
        else:
            assert row.geometry is None
            assert row.error == "cannot read image"


def test_ellipse_polygons_are_valid_counter_clockwise_and_sized(written):
    frame = geopandas.read_file(written)
    ellipses = frame[frame["kind"] == "ellipse"]
    assert list(ellipses["image"]) == ["photos/b.jpg", "photos/a.jpg"]  # failed images have none
    scale = confidence_scale(0.95)
    for row in ellipses.itertuples():
        polygon = row.geometry
        assert polygon.geom_type == "Polygon" and polygon.is_valid
        assert LinearRing(polygon.exterior.coords).is_ccw
        assert row.confidence == 0.95 and row.sigma_scale == pytest.approx(2.4477, abs=1e-4)
        center = next(r for r in RESULTS if r.image == row.image)
        lons, lats = np.array(polygon.exterior.coords).T
        azimuths, _, distances = GEOD.inv(np.full(lons.shape, center.lon), np.full(lats.shape, center.lat), lons, lats)
        assert distances.max() == pytest.approx(6.0 * scale, rel=1e-3)  # the 95 % semi-major axis
        assert distances.min() == pytest.approx(2.0 * scale, rel=2e-3)
        tip = azimuths[np.argmax(distances)] % 180.0
        assert tip == pytest.approx(60.0, abs=0.5)  # major axis along its true azimuth


def test_convention_geojson_ring_counter_clockwise_closed(written):
    """RFC 7946 section 3.1.6: exterior rings are closed and follow the right-hand rule (counter-clockwise)."""
    document = json.loads(written.read_text())
    rings = [f["geometry"]["coordinates"][0] for f in document["features"] if f["properties"]["kind"] == "ellipse"]
    assert rings
    for ring in rings:
        assert ring[0] == ring[-1] and len(ring) >= 4
        lon, lat = np.array(ring).T
        signed_area = 0.5 * np.sum(lon[:-1] * lat[1:] - lon[1:] * lat[:-1])  # shoelace: > 0 anticlockwise
        assert signed_area > 0


def test_heading_lines_point_along_the_true_heading(written):
    frame = geopandas.read_file(written)
    lines = frame[frame["kind"] == "heading"]
    assert len(lines) == 2
    for row in lines.itertuples():
        (lon1, lat1), (lon2, lat2) = row.geometry.coords
        azimuth, _, distance = GEOD.inv(lon1, lat1, lon2, lat2)
        result = next(r for r in RESULTS if r.image == row.image)
        assert (lon1, lat1) == pytest.approx((result.lon, result.lat), abs=1e-9)
        assert distance == pytest.approx(DEFAULT_HEADING_LINE_M, abs=0.02)  # 7 decimals: about 1 cm
        assert (azimuth - result.heading_deg + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=0.1)
        assert row.length_m == DEFAULT_HEADING_LINE_M


def test_convention_geojson_lon_lat_order(tmp_path):
    """RFC 7946 section 3.1.1: positions are [longitude, latitude] (Bergen: lat 60.39, lon 5.32)."""
    path = tmp_path / "r.geojson"
    write_geojson([ok_result("x.jpg", 60.39, 5.32)], path, meta={})
    feature = json.loads(path.read_text())["features"][0]
    assert feature["geometry"] == {"type": "Point", "coordinates": [5.32, 60.39]}
    point = geopandas.read_file(path).geometry[0]
    assert (point.x, point.y) == (5.32, 60.39)  # GDAL agrees: x is the longitude


def test_convention_geojson_seven_decimals(tmp_path):
    path = tmp_path / "r.geojson"
    lat, lon = 48.858370123456, 2.294481987654
    write_geojson([ok_result("x.jpg", lat, lon)], path, meta={}, ellipses=True)
    text = path.read_text()
    found = re.findall(r'"coordinates": (\[[^"]*\])', text)
    assert len(found) == 3  # point, ellipse, heading line
    for coordinates in found:
        for value in re.findall(r"-?\d+\.\d+", coordinates):
            assert len(value.split(".")[1]) <= 7
    feature = json.loads(text)["features"][0]
    assert feature["geometry"]["coordinates"] == [round(lon, 7), round(lat, 7)] == [2.294482, 48.8583701]
    assert feature["properties"]["lat"] == round(lat, 7)


def test_bbox_member_covers_every_geometry(tmp_path):
    path = tmp_path / "points.geojson"
    write_geojson(RESULTS, path, meta={})
    document = json.loads(path.read_text())
    ok = [r for r in RESULTS if r.ok]
    assert document["bbox"] == [
        min(r.lon for r in ok),
        min(r.lat for r in ok),
        max(r.lon for r in ok),
        max(r.lat for r in ok),
    ]
    path2 = tmp_path / "shapes.geojson"
    write_geojson(RESULTS, path2, meta={}, ellipses=True)
    document = json.loads(path2.read_text())
    west, south, east, north = document["bbox"]
    for feature in document["features"]:
        if feature["geometry"] is not None:
            minx, miny, maxx, maxy = shape(feature["geometry"]).bounds
            assert west <= minx and south <= miny and maxx <= east and maxy <= north
    assert west < min(r.lon for r in ok)  # the ellipses reach beyond the points


def test_all_failed_has_no_bbox_and_null_geometries(tmp_path):
    path = tmp_path / "r.geojson"
    write_geojson([ImageResult.failed("a.jpg", "x")], path, meta={}, ellipses=True)
    document = json.loads(path.read_text())
    assert "bbox" not in document
    assert [f["geometry"] for f in document["features"]] == [None]
    empty = tmp_path / "empty.geojson"
    write_geojson([], empty, meta={})
    assert json.loads(empty.read_text())["features"] == []


def test_located_without_covariance_gets_a_heading_line_only():
    result = ok_result("x.jpg", 60.39, 5.32, error_ellipse_m=None, position_std_m=None)
    document = results_document([result], ellipses=True)
    assert [f["properties"]["kind"] for f in document["features"]] == ["pose", "heading"]


def test_crossview_member(written):
    member = json.loads(written.read_text())["crossview"]
    assert member["version"] == __version__
    assert member["settings"] == {"top_k": 5}
    assert datetime.fromisoformat(member["time"].replace("Z", "+00:00")).tzinfo is not None
    assert member["ellipses"]["confidence"] == 0.95
    kept = results_document([], meta={"version": "0.0.9", "time": "2020-01-01T00:00:00Z"})["crossview"]
    assert (kept["version"], kept["time"]) == ("0.0.9", "2020-01-01T00:00:00Z")  # a file read back keeps its own


def test_round_trip_through_read_results(written):
    results, meta = read_results(written)
    assert [r.to_dict() for r in results] == [r.to_dict() for r in RESULTS]
    assert meta["settings"] == {"top_k": 5}


@settings(max_examples=60, deadline=None)
@given(
    lat=st.floats(-80.0, 84.0),
    lon=st.floats(-179.9, 179.9),
    major=st.floats(0.0, 2000.0),
    ratio=st.floats(0.0, 1.0),
    azimuth=st.floats(0.0, 180.0, exclude_max=True),
)
def test_ellipse_polygons_stay_valid(lat, lon, major, ratio, azimuth):
    """Any ellipse, however small or thin, becomes a valid counter-clockwise polygon after rounding."""
    result = ok_result("x.jpg", lat, lon, error_ellipse_m=ErrorEllipse(major, major * ratio, azimuth))
    document = results_document([result], ellipses=True)
    ring = document["features"][1]["geometry"]["coordinates"][0]
    polygon = shapely.Polygon(ring)
    assert polygon.is_valid and LinearRing(ring).is_ccw and ring[0] == ring[-1]
    assert polygon.contains(Point(result.lon, result.lat))
    drawn = max(major * confidence_scale(0.95), MIN_DRAWN_SEMI_AXIS_M)
    _, _, distance = GEOD.inv(lon, lat, *ring[0])
    assert distance == pytest.approx(drawn, rel=1e-3, abs=0.02)


def test_write_is_atomic_and_leaves_old_file_on_error(tmp_path):
    path = tmp_path / "r.geojson"
    write_geojson(RESULTS, path, meta={})
    before = path.read_bytes()
    with pytest.raises(ResultsError, match="JSON"):
        write_geojson(RESULTS, path, meta={"settings": {"bad": float("nan")}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.geojson"]  # no temporary left behind


def test_write_results_picks_the_format(tmp_path):
    assert results_format("a.geojson") == results_format("a.JSON") == "geojson"
    assert results_format("a.csv") == "csv" and results_format("a.txt", "csv") == "csv"
    with pytest.raises(ConfigError, match="extension"):
        results_format("a.txt")
    with pytest.raises(ConfigError, match="geojson or csv"):
        results_format("a.csv", "kml")
    out = write_results(RESULTS, tmp_path / "r.json", meta={})
    assert json.loads(out.read_text())["type"] == "FeatureCollection"
    forced = write_results(RESULTS, tmp_path / "table.out", fmt="csv", meta={})
    assert forced.read_text().startswith("image,status,lat,lon")
    assert [r.image for r in read_results(forced)[0]] == [r.image for r in RESULTS]  # told by content


def test_reading_foreign_or_broken_files(tmp_path):
    foreign = tmp_path / "foreign.geojson"
    foreign.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(ResultsError, match="not a crossview results file"):
        read_results(foreign)
    point = tmp_path / "point.geojson"
    point.write_text(json.dumps({"type": "Point", "coordinates": [0, 0]}))
    with pytest.raises(ResultsError, match="not a GeoJSON FeatureCollection"):
        read_results(point)
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json")
    with pytest.raises(ResultsError, match="not JSON"):
        read_results(broken)
    with pytest.raises(ResultsReadError, match=re.escape("missing.geojson")) as info:
        read_results(tmp_path / "missing.geojson")
    assert isinstance(info.value, OSError)

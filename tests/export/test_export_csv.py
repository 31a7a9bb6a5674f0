"""Tests of crossview.export.csvfile: the flattened results table and its metadata sidecar.

The file is read back with the standard library's csv module and with GDAL's CSV driver (geopandas/pyogrio),
independently of the reader under test.
"""

from __future__ import annotations

import csv
import json

import geopandas
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossview.export import CSV_COLUMNS, CameraInfo, ErrorEllipse, ImageResult, Prior, ResultsError, read_results
from crossview.export.csvfile import meta_path, read_csv, write_csv

RESULTS = [
    ImageResult(
        image="Bergen/panorama/p, with comma.jpg",
        status="ok",
        lat=60.3913211,
        lon=5.3221094,
        heading_deg=271.5,
        position_std_m=3.2,
        error_ellipse_m=ErrorEllipse(3.0, 1.1, 12.5),
        heading_std_deg=1.25,
        score=0.912345,
        prior=Prior("cli", 150.0, lat=60.39, lon=5.32, heading_deg=270.0),
        camera=CameraInfo("panorama", 360.0, 2.4),
        model="synth-v1",
        map="map.tif",
    ),
    ImageResult.failed("Bergen/pinhole/q.jpg", 'no candidate above "min score"', camera=CameraInfo("pinhole", 70.0)),
]


def test_columns_are_documented_flat_names(tmp_path):
    path = write_csv(RESULTS, tmp_path / "r.csv", {})
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    expected = {
        "image", "status", "lat", "lon", "heading_deg", "position_std_m",
        "error_ellipse_semi_major_m", "error_ellipse_semi_minor_m", "error_ellipse_azimuth_deg",
        "heading_std_deg", "score", "prior_source", "prior_radius_m", "prior_lat", "prior_lon",
        "prior_heading_deg", "camera_model", "camera_hfov_deg", "camera_height_m", "model", "map", "error",
    }  # fmt: skip
    assert set(CSV_COLUMNS) == expected
    first, failed = rows
    assert first["image"] == "Bergen/panorama/p, with comma.jpg"  # quoted by the writer
    assert first["lat"] == "60.3913211" and first["lon"] == "5.3221094"
    assert first["error_ellipse_semi_major_m"] == "3.000" and first["error_ellipse_azimuth_deg"] == "12.500"
    assert first["prior_source"] == "cli" and first["camera_model"] == "panorama"
    assert failed["lat"] == "" and failed["error"] == 'no candidate above "min score"'


def test_round_trip_and_meta_sidecar(tmp_path):
    path = tmp_path / "r.csv"
    write_csv(RESULTS, path, {"settings": {"top_k": 3}})
    assert meta_path(path).name == "r.csv.meta.json"
    assert json.loads(meta_path(path).read_text())["settings"] == {"top_k": 3}
    results, meta = read_results(path)
    assert [r.to_dict() for r in results] == [r.to_dict() for r in RESULTS]
    assert meta["settings"] == {"top_k": 3} and "version" in meta and "time" in meta
    meta_path(path).unlink()
    assert read_csv(path)[1] == {}  # the table alone still reads


def test_gdal_reads_the_table(tmp_path):
    path = write_csv(RESULTS, tmp_path / "r.csv", {})
    frame = geopandas.read_file(path, X_POSSIBLE_NAMES="lon", Y_POSSIBLE_NAMES="lat")
    assert list(frame["image"]) == [r.image for r in RESULTS]
    assert frame.geometry[0].x == pytest.approx(RESULTS[0].lon) and frame.geometry[0].y == pytest.approx(60.3913211)


@settings(max_examples=60, deadline=None)
@given(
    lat=st.floats(-90.0, 90.0),
    lon=st.floats(-180.0, 180.0),
    heading=st.floats(0.0, 359.999),
    image=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),
    score=st.one_of(st.none(), st.floats(-1e3, 1e3)),
)
def test_hypothesis_round_trip(tmp_path_factory, lat, lon, heading, image, score):
    result = ImageResult(image=image, status="ok", lat=lat, lon=lon, heading_deg=heading, score=score)
    path = tmp_path_factory.mktemp("csv") / "r.csv"
    write_csv([result], path, {})
    (back,), _ = read_csv(path)
    assert back.to_dict() == result.to_dict()


def test_bad_tables(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("name,x,y\na,1,2\n", encoding="utf-8")
    with pytest.raises(ResultsError, match="not a crossview results CSV"):
        read_results(other)
    bad = tmp_path / "bad.csv"
    bad.write_text("image,status,lat,lon,heading_deg\na.jpg,ok,north,5,0\n", encoding="utf-8")
    with pytest.raises(ResultsError, match=r"line 2.*lat"):
        read_results(bad)

"""Tests of crossview.export.records: the result record, uncertainty from covariances, the JSONL sidecar.

References: ellipses are checked against numpy's eigen-decomposition (``np.linalg.eigh``), an algorithm
independent of the closed form under test; true north is found by walking the map grid and measuring the
geodesic azimuth with pyproj.Geod, independently of ``LocalFrame.convergence_deg``.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from crossview.errors import CrossviewError
from crossview.export.records import (
    RESULT_KEYS,
    CameraInfo,
    ErrorEllipse,
    ImageResult,
    Prior,
    ResultsError,
    ResultsReadError,
    append_jsonl,
    ellipse_from_covariance,
    pose_uncertainty,
    pose_uncertainty_in_frame,
    read_jsonl,
)
from crossview.geometry.frames import LocalFrame

GEOD = Geod(ellps="WGS84")
SETTINGS = settings(max_examples=100, deadline=None)


def covariance_with_major_axis(sigma_major: float, sigma_minor: float, azimuth_deg: float) -> np.ndarray:
    """(east, north) covariance whose major axis points along ``azimuth_deg`` (clockwise from +y)."""
    a = math.radians(azimuth_deg)
    major = np.array([math.sin(a), math.cos(a)])
    minor = np.array([math.cos(a), -math.sin(a)])
    return sigma_major**2 * np.outer(major, major) + sigma_minor**2 * np.outer(minor, minor)


def eigh_reference(cov: np.ndarray) -> tuple[float, float, float]:
    """(semi_major, semi_minor, grid azimuth in [0, 180)) from numpy's symmetric eigensolver."""
    values, vectors = np.linalg.eigh(cov)
    east, north = vectors[:, 1]  # eigenvalues ascending: the last column is the major axis
    return math.sqrt(values[1]), math.sqrt(max(values[0], 0.0)), math.degrees(math.atan2(east, north)) % 180.0


def axial_difference_deg(a: float, b: float) -> float:
    """Distance between two axis directions (defined modulo 180 degrees)."""
    d = (a - b) % 180.0
    return min(d, 180.0 - d)


def located(**overrides) -> ImageResult:
    fields = {
        "image": "/data/Bergen/panorama/p1.jpg",
        "status": "ok",
        "lat": 60.3912345,
        "lon": 5.3212345,
        "heading_deg": 123.456,
        "position_std_m": 2.5,
        "error_ellipse_m": ErrorEllipse(2.0, 1.5, 40.0),
        "heading_std_deg": 3.2,
        "score": 0.875,
        "prior": Prior("cli", 200.0, lat=60.39, lon=5.32),
        "camera": CameraInfo("panorama", 360.0, 2.5),
        "model": "synth-v1",
        "map": "map.tif",
    }
    return ImageResult(**{**fields, **overrides})


# ---- ellipse from covariance -------------------------------------------------------------------------------


def test_ellipse_of_diag_4_1_rotated_by_30_degrees():
    """diag(4, 1) with its major axis turned to azimuth 30: semi-axes 2 and 1, azimuth 30, as eigh says."""
    rotation = np.array([[math.cos(math.radians(60)), -math.sin(math.radians(60))],
                         [math.sin(math.radians(60)), math.cos(math.radians(60))]])  # fmt: skip
    cov = rotation @ np.diag([4.0, 1.0]) @ rotation.T  # x axis turned 60 deg anticlockwise: azimuth 90 - 60 = 30
    major, minor, azimuth = ellipse_from_covariance(cov)
    ref_major, ref_minor, ref_azimuth = eigh_reference(cov)
    assert (float(major), float(minor), float(azimuth)) == pytest.approx((ref_major, ref_minor, ref_azimuth))
    assert (float(major), float(minor), float(azimuth)) == pytest.approx((2.0, 1.0, 30.0))


@SETTINGS
@given(
    sigma_a=st.floats(0.01, 500.0),
    sigma_b=st.floats(0.01, 500.0),
    azimuth=st.floats(0.0, 360.0),
)
def test_ellipse_matches_eigendecomposition(sigma_a, sigma_b, azimuth):
    cov = covariance_with_major_axis(sigma_a, sigma_b, azimuth)
    major, minor, got_azimuth = (float(v) for v in ellipse_from_covariance(cov))
    ref_major, ref_minor, ref_azimuth = eigh_reference(cov)
    assert major == pytest.approx(ref_major, rel=1e-9)
    assert minor == pytest.approx(ref_minor, rel=1e-6, abs=1e-9 * ref_major)
    assert 0.0 <= got_azimuth < 180.0
    if ref_major - ref_minor > 1e-6 * ref_major:  # the axis direction is defined
        assert axial_difference_deg(got_azimuth, ref_azimuth) < 1e-5 * max(1.0, ref_major / (ref_major - ref_minor))


def test_ellipse_is_batched():
    covs = np.stack([covariance_with_major_axis(3.0, 1.0, a) for a in (0.0, 45.0, 100.0)]).reshape(3, 1, 2, 2)
    major, minor, azimuth = ellipse_from_covariance(covs, convergence_deg=np.array([[0.0], [1.0], [-2.0]]))
    assert major.shape == minor.shape == azimuth.shape == (3, 1)
    np.testing.assert_allclose(azimuth.ravel(), [0.0, 46.0, 98.0], atol=1e-9)
    np.testing.assert_allclose(major.ravel(), 3.0)


def test_circular_covariance_has_azimuth_zero():
    major, minor, azimuth = ellipse_from_covariance(np.eye(2) * 9.0, convergence_deg=2.0)
    assert (float(major), float(minor), float(azimuth)) == (3.0, 3.0, 0.0)


def test_scale_factor_turns_grid_metres_into_ground_metres():
    major, minor, _ = ellipse_from_covariance(np.diag([4.0, 1.0]), scale_factor=1.0008)
    assert float(major) == pytest.approx(2.0 / 1.0008) and float(minor) == pytest.approx(1.0 / 1.0008)


@pytest.mark.parametrize(
    ("cov", "message"),
    [
        (np.array([[1.0, 0.5], [0.4, 1.0]]), "not symmetric"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "not positive semi-definite"),
        (np.array([[-1.0, 0.0], [0.0, 1.0]]), "negative variances"),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), "non-finite"),
        (np.eye(3), "(..., 2, 2)"),
    ],
)
def test_bad_covariances_are_rejected(cov, message):
    with pytest.raises(ResultsError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        ellipse_from_covariance(cov)


def test_convention_ellipse_azimuth_is_clockwise_from_true_north_at_a_zone_edge():
    """A covariance stretched along GRID north, at 11.9 E in UTM 32 (central meridian 9 E, 60 N): its major
    axis points where walking grid north goes, which pyproj.Geod measures about 2.5 degrees east of true north."""
    lat, lon = 60.0, 11.9
    frame = LocalFrame.from_center(lat=lat, lon=lon)
    assert frame.epsg == 32632
    x, y = frame.to_xy(lat=lat, lon=lon)
    ahead = frame.to_latlon(x, y + 50.0)
    behind = frame.to_latlon(x, y - 50.0)
    true_azimuth_of_grid_north, _, _ = GEOD.inv(behind.lon, behind.lat, ahead.lon, ahead.lat)
    assert 2.0 < true_azimuth_of_grid_north < 3.0  # a real zone-edge offset: ignoring it would be visible
    uncertainty = pose_uncertainty_in_frame(np.diag([1.0, 25.0]), frame, lat=lat, lon=lon)
    assert uncertainty.error_ellipse_m.azimuth_deg == pytest.approx(true_azimuth_of_grid_north, abs=1e-4)
    # and grid east (x) is the same convergence away from true east
    across = pose_uncertainty_in_frame(np.diag([25.0, 1.0]), frame, lat=lat, lon=lon)
    assert across.error_ellipse_m.azimuth_deg == pytest.approx(90.0 + true_azimuth_of_grid_north, abs=1e-4)


def test_convergence_shifts_the_azimuth_west_of_the_central_meridian_too():
    """West of the central meridian (north) grid north lies west of true north: the azimuth wraps below 180."""
    lat, lon = 45.0, 6.1  # UTM 32 central meridian is 9 E
    frame = LocalFrame.from_center(lat=lat, lon=lon)
    x, y = frame.to_xy(lat=lat, lon=lon)
    ahead, behind = frame.to_latlon(x, y + 50.0), frame.to_latlon(x, y - 50.0)
    azimuth, _, _ = GEOD.inv(behind.lon, behind.lat, ahead.lon, ahead.lat)
    assert -3.0 < azimuth < -1.5
    got = pose_uncertainty_in_frame(np.diag([1.0, 25.0]), frame, lat=lat, lon=lon).error_ellipse_m.azimuth_deg
    assert got == pytest.approx(azimuth % 180.0, abs=1e-4)


def test_pose_uncertainty_from_a_3x3_covariance():
    cov = np.zeros((3, 3))
    cov[:2, :2] = covariance_with_major_axis(3.0, 4.0, 10.0)  # 4 is the major one: azimuth 100
    cov[2, 2] = math.radians(2.0) ** 2
    u = pose_uncertainty(cov)
    assert u.position_std_m == pytest.approx(5.0)  # DRMS sqrt(3^2 + 4^2)
    assert u.position_std_m == pytest.approx(math.sqrt(np.trace(cov[:2, :2])))
    assert u.heading_std_deg == pytest.approx(2.0)
    assert u.error_ellipse_m.semi_major_m == pytest.approx(4.0)
    assert u.error_ellipse_m.azimuth_deg == pytest.approx(100.0)
    with pytest.raises(ResultsError, match="heading_var_rad2"):
        pose_uncertainty(cov, heading_var_rad2=0.1)


def test_heading_std_is_unchanged_by_convergence():
    u = pose_uncertainty(np.eye(2), heading_var_rad2=0.01, convergence_deg=2.7)
    assert u.heading_std_deg == pytest.approx(math.degrees(0.1))
    assert pose_uncertainty(np.eye(2)).heading_std_deg is None


# ---- the record --------------------------------------------------------------------------------------------


def test_to_dict_has_design_keys_in_order():
    record = located().to_dict()
    assert tuple(record) == RESULT_KEYS
    assert set(RESULT_KEYS) >= {"image", "status", "lat", "lon", "heading_deg", "position_std_m", "error_ellipse_m"}
    assert set(record["error_ellipse_m"]) == {"semi_major", "semi_minor", "azimuth_deg"}
    assert record["prior"]["source"] == "cli" and record["prior"]["radius_m"] == 200.0
    assert record["camera"] == {"model": "panorama", "hfov_deg": 360.0, "height_m": 2.5}


def test_to_dict_rounds_and_wraps():
    record = located(lat=60.123456789, lon=-5.987654321, heading_deg=359.9996).to_dict()
    assert record["lat"] == 60.1234568 and record["lon"] == -5.9876543
    assert record["heading_deg"] == 0.0  # 359.9996 rounds to 360.000, which is 0 in [0, 360)


def test_failed_result():
    failed = ImageResult.failed("bad.jpg", "cannot read image", camera=CameraInfo("pinhole", 70.0, 1.6))
    record = failed.to_dict()
    assert record["status"] == "failed" and record["error"] == "cannot read image"
    assert record["lat"] is None and record["error_ellipse_m"] is None
    assert not failed.ok and located().ok


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"status": "done"}, "status"),
        ({"lat": None, "lon": None}, "needs lat"),
        ({"lat": 91.0}, "outside"),
        ({"lon": None}, "together"),
        ({"heading_deg": float("nan")}, "not finite"),
        ({"position_std_m": -1.0}, ">= 0"),
        ({"image": ""}, "non-empty"),
        ({"camera": "panorama"}, "CameraInfo"),
        ({"status": "failed"}, "error message"),
    ],
)
def test_invalid_records_raise(overrides, message):
    with pytest.raises(ResultsError, match=message) as info:
        located(**overrides)
    assert isinstance(info.value, CrossviewError) and isinstance(info.value, ValueError)


def test_nested_values_are_checked():
    with pytest.raises(ResultsError, match=re.escape("prior.source")):
        Prior("gps")
    with pytest.raises(ResultsError, match=re.escape("prior.lat")):
        Prior("exif", 50.0, lat=95.0, lon=0.0)
    with pytest.raises(ResultsError, match="exceeds"):
        ErrorEllipse(1.0, 2.0, 0.0)
    assert ErrorEllipse(2.0, 1.0, 190.0).azimuth_deg == pytest.approx(10.0)
    with pytest.raises(ResultsError, match=re.escape("camera.model")):
        CameraInfo("fisheye")


finite = st.floats(allow_nan=False, allow_infinity=False)


@SETTINGS
@given(
    lat=st.floats(-90.0, 90.0),
    lon=st.floats(-180.0, 180.0),
    heading=st.floats(0.0, 360.0, exclude_max=True),
    major=st.floats(0.0, 1e4),
    ratio=st.floats(0.0, 1.0),
    azimuth=st.floats(0.0, 180.0, exclude_max=True),
    score=st.one_of(st.none(), st.floats(-1e3, 1e3)),
    image=st.text(min_size=1, max_size=30),
)
def test_dict_round_trip(lat, lon, heading, major, ratio, azimuth, score, image):
    result = located(
        image=image,
        lat=lat,
        lon=lon,
        heading_deg=heading,
        error_ellipse_m=ErrorEllipse(major, major * ratio, azimuth),
        score=score,
    )
    record = result.to_dict()
    back = ImageResult.from_dict(json.loads(json.dumps(record)))
    assert back.to_dict() == record  # the serialised form is a fixed point
    assert back.lat == pytest.approx(lat, abs=5e-8) and back.lon == pytest.approx(lon, abs=5e-8)
    assert axial_difference_deg(back.heading_deg, heading) < 1e-3 and 0.0 <= back.heading_deg < 360.0
    assert back.error_ellipse_m.semi_major_m == pytest.approx(major, abs=5e-4)
    assert back.image == image


def test_from_dict_errors_and_unknown_keys():
    record = located().to_dict()
    assert ImageResult.from_dict({**record, "kind": "pose", "future": 1}) == ImageResult.from_dict(record)
    with pytest.raises(ResultsError, match="lacks 'status'"):
        ImageResult.from_dict({"image": "a.jpg"})
    with pytest.raises(ResultsError, match="not an object"):
        ImageResult.from_dict(["a.jpg", "ok"])
    with pytest.raises(ResultsError, match="semi_minor"):
        ImageResult.from_dict({**record, "error_ellipse_m": {"semi_major": 1.0}})


# ---- JSONL sidecar -----------------------------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "results.jsonl"
    results = [located(), ImageResult.failed("b.jpg", "no match"), located(image="c.jpg", heading_deg=5.0)]
    for result in results:
        append_jsonl(path, result)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(json.loads(line)["image"] for line in lines)  # one object per line
    assert [r.to_dict() for r in read_jsonl(path)] == [r.to_dict() for r in results]


def test_jsonl_ignores_and_repairs_a_line_cut_short(tmp_path):
    path = tmp_path / "results.jsonl"
    append_jsonl(path, located(image="a.jpg"))
    with open(path, "a", encoding="utf-8") as handle:  # a crash in the middle of the next append
        handle.write('{"image": "b.jpg", "sta')
    assert [r.image for r in read_jsonl(path)] == ["a.jpg"]
    append_jsonl(path, located(image="c.jpg"))  # resumes cleanly: the partial line is dropped first
    assert [r.image for r in read_jsonl(path)] == ["a.jpg", "c.jpg"]
    assert path.read_text(encoding="utf-8").count("\n") == 2


def test_jsonl_bad_complete_line_names_its_number(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(located().to_dict()) + "\nnot json\n", encoding="utf-8")
    with pytest.raises(ResultsError, match="line 2"):
        read_jsonl(path)
    with pytest.raises(ResultsReadError, match=re.escape("missing.jsonl")) as info:
        read_jsonl(tmp_path / "missing.jsonl")
    assert isinstance(info.value, OSError)

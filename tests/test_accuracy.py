"""Errors of located poses against the truth, and their summary."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyproj import Geod

from crossview.accuracy import PoseError, pose_errors, spearman, summarize
from crossview.export import CameraInfo, ImageResult


def test_spearman_is_the_pearson_correlation_of_ranks():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties share their mean rank: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4).
    expected = np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1]
    assert spearman([5, 5, 6, 7], [1, 2, 3, 4]) == pytest.approx(expected)
    assert math.isnan(spearman([1, math.nan, 2], [1, 2, 3]))  # fewer than 3 finite pairs


def test_pose_errors_and_summary(tmp_path):
    truth = tmp_path / "poses.csv"
    truth.write_text("image,lat,lon,heading_deg\npanorama/a.jpg,10.0,20.0,350\npinhole/b.jpg,10.0,20.001,10\n")
    camera = CameraInfo("panorama", 360.0, 2.0)
    results = [
        ImageResult("/x/panorama/a.jpg", "ok", lat=10.00001, lon=20.0, heading_deg=5.0, score=0.9, camera=camera),
        ImageResult.failed("/x/pinhole/b.jpg", "broken", camera=CameraInfo("pinhole", 90.0, 2.0)),
        ImageResult("/x/other.jpg", "ok", lat=0.0, lon=0.0, heading_deg=0.0),  # no truth: left out
    ]
    errors = pose_errors(results, truth)
    assert [e.image for e in errors] == ["/x/panorama/a.jpg", "/x/pinhole/b.jpg"]
    expected_m = Geod(ellps="WGS84").inv(20.0, 10.00001, 20.0, 10.0)[2]
    assert errors[0].position_m == pytest.approx(expected_m) and errors[0].heading_deg == pytest.approx(15.0)
    assert math.isnan(errors[1].position_m)
    summary = summarize(errors, within_m=5.0, seconds=4.0)
    assert summary["images"] == 2 and summary["located"] == 1 and summary["recall_5m"] == 0.5
    assert summary["median_position_error_m"] == pytest.approx(expected_m) and summary["images_per_s"] == 0.5


def test_summary_percentiles():
    errors = [PoseError(str(i), "panorama", float(i), float(i) / 10, 1.0 / (1 + i)) for i in range(1, 11)]
    summary = summarize(errors)
    assert summary["median_position_error_m"] == 5.5 and summary["p90_position_error_m"] == pytest.approx(9.1)
    assert summary["score_error_spearman"] == pytest.approx(-1.0)

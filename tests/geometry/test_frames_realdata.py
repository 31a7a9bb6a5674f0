"""Real photos: EXIF GPS -> our local metric frame, checked against OpenSfM's reconstruction of the same shots."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from crossview.geometry.frames import LocalFrame
from crossview.imagemeta import read_image_metadata

pytestmark = pytest.mark.realdata

SHOTS = ("01.jpg", "02.jpg", "03.jpg")


def test_berlin_pairwise_distances_match_opensfm_gps_positions(realdata):
    """OpenSfM's per-shot gps_position is the local ENU of the EXIF GPS: horizontal pair distances agree < 1 cm."""
    folder = realdata / "street" / "opensfm_berlin"
    reconstruction = json.loads((folder / "reconstruction_example.json").read_text())[0]
    metadata = {name: read_image_metadata(folder / "images" / name) for name in SHOTS}
    lats = np.array([metadata[name].lat for name in SHOTS])
    lons = np.array([metadata[name].lon for name in SHOTS])
    frame = LocalFrame.from_center(lat=float(lats.mean()), lon=float(lons.mean()))
    assert frame.epsg == 32633  # Berlin, 13.4 E: UTM zone 33 N
    x_m, y_m = frame.to_xy(lat=lats, lon=lons)
    for i, j in itertools.combinations(range(len(SHOTS)), 2):
        ours_m = frame.ground_distance_m(x_m[i], y_m[i], x_m[j], y_m[j])
        enu_i = np.array(reconstruction["shots"][SHOTS[i]]["gps_position"][:2])
        enu_j = np.array(reconstruction["shots"][SHOTS[j]]["gps_position"][:2])
        theirs_m = float(np.linalg.norm(enu_i - enu_j))
        assert theirs_m > 1.0  # the shots are metres apart: the comparison is not trivial
        assert abs(ours_m - theirs_m) < 0.01, (SHOTS[i], SHOTS[j], ours_m, theirs_m)

"""``crossview demo`` through the CLI entry point on a small town: every output is written and consistent."""

from __future__ import annotations

import json

import geopandas
import pytest
from PIL import Image

from crossview.cli import main as cli_main
from crossview.demo import format_summary

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_demo_writes_results_figure_and_summary(tmp_path, capsys):
    out = tmp_path / "demo-out"
    argv = ["demo", "--out", str(out), "--size-m", "120", "--panoramas", "6", "--workers", "0"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert format_summary(summary) in printed
    assert summary["all"]["images"] == 12 and summary["panorama"]["images"] == 6
    assert summary["all"]["located"] == 12 and summary["failed"] == 0
    # Every pose lies within its prior: 100 m around a point at most 50 m from the truth.
    assert summary["all"]["p90_position_error_m"] <= 150.0
    # The locate issue's targets for panoramas with a 100 m prior: median 2 m and 3 degrees (measured 0.3 m and
    # 0.8 degrees). Pinhole views are not asserted: three of these six land within 5 m, so their median (5.5 m) is
    # decided by a single view; the held-out town's 100 are measured in the README (1.9 m, 3.2 degrees).
    panoramas = summary["panorama"]
    assert panoramas["median_position_error_m"] <= 2.0 and panoramas["median_heading_error_deg"] <= 3.0, panoramas
    frame = geopandas.read_file(out / "results.geojson")
    assert (frame["kind"] == "pose").sum() == 12 and frame.crs.to_epsg() == 4326
    with Image.open(out / "figure.png") as figure:
        assert figure.width >= 400 and figure.height >= 300
    assert (out / "area.idx").is_file()

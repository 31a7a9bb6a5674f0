"""`crossview plot` end to end through the CLI entry point, plus its map geometry and truth matching.

References: pyproj.Geod walks true headings on the ellipsoid and pyproj transforms the result into the map CRS
(independent of the Jacobian the plot uses); Web Mercator's scale on the WGS84 ellipsoid comes from its
textbook formulas; Pillow decodes the figures.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from pyproj import Geod, Transformer

from crossview.cli import main
from crossview.data.synth.world import POSES_HEADER
from crossview.export import CameraInfo, ErrorEllipse, ImageResult, read_results, write_results
from crossview.export.records import ResultsError
from crossview.maps.raster import GeoRaster
from crossview.plot import ESTIMATE_COLOR, MapGeometry, TruthPose, match_truth, read_truth, render_figure

GEOD = Geod(ellps="WGS84")
WGS84_E2 = 0.00669437999014  # first eccentricity squared of WGS84
CENTER_LAT, CENTER_LON = 60.3913, 5.3221  # Bergen


def textured_map(crs: str, *, lat: float, lon: float, half_size: float, pixels: int = 240) -> GeoRaster:
    """A small RGB map centred on (lat, lon) in ``crs``: smooth colour gradients plus a checkerboard."""
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    gsd = 2 * half_size / pixels
    rows, cols = np.mgrid[0:pixels, 0:pixels]
    checker = ((rows // 20 + cols // 20) % 2) * 40
    rgb = np.stack([60 + cols * 0.5 + checker, 80 + rows * 0.5, 120 + checker], axis=0).clip(0, 255)
    transform = Affine(gsd, 0.0, x - half_size, 0.0, -gsd, y + half_size)
    return GeoRaster(array=rgb.astype(np.uint8), crs=crs, transform=transform)


def offset(lat: float, lon: float, azimuth_deg: float, distance_m: float) -> tuple[float, float]:
    lon2, lat2, _ = GEOD.fwd(lon, lat, azimuth_deg, distance_m)
    return lat2, lon2


@pytest.fixture
def town(tmp_path):
    """A town folder laid out like `crossview synth`'s (map.tif in EPSG:3857, poses.csv, panorama/ with VIGOR
    names), about 60 m of ground, and results of three of its images (one failed) with absolute image paths."""
    root = tmp_path / "Bergen"
    (root / "panorama").mkdir(parents=True)
    textured_map("EPSG:3857", lat=CENTER_LAT, lon=CENTER_LON, half_size=60.0).write(root / "map.tif")
    truth = [offset(CENTER_LAT, CENTER_LON, az, d) for az, d in ((300.0, 12.0), (100.0, 9.0), (200.0, 4.0))]
    names = ["panorama/p0,60.1,5.3,.jpg", "panorama/p1,60.1,5.3,.jpg", "panorama/p2,60.1,5.3,.jpg"]
    lines = [",".join(POSES_HEADER)]  # the layout `crossview synth` writes (checked, not copied)
    assert POSES_HEADER[:4] == ("image", "lat", "lon", "heading_deg")
    for name, (lat, lon), heading in zip(names, truth, (0, 90, 200), strict=True):
        lines.append(f'"{name}",{lat:.8f},{lon:.8f},{heading:.2f},panorama,360.00,2.50')
    (root / "poses.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = []
    for name, (lat, lon), heading in zip(names[:2], truth[:2], (10.0, 80.0), strict=True):
        est_lat, est_lon = offset(lat, lon, 45.0, 2.0)
        results.append(
            ImageResult(
                image=str(root / name),
                status="ok",
                lat=est_lat,
                lon=est_lon,
                heading_deg=heading,
                position_std_m=2.2,
                error_ellipse_m=ErrorEllipse(2.0, 1.0, 30.0),
                heading_std_deg=3.0,
                camera=CameraInfo("panorama", 360.0, 2.5),
            )
        )
    results.append(ImageResult.failed(str(root / names[2]), "no match"))
    write_results(results, tmp_path / "results.geojson", meta={})
    return root


def plot(tmp_path, town, *extra: str, out_name: str = "figure.png") -> tuple[int, object]:
    out = tmp_path / out_name
    argv = ["plot", str(tmp_path / "results.geojson"), "--map", str(town / "map.tif"), "--out", str(out), *extra]
    return main(argv), out


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def count_color(rgb: np.ndarray, hex_color: str, tolerance: int = 30) -> int:
    target = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb.astype(int) - target).max(axis=-1) <= tolerance).sum())


# ---- the command -------------------------------------------------------------------------------------------


def test_plot_writes_a_png_with_poses(tmp_path, town, capsys):
    code, out = plot(tmp_path, town, "--dpi", "80")
    assert code == 0
    rgb = pixels(out)
    assert rgb.shape[0] > 400 and rgb.shape[1] > 600  # 8 inches at 80 dpi
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 500  # the map shows through: not a blank canvas
    assert count_color(rgb, ESTIMATE_COLOR) > 50  # the estimates are drawn
    assert "2 of 3 images drawn" in capsys.readouterr().out


def test_plot_with_truth_adds_truth_and_error_lines(tmp_path, town, capsys):
    code, plain = plot(tmp_path, town, "--dpi", "80")
    code_truth, with_truth = plot(tmp_path, town, "--dpi", "80", "--truth", str(town / "poses.csv"), out_name="t.png")
    assert code == code_truth == 0
    rgb_plain, rgb_truth = pixels(plain), pixels(with_truth)
    assert count_color(rgb_truth, "#00bfff", 20) > 3 * max(count_color(rgb_plain, "#00bfff", 20), 10)
    out = capsys.readouterr().out
    match = re.search(r"2 matched to truth \(median error ([\d.]+) m\)", out)
    assert match and float(match.group(1)) == pytest.approx(2.0, abs=0.01)  # the estimates are 2 m off


def test_plot_reads_csv_results_and_writes_pdf(tmp_path, town):
    results_csv = tmp_path / "results.csv"
    located = ImageResult(image="x.jpg", status="ok", lat=CENTER_LAT, lon=CENTER_LON, heading_deg=0)
    write_results([located], results_csv, meta={})
    out = tmp_path / "figure.pdf"
    assert main(["plot", str(results_csv), "--map", str(town / "map.tif"), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"%PDF")


def test_nothing_located_shows_the_whole_map(tmp_path, town):
    write_results([ImageResult.failed("a.jpg", "no match")], tmp_path / "results.geojson", meta={})
    raster = GeoRaster.read(town / "map.tif")
    ax = render_figure(read_results(tmp_path / "results.geojson")[0], raster, dpi=40).axes[0]
    box = raster.bounds()
    assert ax.get_xlim() == pytest.approx((box.left, box.right)) and ax.get_ylim() == pytest.approx(
        (box.bottom, box.top)
    )
    code, out = plot(tmp_path, town, "--dpi", "40", "--full-map")
    assert code == 0 and len(np.unique(pixels(out).reshape(-1, 3), axis=0)) > 100


def _no_output(tmp_path) -> bool:
    return not [p for p in tmp_path.iterdir() if p.suffix == ".png" or p.name.endswith(".tmp")]


def test_missing_results_file_is_an_io_error(tmp_path, town, capsys):
    argv = ["plot", str(tmp_path / "nope.geojson"), "--map", str(town / "map.tif"), "--out", str(tmp_path / "f.png")]
    code = main(argv)
    assert code == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "nope.geojson" in error
    assert _no_output(tmp_path)


def test_foreign_geojson_is_refused(tmp_path, town, capsys):
    foreign = tmp_path / "foreign.geojson"
    foreign.write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")
    code = main(["plot", str(foreign), "--map", str(town / "map.tif"), "--out", str(tmp_path / "f.png")])
    assert code == 2
    assert "not a crossview results file" in capsys.readouterr().err
    assert _no_output(tmp_path)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_map_without_crs_is_refused(tmp_path, town, capsys):
    bare = tmp_path / "bare.tif"
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8"}
    with rasterio.open(bare, "w", **profile) as dst:
        dst.write(np.zeros((1, 8, 8), dtype=np.uint8))
    code = main(["plot", str(tmp_path / "results.geojson"), "--map", str(bare), "--out", str(tmp_path / "f.png")])
    assert code == 2
    assert "no CRS" in capsys.readouterr().err
    assert _no_output(tmp_path)


@pytest.mark.parametrize(
    ("change", "expected_code", "message"),
    [
        ({"--map": "missing.tif"}, 1, "missing.tif"),
        ({"--out": "figure.gif"}, 2, "unsupported figure type"),
        ({"--out": "no/such/folder/f.png"}, 2, "does not exist"),
        ({"--dpi": "5"}, 2, "--dpi"),
        ({"--truth": "missing.csv"}, 1, "missing.csv"),
    ],
)
def test_bad_options(tmp_path, town, capsys, change, expected_code, message):
    options = {"--map": str(town / "map.tif"), "--out": str(tmp_path / "f.png")}
    options.update({k: v if k == "--dpi" else str(tmp_path / v) for k, v in change.items()})
    argv = ["plot", str(tmp_path / "results.geojson")] + [item for pair in options.items() for item in pair]
    assert main(argv) == expected_code
    assert message in capsys.readouterr().err
    assert _no_output(tmp_path)


def test_truth_file_without_columns_is_refused(tmp_path, town):
    bad = tmp_path / "poses.csv"
    bad.write_text("name,x\na,1\n", encoding="utf-8")
    with pytest.raises(ResultsError, match="no column image, lat, lon"):
        read_truth(bad)


# ---- truth matching ----------------------------------------------------------------------------------------


def test_truth_matching_by_relative_path_suffix_and_basename(tmp_path, monkeypatch):
    folder = tmp_path / "world" / "Bergen"
    truth = [TruthPose("panorama/a.jpg", 1, 1), TruthPose("pinhole/a.jpg", 2, 2), TruthPose("pinhole/b.jpg", 3, 3)]

    def result(image: str) -> ImageResult:
        return ImageResult(image=image, status="ok", lat=0, lon=0, heading_deg=0)

    monkeypatch.chdir(tmp_path)
    images = [
        str(folder / "panorama" / "a.jpg"),  # absolute path inside the poses folder
        "world/Bergen/pinhole/a.jpg",  # relative to the working directory: resolves into the folder
        "/elsewhere/copy/Bergen/pinhole/b.jpg",  # elsewhere, but ends with the truth's relative path
        "/elsewhere/b.jpg",  # only the file name matches, and it is unique
        "/elsewhere/a.jpg",  # two truths named a.jpg: ambiguous
        "panorama/a.jpg",  # the same relative path as given in poses.csv
        "/elsewhere/c.jpg",  # no truth
    ]
    matched = match_truth([result(i) for i in images], truth, truth_dir=os.path.relpath(folder))
    assert [m.lat if m else None for m in matched] == [1, 2, 3, 3, None, 1, None]


# ---- geometry in the map CRS -------------------------------------------------------------------------------


def test_convention_plot_arrows_follow_true_heading_in_a_utm_map():
    """In UTM 32 at 11.9 E, 60 N (2.5 degrees of convergence) an arrow for a true heading points where
    walking that heading on the ellipsoid goes on the grid; Web Mercator keeps true north straight up."""
    utm = rasterio.crs.CRS.from_epsg(32632)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    lat, lon = 60.0, 11.9
    x, y = to_utm.transform(lon, lat)
    for heading in (0.0, 45.0, 90.0, 250.0):
        direction = MapGeometry(utm).heading_directions([x], [y], [heading])[0]
        walked = np.subtract(to_utm.transform(*GEOD.fwd(lon, lat, heading, 5.0)[:2]), (x, y))
        angle = math.degrees(math.atan2(direction[0], direction[1]) - math.atan2(walked[0], walked[1]))
        assert (angle + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-3)
    north = MapGeometry(utm).heading_directions([x], [y], [0.0])[0]
    assert math.degrees(math.atan2(north[0], north[1])) == pytest.approx(-2.51, abs=0.05)  # grid = true - conv
    mercator = rasterio.crs.CRS.from_epsg(3857)
    mx, my = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
    north = MapGeometry(mercator).heading_directions([mx], [my], [0.0])[0]
    assert abs(north[0]) < 1e-9 * abs(north[1]) and north[1] > 0


def test_web_mercator_scale_is_in_ground_metres():
    """Web Mercator units per ground metre on WGS84: east sqrt(1 - e2 sin^2)/cos, north a/(M cos) (textbook)."""
    lat = 60.0
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(5.0, lat)
    per_m_x, per_m_y = MapGeometry(rasterio.crs.CRS.from_epsg(3857)).units_per_ground_metre(x, y)
    s, c = math.sin(math.radians(lat)), math.cos(math.radians(lat))
    meridian_radius_over_a = (1 - WGS84_E2) / (1 - WGS84_E2 * s * s) ** 1.5
    assert per_m_x == pytest.approx(math.sqrt(1 - WGS84_E2 * s * s) / c, rel=1e-6)
    assert per_m_y == pytest.approx(1 / (meridian_radius_over_a * c), rel=1e-6)
    assert per_m_x == pytest.approx(2.0, rel=0.01)  # sec(60) = 2: Web Mercator metres are half-size here


def test_figure_scale_bar_and_arrows(tmp_path, town):
    """Inspect the drawn figure: the scale bar's label matches its map length in ground metres, and each
    estimate arrow points along its true heading (straight up for north in Web Mercator)."""
    results, _ = read_results(tmp_path / "results.geojson")
    raster = GeoRaster.read(town / "map.tif")
    figure = render_figure(results, raster, dpi=60)
    ax = figure.axes[0]
    bar = next(line for line in ax.lines if line.get_linewidth() == 6)
    bar_units = abs(np.diff(bar.get_xdata())[0])
    label = next(t.get_text() for t in ax.texts if t.get_text().endswith(" m"))
    lat = math.radians(CENTER_LAT)
    per_m = math.sqrt(1 - WGS84_E2 * math.sin(lat) ** 2) / math.cos(lat)
    assert bar_units / per_m == pytest.approx(float(label.removesuffix(" m")), rel=2e-3)
    red = [int(ESTIMATE_COLOR[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    arrows = [a for a in ax.texts if getattr(a, "arrow_patch", None) is not None]
    estimate_arrows = [a for a in arrows if np.allclose(a.arrow_patch.get_edgecolor()[:3], red)]
    assert len(estimate_arrows) == 2
    for arrow, result in zip(estimate_arrows, [r for r in results if r.ok], strict=True):
        (x0, y0), (x1, y1) = arrow.xyann, arrow.xy
        assert math.degrees(math.atan2(x1 - x0, y1 - y0)) % 360 == pytest.approx(result.heading_deg, abs=0.05)

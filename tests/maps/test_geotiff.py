"""Tests of crossview.maps.geotiff: reading areas of rasters (local files, COGs, /vsicurl/ URLs) into map grids.

References are independent of the code under test: files written with rasterio directly and compared with numpy
slices; output geometry against pyproj transforms of the output pixel centres; the percentile stretch against its
formula evaluated with numpy on the source pixels; real files against their own masks (alpha, nodata) and against
``GeoRaster.crop`` (the library's other, torch-based, resampling path) at the same ground points.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.enums import ColorInterp, Resampling

from crossview.geometry.frames import LocalFrame
from crossview.maps.geotiff import geotiff_info, overview_level, read_geotiff_area, to_rgb_uint8
from crossview.maps.raster import GeoRaster, MapError, MapReadError

UTM = "EPSG:32633"
ORIGIN = (500_000.0, 6_000_000.0)  # top-left corner of the synthetic rasters


# ---- helpers ------------------------------------------------------------------------------------------------------


def write_tif(
    path: Path,
    array: np.ndarray,
    *,
    res: float = 1.0,
    crs: str = UTM,
    colorinterp: list | None = None,
    **profile: object,
) -> Path:
    """A north-up GeoTIFF whose top-left corner is ORIGIN, written with rasterio directly."""
    count, height, width = array.shape
    transform = Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1])
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count, dtype=array.dtype.name, crs=crs,
        transform=transform, **profile,
    ) as dst:  # fmt: skip
        dst.write(array)
    return path


def pixel_box(col0: float, row0: float, col1: float, row1: float, res: float = 1.0) -> tuple[float, ...]:
    """Bounds (left, bottom, right, top) of the source pixel window [col0, col1) x [row0, row1)."""
    return (ORIGIN[0] + col0 * res, ORIGIN[1] - row1 * res, ORIGIN[0] + col1 * res, ORIGIN[1] - row0 * res)


def random_array(shape: tuple[int, ...], dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    high = 256 if dtype == "uint8" else 60_000
    return np.random.default_rng(seed).integers(1, high, size=shape).astype(dtype)


# The server runs in a child process, not in a thread of the test process: several rasterio calls (e.g.
# ``dataset.overviews``) keep the GIL while GDAL waits for HTTP, which would starve an in-process server thread.
_SERVER_SCRIPT = r"""
import http.server, json, os, re, sys, threading

root, lock, stats = sys.argv[1], threading.Lock(), {"bytes_sent": 0, "requests": 0}


class RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.respond(send_body=False)

    def do_GET(self):
        if self.path == "/__stats__":
            body = json.dumps(stats).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.respond(send_body=True)

    def respond(self, send_body):
        path = os.path.join(root, os.path.basename(self.path))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as file:
            data = file.read()
        start, end, status = 0, len(data) - 1, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start, end, status = int(match[1]), min(int(match[2] or end), end), 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if send_body:
            self.wfile.write(data[start : end + 1])
            with lock:
                stats["bytes_sent"] += end - start + 1
                stats["requests"] += 1

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
print(server.server_port, flush=True)
server.serve_forever()
"""


@dataclass(frozen=True)
class RangeServer:
    """A local HTTP server with Range support (what GDAL's /vsicurl/ needs) serving the files in ``root``."""

    root: Path
    port: int

    def vsicurl(self, name: str) -> str:
        return f"/vsicurl/http://127.0.0.1:{self.port}/{name}"

    def bytes_sent(self) -> int:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        with opener.open(f"http://127.0.0.1:{self.port}/__stats__", timeout=10) as response:
            return int(json.load(response)["bytes_sent"])


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[RangeServer]:
    """A threaded ``http.server`` on 127.0.0.1 (random port) in a child process, stopped after the test."""
    root = tmp_path / "served"
    root.mkdir()
    process = subprocess.Popen([sys.executable, "-c", _SERVER_SCRIPT, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())  # type: ignore[union-attr]
        with rasterio.Env(GDAL_HTTP_TIMEOUT=30):  # a broken server fails the test instead of hanging it
            yield RangeServer(root, port)
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()  # type: ignore[union-attr]


# ---- reading windows ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_convention_window_top_left_edge_equals_slice(tmp_path: Path, resampling: str) -> None:
    array = random_array((3, 300, 400), "uint16")
    path = write_tif(tmp_path / "a.tif", array, res=0.5, tiled=True, blockxsize=128, blockysize=128)
    out = read_geotiff_area(
        path, bounds=pixel_box(130, 70, 250, 160, res=0.5), crs=UTM, gsd_m=0.5, resampling=resampling,
        to_uint8_rgb=False,
    )  # fmt: skip
    assert out.array.dtype == np.uint16 and out.valid is None and out.crs.to_epsg() == 32633
    assert out.transform == Affine(0.5, 0, ORIGIN[0] + 65, 0, -0.5, ORIGIN[1] - 35)
    np.testing.assert_array_equal(out.array, array[:, 70:160, 130:250])


def test_area_partly_outside_is_invalid_there(tmp_path: Path) -> None:
    array = random_array((3, 100, 100))
    path = write_tif(tmp_path / "a.tif", array)
    out = read_geotiff_area(path, bounds=pixel_box(-30, 60, 20, 130), crs=UTM, gsd_m=1.0, resampling="nearest")
    assert out.array.shape == (3, 70, 50)
    expected_valid = np.zeros((70, 50), bool)
    expected_valid[:40, 30:] = True  # source rows 60..99, cols 0..19
    np.testing.assert_array_equal(out.valid_mask, expected_valid)
    np.testing.assert_array_equal(out.array[:, :40, 30:], array[:, 60:100, 0:20])
    assert (out.array[:, ~expected_valid] == 0).all()


def test_area_outside_source_raises(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "a.tif", random_array((3, 50, 50)))
    for bounds, crs in ((pixel_box(100, 0, 150, 50), UTM), ((-10, -10, -9, -9), "EPSG:4326")):
        with pytest.raises(MapError, match=f"no data in the requested area.*{re.escape(str(path))}") as info:
            read_geotiff_area(path, bounds=bounds, crs=crs, gsd_m=0.01 if crs == "EPSG:4326" else 1.0)
        assert "\n" not in str(info.value)


def test_output_geometry_in_another_crs(tmp_path: Path) -> None:
    """A UTM ramp file (bands = pixel-centre col, row) read into Web Mercator: each output pixel centre holds the
    source pixel coordinates pyproj gives for it (to GDAL's 1/8-pixel warp approximation)."""
    rows, cols = np.mgrid[0:400, 0:400].astype(np.float32) + 0.5
    path = write_tif(tmp_path / "ramp.tif", np.stack([cols, rows]), res=2.0)
    to_3857 = Transformer.from_crs(UTM, "EPSG:3857", always_xy=True)
    left, top = to_3857.transform(ORIGIN[0] + 200, ORIGIN[1] - 200)
    bounds = (left, top - 600, left + 500, top)
    out = read_geotiff_area(path, bounds=bounds, crs="EPSG:3857", gsd_m=5.0, to_uint8_rgb=False)
    assert out.array.shape == (2, 120, 100) and out.valid is None
    out_rows, out_cols = np.mgrid[0:120, 0:100] + 0.5
    x, y = out.pixel_to_world(out_cols, out_rows)
    ux, uy = Transformer.from_crs("EPSG:3857", UTM, always_xy=True).transform(x, y)
    expected_col, expected_row = (ux - ORIGIN[0]) / 2.0, (ORIGIN[1] - uy) / 2.0
    assert np.abs(out.array[0] - expected_col).max() < 0.13
    assert np.abs(out.array[1] - expected_row).max() < 0.13


# ---- masks --------------------------------------------------------------------------------------------------------


def test_nodata_becomes_mask(tmp_path: Path) -> None:
    array = random_array((3, 60, 60))
    array[:, 10:30, 20:50] = 0
    path = write_tif(tmp_path / "a.tif", array, nodata=0)
    out = read_geotiff_area(path, bounds=pixel_box(0, 0, 60, 60), crs=UTM, gsd_m=1.0, resampling="nearest")
    np.testing.assert_array_equal(out.valid_mask, (array != 0).any(axis=0))


def test_float_nodata_fills_invalid_pixels(tmp_path: Path) -> None:
    array = np.random.default_rng(2).normal(100.0, 10.0, size=(1, 30, 30)).astype(np.float32)
    array[:, 5:15, 5:15] = -9999.0
    path = write_tif(tmp_path / "dem.tif", array, nodata=-9999.0)
    out = read_geotiff_area(path, bounds=pixel_box(-10, 0, 30, 30), crs=UTM, gsd_m=1.0, resampling="nearest",
                            to_uint8_rgb=False)  # fmt: skip
    assert out.nodata == -9999.0 and out.array.dtype == np.float32
    expected_valid = np.zeros((30, 40), bool)
    expected_valid[:, 10:] = array[0] != -9999.0
    np.testing.assert_array_equal(out.valid_mask, expected_valid)
    assert (out.array[0][~expected_valid] == -9999.0).all()
    np.testing.assert_array_equal(out.array[0, :, 10:][expected_valid[:, 10:]], array[0][array[0] != -9999.0])


def test_internal_mask_becomes_mask(tmp_path: Path) -> None:
    valid = np.ones((64, 64), bool)
    valid[5:25, 30:60] = False
    raster = GeoRaster(array=random_array((3, 64, 64)), crs=UTM, transform=Affine(1, 0, ORIGIN[0], 0, -1, ORIGIN[1]),
                       valid=valid)  # fmt: skip
    path = raster.write(tmp_path / "masked.tif")
    out = read_geotiff_area(path, bounds=pixel_box(0, 0, 64, 64), crs=UTM, gsd_m=1.0)
    np.testing.assert_array_equal(out.valid_mask, valid)


def test_alpha_becomes_mask_and_is_dropped(tmp_path: Path) -> None:
    array = random_array((4, 40, 40))
    array[3] = 255
    array[3, :, :15] = 0
    path = write_tif(tmp_path / "rgba.tif", array, photometric="RGB", alpha="YES")  # GTiff ExtraSamples: alpha
    out = read_geotiff_area(path, bounds=pixel_box(0, 0, 40, 40), crs=UTM, gsd_m=1.0, to_uint8_rgb=False)
    assert out.count == 3
    np.testing.assert_array_equal(out.valid_mask, array[3] > 0)
    np.testing.assert_array_equal(out.array[:, :, 15:], array[:3, :, 15:])


# ---- conversion to uint8 RGB --------------------------------------------------------------------------------------


def test_uint16_single_band_stretch_matches_formula(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    band = rng.gamma(2.0, 900.0, size=(80, 90)).astype(np.uint16) + 1
    band[:10, :10] = 0  # nodata
    path = write_tif(tmp_path / "pan.tif", band[None], nodata=0)
    out = read_geotiff_area(path, bounds=pixel_box(0, 0, 90, 80), crs=UTM, gsd_m=1.0, resampling="nearest")
    assert out.array.dtype == np.uint8 and out.count == 3 and out.band_names == ("red", "green", "blue")
    np.testing.assert_array_equal(out.array[0], out.array[1])
    np.testing.assert_array_equal(out.array[0], out.array[2])
    low, high = np.percentile(band[band > 0].astype(float), [2, 98])
    expected = np.clip((band - low) / (high - low) * 255, 0, 255)
    expected[band == 0] = 0
    assert np.abs(out.array[0].astype(float) - expected).max() <= 0.5 + 1e-9
    raw = read_geotiff_area(path, bounds=pixel_box(0, 0, 90, 80), crs=UTM, gsd_m=1.0, resampling="nearest",
                            to_uint8_rgb=False)  # fmt: skip
    assert raw.array.dtype == np.uint16 and raw.count == 1 and raw.nodata == 0
    np.testing.assert_array_equal(raw.array[0], band)


def test_to_rgb_uint8_band_choice_and_constant_band() -> None:
    valid = np.ones((4, 5), bool)
    bgr = np.stack([np.full((4, 5), 1), np.full((4, 5), 2), np.full((4, 5), 3)]).astype(np.uint8)
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red]
    np.testing.assert_array_equal(to_rgb_uint8(bgr, valid, interp)[:, 0, 0], [3, 2, 1])
    np.testing.assert_array_equal(to_rgb_uint8(bgr, valid)[:, 0, 0], [1, 2, 3])  # no interpretation: first three
    constant = np.full((1, 4, 5), 1234.5, np.float32)
    assert (to_rgb_uint8(constant, valid) == 0).all()
    ramp = np.arange(20, dtype=np.float32).reshape(1, 4, 5)
    stretched = to_rgb_uint8(ramp, valid)
    assert stretched[0, 0, 0] == 0 and stretched[0, -1, -1] == 255 and (np.diff(stretched[0].ravel()) >= 0).all()


def test_tags(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "a.tif", random_array((3, 20, 20)))
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(TIFFTAG_COPYRIGHT="(c) Example Agency")
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    out = read_geotiff_area(path, bounds=pixel_box(0, 0, 20, 20), crs=UTM, gsd_m=1.0)
    assert out.tags["source"] == str(path) and out.tags["attribution"] == "(c) Example Agency"
    read_time = datetime.fromisoformat(out.tags["time"])
    assert read_time.utcoffset() == timedelta(0) and before <= read_time <= datetime.now(timezone.utc)


# ---- errors and info ----------------------------------------------------------------------------------------------


def test_unreadable_sources_raise_map_read_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a raster")
    for source in (tmp_path / "missing.tif", tmp_path / "notes.txt", tmp_path):
        with pytest.raises(MapReadError, match=re.escape(str(source))) as info:
            read_geotiff_area(source, bounds=(0, 0, 1, 1), crs=UTM, gsd_m=1.0)
        assert "\n" not in str(info.value) and isinstance(info.value, OSError)
        with pytest.raises(MapReadError, match=re.escape(str(source))):
            geotiff_info(source)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gsd_m": 0.0}, "gsd_m"),
        ({"bounds": (10, 0, 0, 10)}, "bounds"),
        ({"crs": "EPSG:999999"}, "CRS"),
        ({"resampling": "magic"}, "resampling"),
        ({"gsd_m": 1e-3}, "pixels"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    path = write_tif(tmp_path / "a.tif", random_array((3, 20, 20)))
    arguments = {"bounds": pixel_box(0, 0, 20, 20), "crs": UTM, "gsd_m": 1.0, **kwargs}
    with pytest.raises(MapError, match=message):
        read_geotiff_area(path, **arguments)


def test_geotiff_info(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "a.tif", random_array((3, 40, 60)), res=0.5, nodata=0)
    info = geotiff_info(path)
    assert info["crs"] == "EPSG:32633" and info["res"] == (0.5, 0.5)
    assert (info["width"], info["height"], info["count"], info["dtype"]) == (60, 40, 3, "uint8")
    assert info["nodata"] == 0 and not info["has_alpha"]
    assert info["bounds"] == pixel_box(0, 0, 60, 40, res=0.5)
    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(
        [ORIGIN[0], ORIGIN[0] + 30, ORIGIN[0], ORIGIN[0] + 30], [ORIGIN[1], ORIGIN[1], ORIGIN[1] - 20, ORIGIN[1] - 20]
    )
    west, south, east, north = info["bounds_wgs84"]
    assert west <= min(lon) and east >= max(lon) and south <= min(lat) and north >= max(lat)
    assert east - west < 1e-3 and north - south < 1e-3


# ---- remote reads -------------------------------------------------------------------------------------------------


def test_vsicurl_reads_only_the_needed_blocks(http_server: RangeServer) -> None:
    """A 60 x 60 area of a 2048 x 2048 tiled file fetches a few blocks by HTTP range requests, not the file."""
    array = random_array((1, 2048, 2048))
    path = write_tif(http_server.root / "big.tif", array, res=0.5, tiled=True, blockxsize=256, blockysize=256)
    out = read_geotiff_area(
        http_server.vsicurl("big.tif"), bounds=pixel_box(1000, 900, 1060, 960, res=0.5), crs=UTM, gsd_m=0.5,
        resampling="nearest", to_uint8_rgb=False,
    )  # fmt: skip
    np.testing.assert_array_equal(out.array, array[:, 900:960, 1000:1060])
    assert 0 < http_server.bytes_sent() < 0.1 * path.stat().st_size


def test_coarse_reads_use_overviews(http_server: RangeServer) -> None:
    """Like gdalwarp -ovr AUTO: a 4x coarser read warps the factor-4 overview and fetches only its blocks."""
    array = random_array((1, 2048, 2048))
    path = write_tif(http_server.root / "ovr.tif", array, res=0.5, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4, 8], Resampling.average)
    with rasterio.open(path) as src:
        assert [overview_level(src, UTM, gsd) for gsd in (0.5, 0.99, 1.0, 1.9, 2.0, 3.9, 4.0, 100.0)] == [
            None, None, 0, 0, 1, 1, 2, 2,
        ]  # fmt: skip
    with rasterio.open(path, overview_level=1) as overview:  # factor 4: 2 m pixels
        expected = overview.read()
    out = read_geotiff_area(
        http_server.vsicurl("ovr.tif"), bounds=pixel_box(0, 0, 2048, 2048, res=0.5), crs=UTM, gsd_m=2.0,
        resampling="nearest", to_uint8_rgb=False,
    )  # fmt: skip
    np.testing.assert_array_equal(out.array, expected)
    assert http_server.bytes_sent() < 0.2 * path.stat().st_size


# ---- real data ----------------------------------------------------------------------------------------------------


def _center_box(frame: LocalFrame, lat: float, lon: float, half_m: float) -> tuple[float, float, float, float]:
    x, y = frame.to_xy(lat=lat, lon=lon)
    return (x - half_m, y - half_m, x + half_m, y + half_m)


def _crop_on_grid(raster: GeoRaster, frame: LocalFrame, out: GeoRaster) -> np.ndarray:
    """``GeoRaster.crop`` of ``raster`` sampled at the pixel centres of the north-up grid ``out`` in ``frame``."""
    x, y = out.pixel_to_world(out.width / 2, out.height / 2)
    center = frame.to_latlon(x, y)
    k = frame.scale_factor(lat=center.lat, lon=center.lon)
    gamma = frame.convergence_deg(lat=center.lat, lon=center.lon)  # grid north up = true heading gamma
    chips, valid = raster.crop_latlon(lat=center.lat, lon=center.lon, size_px=out.width, gsd_m=out.res[0] / k,
                                      heading_deg=gamma)  # fmt: skip
    assert valid.all()
    return chips[0].numpy()


@pytest.mark.realdata
def test_realdata_colorado_into_wgs84_utm(realdata: Path) -> None:
    path = realdata / "aerial" / "colorado_hro_0p15m_utm13n.tif"
    raster = GeoRaster.read(path)  # EPSG:26913 (NAD83 / UTM 13N), 383 x 232 at 0.15 m
    center = raster.center_latlon()
    frame = LocalFrame.from_center(lat=center.lat, lon=center.lon)
    assert frame.epsg == 32613
    out = read_geotiff_area(path, bounds=_center_box(frame, center.lat, center.lon, 9.0), crs=frame.crs, gsd_m=0.15)
    assert out.array.shape == (3, 120, 120) and out.array.dtype == np.uint8 and out.valid is None
    diff = np.abs(out.array - _crop_on_grid(raster, frame, out))
    assert diff.mean() < 1.0  # GDAL's warp and the torch crop at the same ground points


@pytest.mark.realdata
def test_realdata_bali_alpha_southern_utm(realdata: Path) -> None:
    path = realdata / "aerial" / "bali_pix4d_0p35m_rgba.tif"
    with rasterio.open(path) as src:
        alpha_area_m2 = (src.read(4) > 0).sum() * src.res[0] * src.res[1]
        box = src.bounds
    raster = GeoRaster.read(path)
    center = raster.center_latlon()
    assert center.lat < 0 and LocalFrame.from_center(lat=center.lat, lon=center.lon).epsg == 32750
    bounds = (box.left - 20, box.bottom - 20, box.right + 20, box.top + 20)
    out = read_geotiff_area(path, bounds=bounds, crs="EPSG:32750", gsd_m=0.5)
    assert out.count == 3 and out.valid is not None
    valid_area_m2 = out.valid.sum() * 0.25
    assert valid_area_m2 == pytest.approx(alpha_area_m2, rel=0.02)
    assert (out.array[:, ~out.valid] == 0).all() and out.array[:, out.valid].mean() > 20


@pytest.mark.realdata
def test_realdata_korea_cog_window_into_local_utm(realdata: Path) -> None:
    path = realdata / "aerial" / "korea_cogeo_z18_3857.tif"
    raster = GeoRaster.read(path)  # EPSG:3857 COG, 1024 x 1024, 0.597 m, JPEG, 512 x 512 blocks, 6 overviews
    center = raster.center_latlon()
    frame = LocalFrame.from_center(lat=center.lat, lon=center.lon)
    assert frame.epsg == 32652
    out = read_geotiff_area(path, bounds=_center_box(frame, center.lat, center.lon, 90.0), crs=frame.crs, gsd_m=0.6)
    assert out.array.shape == (3, 300, 300) and out.valid is None
    assert np.abs(out.array - _crop_on_grid(raster, frame, out)).mean() < 2.0


@pytest.mark.realdata
def test_realdata_korea_over_vsicurl(realdata: Path, http_server: RangeServer) -> None:
    path = realdata / "aerial" / "korea_cogeo_z18_3857.tif"
    (http_server.root / "korea.tif").symlink_to(path)
    info = geotiff_info(path)
    left, bottom = info["bounds"][:2]
    bounds = (left + 100, bottom + 150, left + 250, bottom + 250)
    local = read_geotiff_area(path, bounds=bounds, crs="EPSG:3857", gsd_m=1.0)
    remote = read_geotiff_area(http_server.vsicurl("korea.tif"), bounds=bounds, crs="EPSG:3857", gsd_m=1.0)
    np.testing.assert_array_equal(remote.array, local.array)
    assert remote.tags["source"].startswith("/vsicurl/http://127.0.0.1:")
    assert geotiff_info(http_server.vsicurl("korea.tif"))["overviews"] == info["overviews"] == [2, 4, 8, 16, 32, 64]


@pytest.mark.realdata
def test_realdata_landsat_nodata_mask(realdata: Path) -> None:
    path = realdata / "aerial" / "landsat_rgb_byte_300m.tif"
    with rasterio.open(path) as src:
        assert src.nodata == 0 and src.crs.to_epsg() == 32618
        valid_area_m2 = (src.dataset_mask() > 0).sum() * src.res[0] * src.res[1]
        box = src.bounds
    out = read_geotiff_area(path, bounds=tuple(box), crs="EPSG:32618", gsd_m=300.0, resampling="nearest")
    assert 0.5 < out.valid.mean() < 0.8  # the scene is a tilted footprint in a nodata frame
    assert out.valid.sum() * 300.0**2 == pytest.approx(valid_area_m2, rel=0.01)


@pytest.mark.realdata
def test_realdata_solaris_uint16_panchromatic(realdata: Path) -> None:
    path = realdata / "aerial" / "solaris" / "sample_geotiff.tif"
    with rasterio.open(path) as src:
        source = src.read(1)
        assert src.dtypes[0] == "uint16" and src.count == 1 and src.res == (0.5, 0.5)
        box = src.bounds
    out = read_geotiff_area(path, bounds=tuple(box), crs="EPSG:32616", gsd_m=0.5, resampling="nearest")
    assert out.array.shape == (3, 900, 900) and out.array.dtype == np.uint8
    assert (out.array[0] == out.array[1]).all() and (out.array[0] == out.array[2]).all()
    values = out.array[0][out.valid_mask]
    assert values.std() > 30 and np.percentile(values, 1) < 10 and np.percentile(values, 99) > 245
    raw = read_geotiff_area(path, bounds=tuple(box), crs="EPSG:32616", gsd_m=0.5, resampling="nearest",
                            to_uint8_rgb=False)  # fmt: skip
    assert raw.array.dtype == np.uint16 and raw.count == 1
    np.testing.assert_array_equal(raw.array[0], source)

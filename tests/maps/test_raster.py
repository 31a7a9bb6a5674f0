"""Tests of crossview.maps.raster: GeoRaster core, chip cropping in any CRS, and reprojection.

References are independent of the code under test: rasters written with rasterio directly and compared with
numpy slices and rotations; chip geometry against pyproj.Geod (geodesic destinations on the ellipsoid) and
pyproj projections; UTM scale/convergence from PROJ's factors (``LocalFrame``, a different computation path than
the crop's geodesic differences); Web Mercator's ellipsoidal scale from its textbook formula; the Colorado
orthophoto chip against GDAL's own warp (rasterio.warp.reproject into the chip's rotated grid).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import CRS, Geod, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from rasterio.enums import Resampling
from rasterio.warp import reproject as rio_reproject

from crossview.errors import CrossviewError
from crossview.geometry.frames import LocalFrame
from crossview.maps.raster import GeoRaster, MapError, MapReadError, grid_for_bounds, ground_to_crs_jacobian

UTM_K0 = 0.9996  # UTM definition: scale factor on the central meridian
WGS84_E2 = 0.00669437999014  # WGS84 first eccentricity squared
GEOD = Geod(ellps="WGS84")
SETTINGS = settings(max_examples=40, deadline=None)


# ---- helpers ------------------------------------------------------------------------------------------------------


def write_tif(path: Path, array: np.ndarray, crs: str, transform: Affine, **profile: object) -> Path:
    """Write a GeoTIFF with rasterio directly (not with the code under test)."""
    count, height, width = array.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count, dtype=array.dtype.name, crs=crs,
        transform=transform, **profile,
    ) as dst:  # fmt: skip
        dst.write(array)
    return path


def ramp_raster(crs: str, transform: Affine, width: int, height: int, valid: np.ndarray | None = None) -> GeoRaster:
    """Bands = (col, row) of each pixel centre: bilinear sampling returns exact continuous pixel coordinates."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    return GeoRaster(array=np.stack([cols, rows]), crs=crs, transform=transform, valid=valid)


def sampled_world(raster: GeoRaster, chips: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """CRS coordinates of the points a ramp raster's chips sampled."""
    col, row = chips[:, 0].double().numpy(), chips[:, 1].double().numpy()
    return raster.pixel_to_world(col, row)


def chip_offsets_m(size: int, gsd_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) ground offsets (right, up) in metres of the chip pixel centres from the chip centre."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    return (cols - size / 2) * gsd_m, (size / 2 - rows) * gsd_m


def geodesic_reference(crs: str, center_xy: tuple[float, float], heading_deg: float, size: int, gsd_m: float):
    """CRS positions of the chip pixel centres by walking geodesics from the centre: (S, S) x and y."""
    crs_obj = CRS.from_user_input(crs)
    to_geo = Transformer.from_crs(crs_obj, crs_obj.geodetic_crs, always_xy=True)
    from_geo = Transformer.from_crs(crs_obj.geodetic_crs, crs_obj, always_xy=True)
    lon0, lat0 = to_geo.transform(*center_xy)
    right, up = chip_offsets_m(size, gsd_m)
    azimuth = heading_deg + np.degrees(np.arctan2(right, up))
    lon, lat, _ = crs_obj.get_geod().fwd(np.full(right.size, lon0), np.full(right.size, lat0), azimuth.ravel(),
                                         np.hypot(right, up).ravel())  # fmt: skip
    x, y = from_geo.transform(lon, lat)
    return np.reshape(x, right.shape), np.reshape(y, right.shape)


def ground_error_m(crs: str, x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
    """Geodesic distance in metres between CRS points (x1, y1) and (x2, y2)."""
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon1, lat1 = to_wgs84.transform(x1.ravel(), y1.ravel())
    lon2, lat2 = to_wgs84.transform(x2.ravel(), y2.ravel())
    return np.asarray(GEOD.inv(lon1, lat1, lon2, lat2)[2])


@pytest.fixture(scope="module")
def utm_cm_raster() -> GeoRaster:
    """Random integers on a 1 m grid straddling the central meridian of UTM 33N (convergence 0, scale k0)."""
    rng = np.random.default_rng(7)
    array = rng.integers(0, 1000, size=(2, 60, 80)).astype(np.float32)
    return GeoRaster(array=array, crs="EPSG:32633", transform=Affine(1.0, 0, 499_960.0, 0, -1.0, 6_650_030.0))


# ---- GeoRaster core -----------------------------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    array = rng.integers(0, 255, size=(3, 300, 280), dtype=np.uint8)
    valid = np.ones((300, 280), bool)
    valid[10:50, 20:90] = False
    raster = GeoRaster(
        array=array, crs="EPSG:32633", transform=Affine(0.5, 0, 400_000, 0, -0.5, 5_000_000), valid=valid,
        band_names=("r", "g", "b"), tags={"source": "test", "attribution": "me"},
    )  # fmt: skip
    path = raster.write(tmp_path / "sub" / "map.tif")
    assert sorted(p.name for p in path.parent.iterdir()) == ["map.tif"]  # no temp file left
    with rasterio.open(path) as src:  # read back with rasterio, not with the code under test
        np.testing.assert_array_equal(src.read(), array)
        np.testing.assert_array_equal(src.dataset_mask() > 0, valid)
        assert src.crs.to_epsg() == 32633 and src.transform == raster.transform
        assert src.descriptions == ("r", "g", "b") and src.tags()["attribution"] == "me"
    again = GeoRaster.read(path)
    np.testing.assert_array_equal(again.array, array)
    np.testing.assert_array_equal(again.valid, valid)
    assert again.band_names == ("r", "g", "b") and again.tags["source"] == "test"


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a raster")
    for path in (tmp_path / "missing.tif", tmp_path / "notes.txt"):
        with pytest.raises(MapReadError, match=str(path)) as info:
            GeoRaster.read(path)
        assert isinstance(info.value, OSError) and "\n" not in str(info.value)


@SETTINGS
@given(col=st.floats(-1e4, 1e4), row=st.floats(-1e4, 1e4), res=st.floats(0.05, 500.0), angle=st.floats(-180, 180))
def test_pixel_world_round_trip(col: float, row: float, res: float, angle: float) -> None:
    transform = Affine.translation(500_000, 4_000_000) @ Affine.rotation(angle) @ Affine.scale(res, -res)
    raster = GeoRaster(array=np.zeros((1, 2, 2)), crs="EPSG:32633", transform=transform)
    x, y = raster.pixel_to_world(col, row)
    assert (float(x), float(y)) == pytest.approx(transform @ (col, row), abs=1e-6)
    back = raster.world_to_pixel(x, y)
    assert float(back[0]) == pytest.approx(col, abs=1e-6) and float(back[1]) == pytest.approx(row, abs=1e-6)


@SETTINGS
@given(
    left=st.floats(-1e6, 1e6), bottom=st.floats(-1e6, 1e6), width=st.floats(0.01, 5e3), height=st.floats(0.01, 5e3),
    gsd=st.floats(0.05, 100.0),
)  # fmt: skip
def test_grid_for_bounds_covers_within_one_pixel(
    left: float, bottom: float, width: float, height: float, gsd: float
) -> None:
    transform, w_px, h_px = grid_for_bounds((left, bottom, left + width, bottom + height), gsd)
    assert transform == Affine(gsd, 0, left, 0, -gsd, bottom + height)
    assert w_px * gsd >= width - 1e-6 * gsd and (w_px - 1) * gsd < width
    assert h_px * gsd >= height - 1e-6 * gsd and (h_px - 1) * gsd < height


def test_gsd_and_center(tmp_path: Path) -> None:
    raster = GeoRaster(array=np.zeros((1, 10, 20)), crs="EPSG:32633", transform=Affine(0.5, 0, 500_000, 0, -0.3, 6e6))
    assert raster.gsd_m == pytest.approx(0.4)
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(500_005.0, 6e6 - 1.5)
    center = raster.center_latlon()
    assert (center.lat, center.lon) == pytest.approx((lat, lon), abs=1e-9)
    degrees = GeoRaster(array=np.zeros((1, 4, 4)), crs="EPSG:4326", transform=Affine(0.1, 0, 10, 0, -0.1, 50))
    with pytest.raises(MapError, match="metres"):
        _ = degrees.gsd_m


# ---- ground -> CRS Jacobian ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lat", "lon"), [(60.0, 10.0), (45.0, 20.5), (-33.0, 151.2), (0.5, 12.1)])
def test_convention_jacobian_utm_is_scaled_convergence_rotation(lat: float, lon: float) -> None:
    """UTM: J = k [[cos γ, -sin γ], [sin γ, cos γ]]: true east goes to grid azimuth 90 - γ (γ from PROJ factors)."""
    frame = LocalFrame.from_center(lat=lat, lon=lon)
    x, y = frame.to_xy(lat=lat, lon=lon)
    gamma = math.radians(frame.convergence_deg(lat=lat, lon=lon))
    k = frame.scale_factor(lat=lat, lon=lon)
    expected = k * np.array([[math.cos(gamma), -math.sin(gamma)], [math.sin(gamma), math.cos(gamma)]])
    np.testing.assert_allclose(ground_to_crs_jacobian(frame.crs, [x], [y])[0], expected, atol=1e-9)


def test_jacobian_outside_domain_raises() -> None:
    with pytest.raises(MapError, match="outside the domain"):
        ground_to_crs_jacobian("EPSG:32633", [1e9], [0.0])


# ---- crop ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_convention_crop_edge_based_pixels_native_slice(tmp_path: Path, resampling: str) -> None:
    """A chip centred on the pixel corner (col, row) is the slice [row - S/2, row + S/2) x [col - S/2, col + S/2).

    North-up UTM raster on the central meridian: k = k0 and convergence 0, so gsd = res / k0 is the raster grid.
    """
    rng = np.random.default_rng(3)
    array = rng.integers(0, 256, size=(3, 50, 70), dtype=np.uint16)
    transform = Affine(0.5, 0, 499_980.0, 0, -0.5, 5_200_000.0)
    raster = GeoRaster.read(write_tif(tmp_path / "r.tif", array, "EPSG:32633", transform))
    corners = [(20, 10), (35, 25), (50, 30)]  # (col, row) pixel corners = chip centres
    centers = np.array([raster.pixel_to_world(c, r) for c, r in corners])
    chips, valid = raster.crop(centers, 16, 0.5 / UTM_K0, resampling=resampling)
    assert chips.shape == (3, 3, 16, 16) and chips.dtype == torch.float32 and valid.all()
    for chip, (col, row) in zip(chips, corners, strict=True):
        expected = array[:, row - 8 : row + 8, col - 8 : col + 8].astype(np.float32)
        if resampling == "nearest":
            np.testing.assert_array_equal(chip.numpy(), expected)
        else:
            np.testing.assert_allclose(chip.numpy(), expected, atol=2e-2)  # float32 sampling positions: ~1e-5 px


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_convention_crop_heading_points_to_chip_top(utm_cm_raster: GeoRaster, turns: int) -> None:
    """Heading 90 puts east at the top: the east (right) column of the north-up chip becomes the top row."""
    center = np.array([utm_cm_raster.pixel_to_world(40, 30)])
    north_up, _ = utm_cm_raster.crop(center, 20, 1 / UTM_K0, 0.0, resampling="nearest")
    turned, valid = utm_cm_raster.crop(center, 20, 1 / UTM_K0, 90.0 * turns, resampling="nearest")
    assert valid.all()
    np.testing.assert_array_equal(turned.numpy(), np.rot90(north_up.numpy(), k=turns, axes=(-2, -1)))
    if turns == 1:
        np.testing.assert_array_equal(turned[0, :, 0, :].numpy(), north_up[0, :, :, -1].numpy())


def test_crop_batched_equals_one_by_one(utm_cm_raster: GeoRaster) -> None:
    rng = np.random.default_rng(5)
    centers = np.column_stack([rng.uniform(499_975, 500_025, 6), rng.uniform(6_649_990, 6_650_010, 6)])
    headings = rng.uniform(0, 360, 6)
    chips, valid = utm_cm_raster.crop(centers, 12, 0.8, headings)
    for i in range(6):
        chip, valid_i = utm_cm_raster.crop(centers[i : i + 1], 12, 0.8, float(headings[i]))
        torch.testing.assert_close(chips[i : i + 1], chip, rtol=1e-5, atol=1e-3)
        assert torch.equal(valid[i : i + 1], valid_i)


@pytest.mark.parametrize(
    ("crs", "lat", "lon", "res"),
    [
        ("EPSG:32633", 60.0, 10.0, 1.0),  # far west of the central meridian: convergence about -4.3 degrees
        ("EPSG:32750", -8.6, 115.2, 1.0),  # southern hemisphere UTM
        ("EPSG:3857", 60.0, 10.0, 2.0),  # Web Mercator: scale about 1/cos(lat), not conformal on the ellipsoid
        ("EPSG:4326", 45.0, 7.0, 1e-5),  # degrees: anisotropic
    ],
)
@SETTINGS
@given(heading=st.floats(0.0, 360.0), gsd=st.floats(0.3, 2.5), dx=st.floats(-20, 20), dy=st.floats(-20, 20))
def test_crop_geometry_matches_geodesics(
    crs: str, lat: float, lon: float, res: float, heading: float, gsd: float, dx: float, dy: float
) -> None:
    """Every chip pixel lands where walking the geodesic from the centre lands (within 5 mm over ~40 m)."""
    raster = _ramp_around(crs, lat, lon, res)
    col, row = raster.width / 2 + dx, raster.height / 2 + dy
    center = tuple(float(v) for v in raster.pixel_to_world(col, row))
    chips, valid = raster.crop(np.array([center]), 16, gsd, heading)
    assert valid.all()
    x, y = sampled_world(raster, chips)
    x_ref, y_ref = geodesic_reference(crs, center, heading, 16, gsd)
    assert ground_error_m(crs, x[0], y[0], x_ref, y_ref).max() < 5e-3


_RAMPS: dict[tuple, GeoRaster] = {}


def _ramp_around(crs: str, lat: float, lon: float, res: float) -> GeoRaster:
    """A 200 x 200 ramp raster centred on (lat, lon) (cached: hypothesis calls this for every example)."""
    key = (crs, lat, lon, res)
    if key not in _RAMPS:
        x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
        transform = Affine(res, 0, x - 100 * res, 0, -res, y + 100 * res)
        _RAMPS[key] = ramp_raster(crs, transform, 200, 200)
    return _RAMPS[key]


def test_crop_web_mercator_covers_secant_scale() -> None:
    """EPSG:3857 at 60 N: a ground metre spans about 1/cos(lat) = 2 CRS metres (ellipsoidal formula exactly)."""
    lat = 60.0
    raster = _ramp_around("EPSG:3857", lat, 10.0, 2.0)
    center = np.array([raster.pixel_to_world(100, 100)])
    chips, _ = raster.crop(center, 8, 1.5, 0.0)
    x, y = sampled_world(raster, chips)
    phi = math.radians(lat)
    w = 1 - WGS84_E2 * math.sin(phi) ** 2
    east_scale = math.sqrt(w) / math.cos(phi)  # spherical Mercator x on ellipsoidal latitude: a dλ / (N cos φ)
    north_scale = w**1.5 / ((1 - WGS84_E2) * math.cos(phi))  # a dφ / cos φ per meridian arc M dφ
    span = 8 - 1  # chip pixel centres from first to last column / row
    np.testing.assert_allclose((x[0, :, -1] - x[0, :, 0]) / span, 1.5 * east_scale, rtol=2e-6)
    np.testing.assert_allclose((y[0, 0, :] - y[0, -1, :]) / span, 1.5 * north_scale, rtol=2e-6)
    np.testing.assert_allclose(y[0, :, -1] - y[0, :, 0], 0.0, atol=1e-4)  # rows run due east
    assert east_scale == pytest.approx(1 / math.cos(phi), rel=5e-3)


def test_convention_crop_true_north_up() -> None:
    """Far from the central meridian a true-north line is tilted in the UTM grid but vertical in a heading-0 chip."""
    lat, lon, size = 60.0, 10.0, 96  # UTM 33N: central meridian 15 E, convergence about -4.3 degrees
    frame = LocalFrame.from_crs("EPSG:32633")
    x0, y0 = frame.to_xy(lat=lat, lon=lon)
    transform = Affine(1.0, 0, round(x0) - 100, 0, -1.0, round(y0) + 100)
    distances = np.linspace(-120, 120, 2401)
    lon_l, lat_l, _ = GEOD.fwd(np.full(distances.size, lon), np.full(distances.size, lat), np.zeros(distances.size),
                               distances)  # fmt: skip
    raster = GeoRaster(array=_paint_line(frame.to_xy(lat=lat_l, lon=lon_l), transform, 200), crs="EPSG:32633",
                       transform=transform)  # fmt: skip
    center = np.array([[x0, y0]])
    gamma = frame.convergence_deg(lat=lat, lon=lon)
    true_up, _ = raster.crop(center, size, 1.0, 0.0)
    grid_up, _ = raster.crop(center, size, 1.0, gamma)  # true heading gamma = grid north up
    slope_true, offset_true = _line_fit(true_up[0, 0].numpy())
    slope_grid, _ = _line_fit(grid_up[0, 0].numpy())
    assert abs(slope_true) < 1e-4 and offset_true == pytest.approx(size / 2, abs=0.02)
    # in a grid-north-up chip, true north (grid azimuth -gamma) drifts tan(gamma) columns per row downwards
    assert slope_grid == pytest.approx(math.tan(math.radians(gamma)), abs=1e-4)
    assert abs(slope_grid) > 0.07  # the test can tell the two apart


def _paint_line(xy: tuple[np.ndarray, np.ndarray], transform: Affine, size: int) -> np.ndarray:
    """A smooth 1-band raster: a Gaussian ridge (sigma 1.2 px) along the densely sampled polyline xy."""
    col, row = ~transform @ (np.asarray(xy[0]), np.asarray(xy[1]))
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    ridge = np.zeros((size, size))
    for r in range(size):  # per raster row: distance to the (nearly vertical) line's crossing
        crossing = np.interp(rows[r, 0], row[::-1], col[::-1])
        ridge[r] = np.exp(-0.5 * ((cols[r] - crossing) / 1.2) ** 2)
    return ridge[None].astype(np.float32)


def _line_fit(chip: np.ndarray) -> tuple[float, float]:
    """Least-squares col = slope * (row - S/2) + offset through each row's intensity centroid (continuous coords)."""
    size = chip.shape[0]
    cols = np.arange(size) + 0.5
    centroids = (chip * cols).sum(axis=1) / chip.sum(axis=1)
    rows = np.arange(size) + 0.5 - size / 2
    slope, offset = np.polyfit(rows, centroids, 1)
    return float(slope), float(offset)


def test_crop_valid_mask_and_outside() -> None:
    valid = np.ones((40, 40), bool)
    valid[10:20, 25:35] = False
    array = np.full((1, 40, 40), 7.0, np.float32)
    array[0, ~valid] = 1e6  # garbage that must never reach a valid chip pixel
    raster = GeoRaster(array=array, crs="EPSG:32633", transform=Affine(1.0, 0, 499_980, 0, -1.0, 6e6), valid=valid)
    center = np.array([raster.pixel_to_world(30, 12)])  # chip reaches 10 px beyond the right edge
    for resampling in ("nearest", "bilinear"):
        chips, chip_valid = raster.crop(center, 20, 1 / UTM_K0, resampling=resampling)
        expected = np.pad(valid, ((0, 0), (0, 10)))[2:22, 20:40]  # chip rows 2..21, cols 20..39 (10 outside)
        np.testing.assert_array_equal(chip_valid[0].numpy(), expected)
        np.testing.assert_allclose(chips[0, 0].numpy()[expected], 7.0, rtol=1e-6)
        assert (chips[0, 0].numpy()[~expected] == 0).all()
    # half-pixel shifts and rotation: bilinear values stay those of valid pixels
    chips, chip_valid = raster.crop(center + 0.37, 20, 0.9, 33.0)
    assert chip_valid.any() and (~chip_valid).any()
    np.testing.assert_allclose(chips[0, 0].numpy()[chip_valid[0].numpy()], 7.0, rtol=1e-5)


def test_crop_nan_pixels_are_invalid() -> None:
    array = np.ones((1, 10, 10), np.float32)
    array[0, 4, 4] = np.nan
    raster = GeoRaster(array=array, crs="EPSG:32633", transform=Affine(1.0, 0, 499_995, 0, -1.0, 6e6))
    chips, valid = raster.crop(np.array([raster.pixel_to_world(5, 5)]), 10, 1 / UTM_K0, resampling="nearest")
    assert not valid[0, 4, 4] and valid.sum() == 99 and torch.isfinite(chips).all()


def test_crop_latlon_equals_crop_at_projected_center(utm_cm_raster: GeoRaster) -> None:
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(500_003.2, 6_650_001.7)
    by_latlon, valid_ll = utm_cm_raster.crop_latlon(lat=lat, lon=lon, size_px=10, gsd_m=0.7, heading_deg=12.0)
    by_xy, valid_xy = utm_cm_raster.crop(np.array([[500_003.2, 6_650_001.7]]), 10, 0.7, 12.0)
    torch.testing.assert_close(by_latlon, by_xy, rtol=1e-5, atol=1e-2)  # float32 sampling: ~1e-5 px
    assert torch.equal(valid_ll, valid_xy)
    with pytest.raises(CrossviewError, match="lat"):
        utm_cm_raster.crop_latlon(lat=91.0, lon=0.0, size_px=4, gsd_m=1.0)


def test_crop_cache_follows_array_replacement(utm_cm_raster: GeoRaster) -> None:
    raster = GeoRaster(array=utm_cm_raster.array.copy(), crs=utm_cm_raster.crs, transform=utm_cm_raster.transform)
    center = np.array([raster.pixel_to_world(40, 30)])
    first, _ = raster.crop(center, 4, 1 / UTM_K0, resampling="nearest")
    stack = raster._torch_cache["stack"]
    raster.crop(center, 4, 1 / UTM_K0)
    assert raster._torch_cache["stack"] is stack  # reused, not rebuilt
    raster.array = raster.array + 1.0
    second, _ = raster.crop(center, 4, 1 / UTM_K0, resampling="nearest")
    torch.testing.assert_close(second, first + 1.0)
    assert pickle.loads(pickle.dumps(raster))._torch_cache == {}  # the cache never travels to workers


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([[1.0, 2.0, 3.0]], 8, 1.0), "shape"),
        (([[np.nan, 2.0]], 8, 1.0), "non-finite"),
        (([[5e5, 6.65e6]], 0, 1.0), "size_px"),
        (([[5e5, 6.65e6]], 8, -1.0), "gsd_m"),
        (([[5e5, 6.65e6]], 8, 1.0, [0.0, 1.0]), "heading_deg"),
    ],
)
def test_crop_bad_input(utm_cm_raster: GeoRaster, args: tuple, message: str) -> None:
    with pytest.raises(MapError, match=message):
        utm_cm_raster.crop(*args)


def test_crop_bad_resampling(utm_cm_raster: GeoRaster) -> None:
    with pytest.raises(MapError, match="cubic"):
        utm_cm_raster.crop([[5e5, 6.65e6]], 8, 1.0, resampling="cubic")


def test_crop_on_device(utm_cm_raster: GeoRaster, device: torch.device) -> None:
    center = np.array([utm_cm_raster.pixel_to_world(40, 30)])
    on_cpu, _ = utm_cm_raster.crop(center, 8, 0.9, 30.0)
    on_device, valid = utm_cm_raster.crop(center, 8, 0.9, 30.0, device=device)
    assert on_device.device.type == device.type and valid.device.type == device.type
    torch.testing.assert_close(on_device.cpu(), on_cpu, rtol=1e-5, atol=5e-2)  # values up to 1000 per pixel


# ---- reprojection -------------------------------------------------------------------------------------------------


def _smooth_geographic_raster() -> GeoRaster:
    """A smooth float raster in EPSG:4326 near Munich (about 1 x 1 km) with an invalid block."""
    height, width = 100, 150
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    array = (100 + 40 * np.sin(cols / 15.0) + 30 * np.cos(rows / 11.0))[None].astype(np.float32)
    valid = np.ones((height, width), bool)
    valid[60:80, 20:50] = False
    transform = Affine(1e-4, 0, 11.5, 0, -1e-4, 48.2)  # ~7.4 m x 11.1 m pixels
    return GeoRaster(array=array, crs="EPSG:4326", transform=transform, valid=valid, band_names=("elevation",),
                     tags={"source": "synthetic"})  # fmt: skip


def test_reproject_round_trip_and_mask() -> None:
    raster = _smooth_geographic_raster()
    utm = raster.to_local_utm(2.0)
    expected_epsg = int(
        query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(11.5, 48.19, 11.52, 48.2))[0].code
    )
    assert utm.crs.to_epsg() == expected_epsg == 32632
    assert utm.res == (2.0, 2.0) and utm.transform.b == 0 and utm.transform.d == 0
    assert utm.band_names == ("elevation",) and utm.tags == {"source": "synthetic"}
    covered, box = raster.bounds(utm.crs), utm.bounds()
    assert box.left <= covered.left and box.bottom <= covered.bottom
    assert box.right >= covered.right and box.top >= covered.top
    # the invalid block follows: its centre is invalid there, a far point is valid
    to_utm = Transformer.from_crs("EPSG:4326", utm.crs.to_wkt(), always_xy=True)
    for (col, row), expected in (((35, 70), False), ((120, 20), True)):
        lon, lat = raster.pixel_to_world(col + 0.5, row + 0.5)
        u, v = utm.world_to_pixel(*to_utm.transform(lon, lat))
        assert utm.valid_mask[int(v), int(u)] == expected
    back = utm.reproject("EPSG:4326", raster.res[0], bounds=tuple(raster.bounds()))
    assert back.array.shape == raster.array.shape and back.transform.almost_equals(raster.transform)
    interior = np.zeros_like(raster.valid_mask)
    interior[3:-3, 3:-3] = True
    assert (back.valid_mask == raster.valid_mask)[interior].mean() > 0.99  # nearest twice: block edges may move
    far_from_block = interior.copy()
    far_from_block[57:83, 17:53] = False
    error = np.abs(back.array[0] - raster.array[0])[far_from_block]
    assert error.max() < 0.3 and error.mean() < 0.06  # amplitude 140, 2 m UTM pixels vs 7 x 11 m source pixels


def test_reproject_default_gsd_is_native_pixel_size() -> None:
    """Without gsd_m a source pixel keeps its size: the geometric mean of its sides, in ground metres times k."""
    raster = _smooth_geographic_raster()
    center = raster.center_latlon()
    frame = LocalFrame.from_center(lat=center.lat, lon=center.lon)
    lon0, lat0 = raster.pixel_to_world(raster.width / 2, raster.height / 2)
    side_col_m = GEOD.inv(lon0, lat0, lon0 + raster.res[0], lat0)[2]
    side_row_m = GEOD.inv(lon0, lat0, lon0, lat0 - raster.res[1])[2]
    expected = math.sqrt(side_col_m * side_row_m) * frame.scale_factor(lat=lat0, lon=lon0)
    out = raster.reproject(frame.crs)
    assert out.res[0] == out.res[1] == pytest.approx(expected, rel=1e-5)
    same = raster.reproject("EPSG:4326")
    assert same.res == pytest.approx((1e-4, 1e-4), rel=1e-9) and same.array.shape == raster.array.shape


def test_reproject_invalid_pixels_do_not_bleed() -> None:
    raster = _smooth_geographic_raster()
    raster.array[0, ~raster.valid_mask] = 1e6
    utm = raster.to_local_utm(3.0)
    assert utm.array[0][utm.valid_mask].max() < 200


def test_reproject_explicit_bounds_and_nodata() -> None:
    array = np.arange(100, dtype=np.uint8).reshape(1, 10, 10)
    raster = GeoRaster(array=array, crs="EPSG:32633", transform=Affine(1, 0, 5e5, 0, -1, 6e6), nodata=255)
    out = raster.reproject("EPSG:32633", 1.0, bounds=(5e5 - 2, 6e6 - 10, 5e5 + 8, 6e6), resampling="nearest")
    assert out.array.shape == (1, 10, 10) and out.nodata == 255
    np.testing.assert_array_equal(out.array[0, :, 2:], array[0, :, :8])
    assert (out.array[0, :, :2] == 255).all() and not out.valid_mask[:, :2].any() and out.valid_mask[:, 2:].all()
    with pytest.raises(MapError, match="bounds"):
        raster.reproject("EPSG:32633", 1.0, bounds=(1, 2, 0, 3))
    with pytest.raises(MapError, match="resampling"):
        raster.reproject("EPSG:32633", 1.0, resampling="magic")
    with pytest.raises(MapError, match="CRS"):
        raster.reproject("EPSG:999999", 1.0)


# ---- real data ----------------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_realdata_colorado_chip_matches_gdal_warp(realdata: Path) -> None:
    """A heading-0 chip equals GDAL's bilinear warp into the chip's grid (rotated by the convergence, scaled by k)."""
    raster = GeoRaster.read(realdata / "aerial" / "colorado_hro_0p15m_utm13n.tif")
    assert raster.crs.to_epsg() == 26913 and raster.array.shape == (3, 232, 383)
    size, gsd = 160, 0.15
    center = raster.center_latlon()
    frame = LocalFrame.from_crs("EPSG:26913")
    gamma = frame.convergence_deg(lat=center.lat, lon=center.lon)  # about +0.14 degrees here
    k = frame.scale_factor(lat=center.lat, lon=center.lon)
    cx, cy = frame.to_xy(lat=center.lat, lon=center.lon)
    chip_transform = (
        Affine.translation(cx, cy) @ Affine.rotation(gamma) @ Affine.scale(k * gsd, -k * gsd)
        @ Affine.translation(-size / 2, -size / 2)
    )  # fmt: skip
    reference = np.zeros((3, size, size), np.float32)
    rio_reproject(raster.array, reference, src_transform=raster.transform, src_crs=raster.crs,
                  dst_transform=chip_transform, dst_crs=raster.crs, resampling=Resampling.bilinear)  # fmt: skip
    chips, valid = raster.crop_latlon(lat=center.lat, lon=center.lon, size_px=size, gsd_m=gsd)
    assert valid.all()
    diff = np.abs(chips[0].numpy() - reference)[:, 4:-4, 4:-4]
    # the same bilinear kernel at the same points: float32 noise only (ignoring the 0.14 degree convergence: ~1.2 DN)
    assert diff.mean() < 0.05 and diff.max() < 1.0
    assert 0.1 < gamma < 0.2

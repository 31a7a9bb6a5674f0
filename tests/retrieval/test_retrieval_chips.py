"""Chip geometry of the index: footprint, frame, orientation, lattice over the valid area, map fingerprint.

References: VIGOR's metres-per-pixel formula written out here; the UTM zone from its textbook definition; points
true-north and true-east of a chip centre from pyproj.Geod (geodesic destinations on the ellipsoid); the map's
validity from rasterio's own dataset mask.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from pyproj import CRS, Geod, Transformer
from retrieval_fixtures import MAP_LAT, MAP_LON, TINY_SIZES, textured_rgb, vigor_tile_extent_m, write_map

from crossview.encoders import model_config
from crossview.errors import ConfigError
from crossview.geometry.frames import LocalFrame
from crossview.maps.raster import GeoRaster, MapError
from crossview.retrieval.chips import (
    MIN_VALID_FRACTION,
    ChipGeometry,
    ChipSampler,
    chip_geometry_for_model,
    map_fingerprint,
)

GEOD = Geod(ellps="WGS84")


@pytest.fixture(scope="module")
def map_path(tmp_path_factory):
    return write_map(tmp_path_factory.mktemp("chips") / "map.tif")


@pytest.fixture(scope="module")
def raster(map_path):
    return GeoRaster.read(map_path)


def tiny_config(**overrides):
    return model_config("safa-resnet18-lite", **{**TINY_SIZES, **overrides})


# ---- conventions --------------------------------------------------------------------------------------------


def test_convention_chip_footprint_is_a_vigor_tile_at_the_map_latitude(raster):
    geometry = chip_geometry_for_model(tiny_config(), raster)
    centre_lat = raster.center_latlon().lat
    assert geometry.extent_source == "vigor-zoom20-tile"
    assert geometry.extent_m == pytest.approx(vigor_tile_extent_m(centre_lat), rel=1e-12)
    assert geometry.size_px == TINY_SIZES["aerial_size"]
    assert geometry.gsd_m == pytest.approx(vigor_tile_extent_m(centre_lat) / TINY_SIZES["aerial_size"])


def test_chip_footprint_from_a_bev_config_or_the_user(raster):
    bev = model_config("bev-resnet18", aerial_size=64, aerial_extent_m=50.0)
    assert chip_geometry_for_model(bev, raster).extent_m == 50.0
    assert chip_geometry_for_model(bev, raster).extent_source == "model-config"
    user = chip_geometry_for_model(tiny_config(), raster, extent_m=80.0)
    assert (user.extent_m, user.extent_source) == (80.0, "user")
    with pytest.raises(ConfigError, match="extent_m"):
        chip_geometry_for_model(tiny_config(), raster, extent_m=-1.0)


def test_convention_index_frame_is_the_utm_zone_of_the_map_centre(raster):
    geometry = chip_geometry_for_model(tiny_config(), raster)
    zone = math.floor((MAP_LON + 180.0) / 6.0) + 1  # textbook UTM zone (no exception applies at 48N 7.8E)
    assert geometry.frame.epsg == 32600 + zone
    axes = geometry.frame.crs.axis_info
    assert (axes[0].direction, axes[1].direction) == ("east", "north")
    assert ChipGeometry.from_json(geometry.to_json()) == geometry


def test_convention_chips_are_true_north_up():
    """A blob 30 m true north of the chip centre lies straight above it in the chip, another 30 m true east
    straight to its right, although grid north is 2.6 degrees off true north there (UTM 32 at 11.9E 65N)."""
    lat, lon, distance_m = 65.0, 11.9, 30.0
    frame = LocalFrame(CRS.from_epsg(32632))
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    assert frame.convergence_deg(lat=lat, lon=lon) > 2.5
    centre = np.array(to_utm.transform(lon, lat))
    blobs = []
    for azimuth in (0.0, 90.0):
        blob_lon, blob_lat, _ = GEOD.fwd(lon, lat, azimuth, distance_m)
        blobs.append(np.array(to_utm.transform(blob_lon, blob_lat)))
    gsd = 0.25
    size = 400  # 100 m
    left, top = centre[0] - 50.0, centre[1] + 50.0
    cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    x, y = left + gsd * cols, top - gsd * rows
    image = sum(np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * 1.5**2)) for bx, by in blobs)
    array = np.repeat((255 * image)[None].astype(np.float32) / 255.0, 3, axis=0)
    raster = GeoRaster(array=array, crs="EPSG:32632", transform=Affine(gsd, 0, left, 0, -gsd, top))
    sampler = ChipSampler(raster, ChipGeometry(frame, 80, 80.0))  # 1 m per chip pixel
    chip = sampler.crop(centre[None])[0][0, 0].double()
    half = 40.0
    rows_c, cols_c = torch.meshgrid(torch.arange(80.0) + 0.5, torch.arange(80.0) + 0.5, indexing="ij")
    top_half = chip * (rows_c < half - distance_m / 2)  # the north blob only
    right_half = chip * (cols_c > half + distance_m / 2)  # the east blob only
    north_col = float((top_half * cols_c).sum() / top_half.sum())
    north_row = float((top_half * rows_c).sum() / top_half.sum())
    east_col = float((right_half * cols_c).sum() / right_half.sum())
    east_row = float((right_half * rows_c).sum() / right_half.sum())
    assert north_col == pytest.approx(half, abs=0.3)  # grid north would put it 1.4 px to the side
    assert north_row == pytest.approx(half - distance_m, abs=0.3)
    assert east_row == pytest.approx(half, abs=0.3)
    assert east_col == pytest.approx(half + distance_m, abs=0.3)


# ---- lattice and validity ------------------------------------------------------------------------------------


def test_lattice_covers_the_valid_area_and_skips_invalid_centres(map_path, raster):
    geometry = chip_geometry_for_model(tiny_config(), raster)
    sampler = ChipSampler(raster, geometry)
    stride = 8.0
    centers = sampler.lattice(stride)
    assert len(centers) > 100
    np.testing.assert_allclose(centers / stride, np.round(centers / stride), atol=1e-9)  # multiples of the stride
    to_map = Transformer.from_crs(geometry.frame.crs, "EPSG:3857", always_xy=True)
    with rasterio.open(map_path) as src:
        mask = src.dataset_mask()
        inverse = ~src.transform
        mx, my = to_map.transform(centers[:, 0], centers[:, 1])
        cols, rows = inverse @ (np.asarray(mx), np.asarray(my))
    rows_i, cols_i = np.floor(rows).astype(int), np.floor(cols).astype(int)
    inside = (rows_i >= 0) & (rows_i < mask.shape[0]) & (cols_i >= 0) & (cols_i < mask.shape[1])
    assert inside.all()
    # the working raster is warped and averaged: allow its border pixels to disagree with the source mask
    near_edge = _near_mask_edge(mask > 0, rows, cols, margin_px=4)
    assert (mask[rows_i, cols_i][~near_edge] > 0).all()
    # every lattice point well inside the valid area is there
    xs = np.arange(math.ceil(centers[:, 0].min() / stride), math.floor(centers[:, 0].max() / stride) + 1) * stride
    ys = np.arange(math.ceil(centers[:, 1].min() / stride), math.floor(centers[:, 1].max() / stride) + 1) * stride
    grid = np.stack([g.ravel() for g in np.meshgrid(xs, ys)], axis=-1)
    gx, gy = to_map.transform(grid[:, 0], grid[:, 1])
    gcols, grows = inverse @ (np.asarray(gx), np.asarray(gy))
    interior = ~_near_mask_edge(mask > 0, grows, gcols, margin_px=4) & _valid_at(mask > 0, grows, gcols)
    have = {tuple(c) for c in np.round(centers / stride).astype(int)}
    wanted = {tuple(c) for c in np.round(grid[interior] / stride).astype(int)}
    assert wanted <= have


def _valid_at(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    r, c = np.floor(rows).astype(int), np.floor(cols).astype(int)
    ok = (r >= 0) & (r < mask.shape[0]) & (c >= 0) & (c < mask.shape[1])
    result = np.zeros(len(r), dtype=bool)
    result[ok] = mask[r[ok], c[ok]]
    return result


def _near_mask_edge(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, margin_px: int) -> np.ndarray:
    near = np.zeros(len(rows), dtype=bool)
    for dr in range(-margin_px, margin_px + 1, 2):
        for dc in range(-margin_px, margin_px + 1, 2):
            near |= _valid_at(mask, rows + dr, cols + dc) != _valid_at(mask, rows, cols)
    return near


def test_crop_returns_unit_range_chips_and_valid_masks(raster):
    sampler = ChipSampler(raster, chip_geometry_for_model(tiny_config(), raster))
    centers = sampler.lattice(20.0)
    chips, valid = sampler.crop(centers)
    assert chips.shape == (len(centers), 3, 64, 64) and chips.dtype == torch.float32
    assert float(chips.min()) >= 0.0 and float(chips.max()) <= 1.0
    assert float(chips.max()) > 0.5  # uint8 values were divided by 255, not left on 0..255 or crushed
    fractions = valid.flatten(1).float().mean(dim=1)
    assert float(fractions.max()) == 1.0 and float(fractions.min()) < MIN_VALID_FRACTION  # the masked corner
    batches = list(sampler.iter_chips(centers, batch_size=7))
    assert [start for start, _, _ in batches] == list(range(0, len(centers), 7))
    torch.testing.assert_close(torch.cat([c for _, c, _ in batches]), chips)


def test_uint16_and_float_maps_scale_to_unit_range_and_bad_maps_fail():
    rgb = textured_rgb(64)
    transform = Affine(1.0, 0, 500_000.0, 0, -1.0, 5_300_000.0)
    frame = LocalFrame(CRS.from_epsg(32632))
    geometry = ChipGeometry(frame, 16, 16.0)
    centre = np.array([[500_032.0, 5_299_968.0]])
    reference = ChipSampler(GeoRaster(array=rgb, crs="EPSG:32632", transform=transform), geometry).crop(centre)[0]
    as_u16 = GeoRaster(array=rgb.astype(np.uint16) * 257, crs="EPSG:32632", transform=transform)
    as_float = GeoRaster(array=rgb.astype(np.float32) / 255, crs="EPSG:32632", transform=transform)
    torch.testing.assert_close(ChipSampler(as_u16, geometry).crop(centre)[0], reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(ChipSampler(as_float, geometry).crop(centre)[0], reference, atol=1e-5, rtol=0)
    with pytest.raises(MapError, match="int16"):
        ChipSampler(GeoRaster(array=rgb.astype(np.int16), crs="EPSG:32632", transform=transform), geometry)
    with pytest.raises(MapError, match="1 band"):
        ChipSampler(GeoRaster(array=rgb[:1], crs="EPSG:32632", transform=transform), geometry)


def test_osm_models_get_class_chips_and_other_modalities_are_refused(raster):
    assert chip_geometry_for_model(dict(tiny_config(), map_modality="osm"), raster).modality == "osm"
    assert chip_geometry_for_model(tiny_config(), raster).modality == "aerial"
    with pytest.raises(ConfigError, match="aerial or OSM"):
        chip_geometry_for_model(dict(tiny_config(), map_modality="lidar"), raster)


# ---- fingerprint ---------------------------------------------------------------------------------------------


def test_map_fingerprint_survives_a_rewrite_and_changes_with_the_map(map_path, tmp_path, raster):
    fingerprint = map_fingerprint(raster)
    assert fingerprint.startswith("sha256:") and len(fingerprint) == len("sha256:") + 64
    copy = tmp_path / "copy.tif"
    with rasterio.open(map_path) as src:
        profile = {**src.profile, "compress": "lzw", "tiled": True, "blockxsize": 64, "blockysize": 64}
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(copy, "w", **profile) as dst:
            dst.write(src.read())
            dst.write_mask(src.dataset_mask())
            dst.update_tags(note="another writer")
    assert map_fingerprint(GeoRaster.read(copy)) == fingerprint
    changed_pixel = raster.array.copy()
    changed_pixel[1, 100, 100] ^= 1
    shifted = raster.transform @ Affine.translation(1, 0)
    no_mask = np.ones_like(raster.valid_mask)
    variants = [
        GeoRaster(array=changed_pixel, crs=raster.crs, transform=raster.transform, valid=raster.valid),
        GeoRaster(array=raster.array, crs=raster.crs, transform=shifted, valid=raster.valid),
        GeoRaster(array=raster.array, crs=raster.crs, transform=raster.transform, valid=no_mask),
        GeoRaster(array=raster.array, crs="EPSG:3395", transform=raster.transform, valid=raster.valid),
    ]
    assert len({fingerprint, *(map_fingerprint(v) for v in variants)}) == 5


def test_map_latitude_sets_the_footprint(tmp_path):
    north = GeoRaster.read(write_map(tmp_path / "north.tif", lat=60.0, lon=MAP_LON, invalid_corner=False))
    geometry = chip_geometry_for_model(tiny_config(), north)
    assert geometry.extent_m == pytest.approx(vigor_tile_extent_m(north.center_latlon().lat), rel=1e-12)
    assert geometry.extent_m < chip_geometry_for_model(tiny_config(), north, extent_m=None).extent_m + 1e-9
    assert geometry.extent_m == pytest.approx(vigor_tile_extent_m(MAP_LAT) * math.cos(math.radians(60.0)) /
                                              math.cos(math.radians(MAP_LAT)), rel=1e-3)  # fmt: skip

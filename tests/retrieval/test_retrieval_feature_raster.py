"""The stitched feature raster of a map (crossview.retrieval.feature_raster) on a real GeoTIFF written with
rasterio: blocks line up with one crop of the whole area, the frame conversions invert each other, windows read
the right cells, and the real model's stitched features match its features of one crop away from the edges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from retrieval_fixtures import MAP_LAT, MAP_LON, TINY_SIZES, tiny_model, write_map

from crossview.encoders import model_config
from crossview.maps.raster import GeoRaster
from crossview.retrieval import feature_raster as feature_raster_module
from crossview.retrieval.chips import ChipSampler, chip_geometry_for_model
from crossview.retrieval.feature_raster import encode_feature_raster

pytestmark = pytest.mark.usefixtures("single_torch_thread")

CELL_PX = 4


class PoolingEncoder(torch.nn.Module):
    """An aerial branch whose finest level is the chip's colours averaged over each 4x4 cell: what the raster
    holds is then known exactly from the map."""

    def map_refinement_features(self, chips):
        pooled = F.avg_pool2d(chips, CELL_PX)
        return [pooled], [torch.ones_like(pooled[:, :1])]


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    raster = GeoRaster.read(write_map(tmp_path_factory.mktemp("map") / "map.tif"))
    return ChipSampler(raster, chip_geometry_for_model(model_config("safa-resnet18-lite", **TINY_SIZES), raster))


def centre_xy(sampler) -> tuple[float, float]:
    x, y = sampler.geometry.frame.to_xy(lat=MAP_LAT, lon=MAP_LON)
    return float(x) + 3.0, float(y) - 2.0


def test_blocks_stitch_into_the_features_of_one_crop(sampler, monkeypatch):
    monkeypatch.setattr(feature_raster_module, "BLOCK_CELLS", 16)  # 3 x 3 blocks
    half_m = 0.5 * 40 * CELL_PX * sampler.geometry.gsd_m  # 40 cells wanted -> 48 after rounding to blocks
    raster = encode_feature_raster(
        PoolingEncoder(), sampler, sampler.geometry.frame, centre_xy(sampler), half_m, cell_px=CELL_PX
    )
    assert raster.size == 48 and raster.features.shape == (3, 48, 48)
    chip, valid = sampler.crop(np.array([centre_xy(sampler)]), size_px=48 * CELL_PX)
    expected = F.avg_pool2d(chip, CELL_PX)[0]
    inside = raster.valid & (F.avg_pool2d(valid[:, None].float(), CELL_PX)[0, 0] > 0.99)
    assert inside.float().mean() > 0.5 and not raster.valid.all()  # the map's invalid corner is in the area
    assert raster.features.dtype == torch.float16  # stored at half precision: 1e-3 relative
    torch.testing.assert_close(raster.features[:, inside].float(), expected[:, inside], atol=2e-3, rtol=0)


def test_grid_and_true_offsets_invert_each_other(sampler):
    raster = encode_feature_raster(
        PoolingEncoder(), sampler, sampler.geometry.frame, centre_xy(sampler), 20.0, cell_px=CELL_PX
    )
    assert raster.convergence_rad != 0.0  # UTM zone 32, 1.2 degrees west of its central meridian
    for east, north in [(0.0, 0.0), (12.5, -7.25), (-30.0, 44.0)]:
        x, y = raster.to_grid(east, north)
        assert raster.from_grid(x, y) == pytest.approx((east, north), abs=1e-9)
    x, y = raster.to_grid(0.0, 10.0)  # true north is grid north turned by the convergence
    assert math.atan2(x - raster.center_xy[0], y - raster.center_xy[1]) == pytest.approx(-raster.convergence_rad)


def test_windows_read_the_cells_around_a_point_and_nothing_outside(sampler):
    raster = encode_feature_raster(
        PoolingEncoder(), sampler, sampler.geometry.frame, centre_xy(sampler), 20.0, cell_px=CELL_PX
    )
    cell, size = raster.cell_m, raster.size
    row, col = 5, 9
    east, north = (col + 0.5 - size / 2) * cell, (size / 2 - row - 0.5) * cell
    features, confidences, valid, east_w, north_w = raster.window(east + 0.2 * cell, north - 0.3 * cell, 2)
    assert (east_w, north_w) == pytest.approx((east, north))
    torch.testing.assert_close(features, raster.features[:, row - 2 : row + 3, col - 2 : col + 3].float())
    assert torch.equal(valid, raster.valid[row - 2 : row + 3, col - 2 : col + 3])
    assert torch.equal(confidences, raster.confidences[row - 2 : row + 3, col - 2 : col + 3].float())
    features, _, valid, _, _ = raster.window(-(size / 2 + 1) * cell, 0.0, 2)  # left of the raster: 2 cells overlap
    assert not valid[:, :3].any() and torch.equal(features[:, :, :3], torch.zeros(3, 5, 3))
    torch.testing.assert_close(features[:, :, 3:], raster.features[:, size // 2 - 2 : size // 2 + 3, :2].float())


def test_real_model_stitched_features_match_one_crop_inside(sampler, monkeypatch):
    monkeypatch.setattr(feature_raster_module, "BLOCK_CELLS", 16)
    model = tiny_model()
    probe = model.map_refinement_features(torch.zeros(1, 3, 64, 64))[0][-1]
    cell_px = 64 // probe.shape[-1]
    half_m = 0.5 * 32 * cell_px * sampler.geometry.gsd_m
    raster = encode_feature_raster(model, sampler, sampler.geometry.frame, centre_xy(sampler), half_m, cell_px=cell_px)
    margin = feature_raster_module.MARGIN_CELLS
    chip, _ = sampler.crop(np.array([centre_xy(sampler)]), size_px=(raster.size + 2 * margin) * cell_px)
    with torch.inference_mode():
        whole = model.map_refinement_features(chip)[0][-1][0][:, margin:-margin, margin:-margin]
    inside = raster.valid.clone()
    inside[[0, -1], :] = inside[:, [0, -1]] = False
    difference = (raster.features.float() - whole).abs()[:, inside].mean() / whole[:, inside].abs().mean()
    assert difference < 0.05


def test_a_run_shares_the_raster_of_its_prior_discs_or_of_a_small_whole_map(sampler):
    from crossview.export.records import Prior
    from crossview.localize import dense_area

    frame, (x, y) = sampler.geometry.frame, centre_xy(sampler)
    bounds = sampler.bounds_xy()
    lat, lon = frame.to_latlon(x, y)
    near = dense_area(bounds, frame, [Prior("cli", 10.0, float(lat), float(lon)), None])
    assert not near.whole_map and near.center_xy == pytest.approx((x, y), abs=0.5)
    assert near.half_extent_m == pytest.approx(10.0 + 35.0, abs=0.5)  # the disc plus the templates' reach
    whole = dense_area(bounds, frame, [Prior()])  # no position prior: the whole 160 m map
    assert whole.whole_map and whole.half_extent_m == pytest.approx(80.0, rel=0.02)
    far_lat, far_lon = frame.to_latlon(x + 3000.0, y)  # a prior 3 km away, off the map
    apart = [Prior("cli", 10.0, float(lat), float(lon)), Prior("cli", 10.0, float(far_lat), float(far_lon))]
    clipped = dense_area(bounds, frame, apart)  # the box of both discs, clipped to the map
    assert not clipped.whole_map and near.half_extent_m < clipped.half_extent_m <= whole.half_extent_m
    assert dense_area(bounds, frame, [Prior("cli", 400.0, float(lat), float(lon))]).whole_map  # wide prior, small map


class CountingEncoder(PoolingEncoder):
    """:class:`PoolingEncoder` that counts the blocks it encodes (the probe of the channel count aside)."""

    def __init__(self):
        super().__init__()
        self.blocks = 0

    def map_refinement_features(self, chips):
        if chips.shape[-1] > feature_raster_module.ENCODER_MULTIPLE_PX:
            self.blocks += chips.shape[0]
        return super().map_refinement_features(chips)


def test_a_lazy_raster_encodes_each_block_once_when_a_window_first_needs_it(sampler, monkeypatch):
    monkeypatch.setattr(feature_raster_module, "BLOCK_CELLS", 16)  # 3 x 3 blocks of 16 cells
    half_m = 0.5 * 48 * CELL_PX * sampler.geometry.gsd_m
    eager = encode_feature_raster(
        PoolingEncoder(), sampler, sampler.geometry.frame, centre_xy(sampler), half_m, cell_px=CELL_PX
    )
    counting = CountingEncoder()
    lazy = encode_feature_raster(
        counting, sampler, sampler.geometry.frame, centre_xy(sampler), half_m, cell_px=CELL_PX, lazy=True
    )
    assert lazy.size == 48 and counting.blocks == 0 and not lazy.encoded.any()
    cell = lazy.cell_m
    north_west = (-(48 / 2 - 8) * cell, (48 / 2 - 8) * cell)  # the middle of the north-western block
    features, _, valid, _, _ = lazy.window(*north_west, 3)
    assert counting.blocks == 1 and lazy.encoded.sum() == 1 and bool(lazy.encoded[0, 0])
    expected, _, expected_valid, _, _ = eager.window(*north_west, 3)
    torch.testing.assert_close(features, expected)
    assert torch.equal(valid, expected_valid)
    lazy.window(*north_west, 3)  # already encoded: nothing more
    assert counting.blocks == 1
    lazy.window(0.0, 0.0, 5)  # cells 19 to 29 of both axes: only the middle block
    assert counting.blocks == 2 and bool(lazy.encoded[1, 1])
    lazy.ensure_all()
    assert counting.blocks == 9 and lazy.encoded.all()
    torch.testing.assert_close(lazy.features, eager.features)
    assert torch.equal(lazy.valid, eager.valid) and torch.equal(lazy.confidences, eager.confidences)


def test_stored_arrays_round_trip_and_inconsistent_ones_are_refused(sampler):
    from crossview.retrieval.feature_raster import FeatureRaster

    raster = encode_feature_raster(
        PoolingEncoder(), sampler, sampler.geometry.frame, centre_xy(sampler), 20.0, cell_px=CELL_PX
    )
    meta, arrays = raster.to_arrays()
    assert arrays["features"].dtype == np.float16 and arrays["valid"].dtype == np.bool_
    back = FeatureRaster.from_arrays(meta, arrays)
    assert torch.equal(back.features, raster.features) and torch.equal(back.valid, raster.valid)
    assert back.to_grid(3.0, -4.0) == pytest.approx(raster.to_grid(3.0, -4.0))
    with pytest.raises(ValueError, match="do not match size"):
        FeatureRaster.from_arrays({**meta, "size": raster.size + 1}, arrays)
    with pytest.raises(ValueError, match="validity"):
        FeatureRaster.from_arrays(meta, {**arrays, "valid": arrays["valid"].astype(np.uint8)})

"""build_index end to end on a GeoTIFF written with rasterio, with a tiny real model (random weights).

References: the model's own aerial branch on chips cut again through the index's sampler; the dataset mask of
the file read by rasterio; the checkpoint file's SHA-256 from hashlib.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from retrieval_fixtures import tiny_model, write_map

from crossview.checkpoints import save_checkpoint
from crossview.maps.raster import GeoRaster, MapError
from crossview.retrieval import (
    ChipIndex,
    IndexMismatchError,
    build_index,
    map_fingerprint,
    model_weights_sha256,
)
from crossview.retrieval.chips import MIN_VALID_FRACTION, ChipSampler, vigor_tile_extent_m

pytestmark = pytest.mark.usefixtures("single_torch_thread")

STRIDE_M = 16.0


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("build")
    path = write_map(folder / "map.tif")
    model = tiny_model()
    index = build_index(path, model, stride_m=STRIDE_M, batch_size=16, progress=False)
    return path, model, index


def test_index_records_its_map_model_and_chip_geometry(built):
    path, model, index = built
    raster = GeoRaster.read(path)
    meta = index.meta
    assert meta["map"]["fingerprint"] == map_fingerprint(raster) and meta["map"]["path"] == str(path)
    assert meta["model"]["sha256"] == model_weights_sha256(model) and meta["model"]["sha256_of"] == "weights"
    assert meta["model"]["architecture"] == "safa-resnet18-lite" and meta["model"]["aerial_size"] == 64
    assert meta["chips"]["stride_m"] == STRIDE_M and meta["chips"]["frame_epsg"] == 32632
    assert meta["chips"]["extent_m"] == pytest.approx(vigor_tile_extent_m(lat=raster.center_latlon().lat))
    assert meta["crossview_version"] and meta["build"]["chips_per_s"] > 0
    assert index.index_type == "flat" and index.dim == model.config["descriptor_dim"]


def test_indexed_chips_are_the_valid_lattice_points(built):
    path, _, index = built
    sampler = index.chip_sampler(GeoRaster.read(path))
    lattice = sampler.lattice(STRIDE_M)
    _, valid = sampler.crop(lattice)
    fraction = valid.flatten(1).float().mean(dim=1).numpy()
    expected = lattice[fraction >= MIN_VALID_FRACTION]
    np.testing.assert_array_equal(index.centers_xy, expected)
    assert 30 < len(index) < len(lattice)  # the masked corner and the map's edges are skipped


def test_own_chips_find_themselves_first(built):
    """Chips cut again at the stored centres and encoded anew retrieve their own chip at rank 1."""
    path, model, index = built
    chips, _ = index.chip_sampler(GeoRaster.read(path)).crop(index.centers_xy)
    with torch.inference_mode():
        descriptors = model.encode_aerial(chips).descriptor.numpy()
    np.testing.assert_allclose(descriptors, index.vectors(np.arange(len(index))), atol=1e-5)
    result = index.search(descriptors, 3)
    np.testing.assert_array_equal(result.ids[:, 0], np.arange(len(index)))
    assert (result.scores[:, 0] > result.scores[:, 1]).all()


def test_chip_sampler_refuses_another_map(built, tmp_path):
    _, _, index = built
    other = GeoRaster.read(write_map(tmp_path / "other.tif", seed=1))
    with pytest.raises(IndexMismatchError, match="another map"):
        index.chip_sampler(other)
    assert isinstance(index.chip_sampler(other, check_map=False), ChipSampler)


def test_checkpoint_models_record_the_file_sha256_and_load_checks_it(built, tmp_path):
    path, model, index = built
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", model=model)
    from_file = build_index(GeoRaster.read(path), checkpoint, stride_m=40.0, progress=False)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert (from_file.model_sha256, from_file.meta["model"]["sha256_of"]) == (digest, "checkpoint-file")
    assert from_file.meta["map"]["path"] is None  # built from an in-memory raster
    saved = from_file.save(tmp_path / "a.idx")
    ChipIndex.load(saved, model_sha256=digest, map_fingerprint=index.map_fingerprint)
    with pytest.raises(IndexMismatchError, match="built with model"):
        ChipIndex.load(saved, model_sha256=index.model_sha256)


def test_progress_bar_only_when_asked(built, capsys):
    path, model, _ = built
    build_index(path, model, stride_m=40.0, progress=False)
    assert "chip" not in capsys.readouterr().err
    build_index(path, model, stride_m=40.0)  # stderr is not a terminal under pytest
    assert "chip" not in capsys.readouterr().err
    build_index(path, model, stride_m=40.0, progress=True)
    assert "encoding chips" in capsys.readouterr().err


def test_maps_without_valid_chips_and_bad_settings_fail_clearly(built, tmp_path):
    path, model, _ = built
    raster = GeoRaster.read(path)
    empty = GeoRaster(array=raster.array, crs=raster.crs, transform=raster.transform, valid=np.zeros((320, 320), bool))
    with pytest.raises(MapError, match="no chip to index"):
        build_index(empty, model, progress=False)
    with pytest.raises(MapError, match="not found"):
        build_index(tmp_path / "missing.tif", model)
    with pytest.raises(Exception, match="stride_m"):
        build_index(path, model, stride_m=0.0)


def test_index_stores_the_maps_feature_raster_for_the_dense_search(built, tmp_path):
    """The stored raster is the model's finest features of the whole map (as the dense search encodes them),
    survives save and load, and is left out on request."""
    from crossview.encoders.decoder import LEVEL_STRIDES
    from crossview.retrieval.feature_raster import encode_feature_raster

    path, model, index = built
    stored = index.feature_raster
    west, south, east, north = index.meta["map"]["bounds_xy"]
    assert east - west == pytest.approx(160.0, rel=0.05) and north - south == pytest.approx(160.0, rel=0.05)
    assert stored.size * stored.cell_m >= max(east - west, north - south)
    sampler = index.chip_sampler(GeoRaster.read(path))
    centre = (0.5 * (west + east), 0.5 * (south + north))
    fresh = encode_feature_raster(model, sampler, index.frame, centre, stored.size * stored.cell_m / 2, cell_px=4)
    assert LEVEL_STRIDES[-1] == 4 and fresh.size == stored.size
    torch.testing.assert_close(stored.features, fresh.features)
    assert torch.equal(stored.valid, fresh.valid) and 0.5 < stored.valid.float().mean() < 0.95  # the masked corner
    loaded = ChipIndex.load(index.save(tmp_path / "with.idx")).feature_raster
    assert torch.equal(loaded.features, stored.features) and torch.equal(loaded.confidences, stored.confidences)
    assert torch.equal(loaded.valid, stored.valid) and loaded.encoder is None
    assert loaded.cell_m == stored.cell_m and np.array_equal(loaded.center_xy, stored.center_xy)
    without = build_index(path, model, stride_m=40.0, progress=False, dense_features=False)
    assert without.feature_raster is None and ChipIndex.load(without.save(tmp_path / "none.idx")).feature_raster is None

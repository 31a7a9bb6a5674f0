"""OpenStreetMap as the map, end to end through the CLI: the synthetic town's ``osm.osm`` rasterised by
``crossview fetch``, indexed by ``crossview index`` and searched by ``crossview locate`` with an OSM model: the
real ``safa-resnet18-lite-osm`` at tiny sizes, randomly initialised, for the plumbing (fast), and the shipped
``synth-osm-v2`` for the poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from locate_fixtures import make_town, write_priors

from crossview.accuracy import pose_errors
from crossview.checkpoints import save_checkpoint
from crossview.cli import main as cli_main
from crossview.encoders import get_model
from crossview.export import read_results
from crossview.maps.raster import GeoRaster
from crossview.retrieval import ChipIndex
from crossview.retrieval.chips import ChipSampler, chip_geometry_for_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TINY = {"aerial_size": 64, "pano_height": 32, "pano_width": 128, "polar_height": 32, "polar_width": 128}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("osm-locate")
    town = make_town(root / "world", panoramas=4, pinholes=0)
    priors = write_priors(town, root / "priors.csv")
    with rasterio.open(town / "map.tif") as src:
        west, south, east, north = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    osm_map = root / "osm.tif"
    argv = ["fetch", "--source", str(town / "osm.osm"), "--bbox", f"{west},{south},{east},{north}"]
    assert cli_main([*argv, "--gsd", "0.5", "--out", str(osm_map)]) == 0
    torch.manual_seed(0)
    model = get_model("safa-resnet18-lite-osm", **TINY).eval()
    checkpoint = save_checkpoint(root / "osm-model.pt", model=model)
    return {"town": town, "priors": priors, "map": osm_map, "model": checkpoint, "aerial": town / "map.tif"}


def test_osm_chips_hold_whole_class_indices(scene):
    raster = GeoRaster.read(scene["map"])
    geometry = chip_geometry_for_model(get_model("safa-resnet18-lite-osm", **TINY).config, raster)
    assert geometry.modality == "osm"
    sampler = ChipSampler(raster, geometry)
    chips, valid = sampler.crop(sampler.lattice(10.0)[:4])
    assert chips.shape == (4, 3, 64, 64) and valid.any()
    assert torch.equal(chips, chips.round()) and chips.max() > 1  # classes, not [0, 1] colours or blends
    legend_sizes = [int(raster.array[band].max()) for band in range(3)]
    assert all(chips[:, band].max() <= legend_sizes[band] for band in range(3))


def test_index_and_locate_work_on_an_osm_map(scene, tmp_path, capsys):
    index = tmp_path / "osm.idx"
    argv = ["index", "--map", str(scene["map"]), "--model", str(scene["model"]), "--out", str(index)]
    assert cli_main(argv) == 0
    loaded = ChipIndex.load(index)
    assert len(loaded) > 10 and loaded.geometry.modality == "osm"
    source = ["--source", str(scene["town"] / "osm.osm"), "--cache-dir", str(tmp_path / "tiles")]  # a local extract
    for where in (["--index", str(index)], ["--map", str(scene["map"])], source):
        out = tmp_path / f"{where[0][2:]}.geojson"
        argv = ["locate", str(scene["town"] / "panorama"), *where, "--model", str(scene["model"])]
        argv += ["--priors", str(scene["priors"]), "--out", str(out), "--workers", "0"]
        assert cli_main(argv) == 0
        assert "4 located, 0 failed of 4 images" in capsys.readouterr().err
        results, _ = read_results(out)
        errors = pose_errors(results, scene["town"] / "poses.csv")
        # Within each prior disc: 30 m around a point at most 10 m from the truth.
        assert np.max([e.position_m for e in errors]) < 40.0


def test_an_aerial_model_on_the_osm_map_and_the_osm_model_on_imagery_fail_before_any_image(scene, tmp_path, capsys):
    common = [str(scene["town"] / "panorama"), "--priors", str(scene["priors"]), "--out", str(tmp_path / "r.csv")]
    assert cli_main(["locate", *common, "--map", str(scene["map"]), "--model", "synth-v2"]) != 0
    assert "OSM class raster" in capsys.readouterr().err
    assert cli_main(["locate", *common, "--map", str(scene["aerial"]), "--model", str(scene["model"])]) != 0
    assert "expects OSM class rasters" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_the_shipped_osm_model_locates_the_easy_cases(scene, tmp_path, capsys):
    out = tmp_path / "shipped.geojson"
    argv = ["locate", str(scene["town"] / "panorama"), "--map", str(scene["map"]), "--model", "synth-osm-v2"]
    assert cli_main([*argv, "--priors", str(scene["priors"]), "--out", str(out), "--workers", "0"]) == 0
    results, meta = read_results(out)
    assert meta["model"] == "synth-osm-v2" and [r.status for r in results] == ["ok"] * 4
    errors = pose_errors(results, scene["town"] / "poses.csv")
    # Panoramas with a 30 m prior: three of the four within 5 m and 10 degrees (measured: 3.4, 1.9 and 2.9 m, 1-2.5
    # degrees; the fourth 13.7 m off, turned by 178 degrees).
    close = [e for e in errors if e.position_m <= 5.0 and e.heading_deg <= 10.0]
    assert len(close) >= 3, [(round(e.position_m, 1), round(e.heading_deg, 1)) for e in errors]

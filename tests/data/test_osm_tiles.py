"""OSM class tiles: ``crossview synth`` writes ``<City>/osm/`` beside ``satellite/`` (same names, same pixels),
``python -m crossview.data.synth.osmtiles`` adds them to an older world, and VigorDataset(map="osm") reads them
(nearest-neighbour resize, the same flips and rotations as the aerial tiles, no colour jitter)."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pyproj import Transformer

from crossview.data.synth.aerial import BUILDING_BASE, AerialRenderer
from crossview.data.synth.osmtiles import main as osmtiles_main
from crossview.data.synth.osmtiles import tile_window
from crossview.data.synth.places import place_for_seed, select_places
from crossview.data.synth.projection import PixelGrid
from crossview.data.synth.world import city_model, generate_world
from crossview.data.vigor import (
    DatasetFileError,
    VigorDataset,
    class_tile_png_bytes,
    format_satellite_name,
    load_class_tile,
    nearest_indices,
)
from crossview.maps.osm import BAND_NAMES, CLASS_NAMES, load_osm_features, rasterize_osm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vigor_fixtures import WORLD_PX, build_city, latlon_of

CITY = "Bergen"
WORLD = dict(seed=1, cities=[CITY], size_m=50.0, panoramas=4, pano_size=(32, 64))
EQUATOR_M = 2 * math.pi * 6378137.0
ZOOM20_PIXEL_M = EQUATOR_M / (256 * 2**20)
LEGEND = {band: list(CLASS_NAMES[band]) for band in BAND_NAMES}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("osm-world") / "world"
    generate_world(out, **WORLD)
    return out


def _tiles(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("satellite_*.png"))


def test_synth_writes_an_osm_tile_for_every_aerial_tile(world):
    city = world / CITY
    names = _tiles(city / "satellite")
    assert names and _tiles(city / "osm") == names
    with Image.open(city / "osm" / names[0]) as image:
        assert image.mode == "RGB" and image.size == (640, 640)  # 3 bands of uint8 class indices
        assert json.loads(image.info["CLASSES"]) == LEGEND
    summary = json.loads((world / "synth.json").read_text())
    assert summary["towns"][0]["osm_tiles"] == len(names)


def _tile_transform(name: str) -> Affine:
    """EPSG:3857 grid of a VIGOR tile: centre from its name (pyproj), snapped to the global zoom-20 pixel grid."""
    lat, lon = (float(v) for v in name[len("satellite_") : -len(".png")].split("_"))
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
    col, row = round((x + EQUATOR_M / 2) / ZOOM20_PIXEL_M), round((EQUATOR_M / 2 - y) / ZOOM20_PIXEL_M)
    left, top = (col - 320) * ZOOM20_PIXEL_M - EQUATOR_M / 2, EQUATOR_M / 2 - (row - 320) * ZOOM20_PIXEL_M
    return Affine(ZOOM20_PIXEL_M, 0.0, left, 0.0, -ZOOM20_PIXEL_M, top)


def test_osm_tiles_are_rasterize_osm_of_the_tile_window(world):
    city = world / CITY
    features = load_osm_features(city / "osm.osm")
    for name in _tiles(city / "osm")[::3]:
        expected = rasterize_osm(features, crs="EPSG:3857", transform=_tile_transform(name), width=640, height=640)
        tile, legend = load_class_tile(city / "osm" / name)
        assert json.loads(legend) == LEGEND
        np.testing.assert_array_equal(tile[0], expected.array[0])  # areas: polygons, no widths involved
        # ways and nodes: widths use the projection scale at the raster centre (town block vs lone tile)
        assert (tile[1:] == expected.array[1:]).mean() > 0.9999
        assert (tile > 0).any()


def test_convention_osm_buildings_lie_on_the_aerial_tiles_buildings(world):
    """The class raster the synthetic orthophoto is coloured from (its ground classes) has its buildings where
    the OSM tile of the same name has them."""
    place = place_for_seed(select_places([CITY])[0], WORLD["seed"])
    model = city_model(place, seed=WORLD["seed"], size_m=WORLD["size_m"])
    renderer = AerialRenderer(model.town, model.projection, noise_key=model.noise_key)
    transform = ~Affine(ZOOM20_PIXEL_M, 0.0, -EQUATOR_M / 2, 0.0, -ZOOM20_PIXEL_M, EQUATOR_M / 2)
    best = 0.0
    for name in _tiles(world / CITY / "osm"):
        tile_t = _tile_transform(name)
        col0, row0 = (round(v) for v in transform @ (tile_t.c, tile_t.f))
        classes = renderer.render(PixelGrid(col0, row0, 640, 640), with_ortho=False).classes
        rgb_buildings = classes >= BUILDING_BASE
        osm_buildings = load_class_tile(world / CITY / "osm" / name)[0][0] == 1 + LEGEND["areas"].index("building")
        if rgb_buildings.sum() < 2000:
            continue
        iou = (rgb_buildings & osm_buildings).sum() / (rgb_buildings | osm_buildings).sum()
        assert iou > 0.99, (name, iou)
        best = max(best, iou)
        break
    assert best > 0.99, "no tile with buildings"


def test_osmtiles_command_adds_the_tiles_to_an_older_world(world, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(world, old)
    shutil.rmtree(old / CITY / "osm")
    dataset_error = pytest.raises(DatasetFileError, match=r"Bergen/osm.*python -m crossview\.data\.synth\.osmtiles")
    with dataset_error:
        VigorDataset(old, split="cross", cities=[CITY], map="osm")
    assert osmtiles_main([str(old)]) == 0
    names = _tiles(old / CITY / "osm")
    assert names == _tiles(world / CITY / "osm")
    for name in names:  # the same bytes as crossview synth's
        assert (old / CITY / "osm" / name).read_bytes() == (world / CITY / "osm" / name).read_bytes()
    assert "0 kept" in capsys.readouterr().out
    assert osmtiles_main([str(old)]) == 0  # a second run keeps what is there
    assert f"0 OSM tiles written, {len(names)} kept" in capsys.readouterr().out
    assert osmtiles_main([str(tmp_path / "nowhere")]) == 2
    assert "error:" in capsys.readouterr().err


def test_vigor_reader_gives_osm_tiles_as_class_indices(world):
    dataset = VigorDataset(world, split="cross", cities=[CITY], map="osm", aerial_size=128, seed=0)
    item = dataset[0]
    assert item["aerial"].shape == (3, 128, 128) and item["aerial"].dtype == torch.uint8
    assert json.loads(dataset.map_tags()["CLASSES"]) == LEGEND
    full, _ = load_class_tile(world / CITY / "osm" / item["sat_name"])
    # nearest neighbour: the source pixel under each target centre, (i + 0.5) * 640 / 128 = 5 i + 2.5 -> 5 i + 2
    np.testing.assert_array_equal(item["aerial"].numpy(), full[:, 2::5, 2::5])
    assert dataset.load_satellite(item["sat_name"]).dtype == torch.uint8
    aerial = VigorDataset(world, split="cross", cities=[CITY], aerial_size=128, seed=0)[0]
    assert aerial["aerial"].dtype == torch.float32 and aerial["sat_name"] == item["sat_name"]
    for key in ("pano_px_in_tile", "mpp", "heading_deg", "pano_name"):
        assert str(item[key]) == str(aerial[key])


@settings(max_examples=150, deadline=None)
@given(
    col=st.integers(320, WORLD_PX - 320),
    row=st.integers(int(0.02 * WORLD_PX), int(0.98 * WORLD_PX)),  # up to about +-85 degrees of latitude
)
def test_convention_tile_windows_round_trip_through_tile_names(col, row):
    """A tile centred on global zoom-20 pixel (col, row), named with 8 decimals, is found back exactly there."""
    lat, lon = latlon_of(col, row)  # the inverse Web Mercator formula, independent of crossview
    window = tile_window(format_satellite_name(lat, lon))
    assert (window.col0, window.row0) == (col - 320, row - 320)


def test_convention_nearest_resize_takes_the_pixel_under_each_centre():
    assert nearest_indices(640, 64).tolist() == list(range(5, 640, 10))
    assert nearest_indices(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert nearest_indices(10, 3).tolist() == [1, 5, 8]  # centres 1.67, 5, 8.33


# ---- augmentation on a tiny VIGOR tree whose OSM tiles encode the aerial tiles' colours ------------------------


def _classes_of(rgb_u8: np.ndarray) -> np.ndarray:
    """(3, H, W) uint8 class indices from a vigor_fixtures tile (R, G < 200; B in {0, 255})."""
    return np.stack([rgb_u8[0] // 32, rgb_u8[1] // 25, (rgb_u8[2] // 255) * 3]).astype(np.uint8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vigor-osm")
    build_city(root, "Alpha", 40.7128, -74.006, 4)
    (root / "Alpha" / "osm").mkdir()
    for path in (root / "Alpha" / "satellite").iterdir():
        rgb = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
        (root / "Alpha" / "osm" / path.name).write_bytes(class_tile_png_bytes(_classes_of(rgb), json.dumps(LEGEND)))
    return root


def test_flips_and_rotations_apply_to_osm_tiles_as_to_aerial_tiles(tree):
    options = dict(split="cross", cities=["Alpha"], augment=True, random_roll=True, semi_positives=True, seed=4)
    satellite = VigorDataset(tree, **options)
    osm = VigorDataset(tree, map="osm", **options)
    moved = 0
    for index in range(len(osm)):
        for epoch in range(3):
            satellite.set_epoch(epoch)
            osm.set_epoch(epoch)
            a, b = satellite[index], osm[index]
            rgb = np.round(a["aerial"].numpy() * 255).astype(np.uint8)
            np.testing.assert_array_equal(b["aerial"].numpy(), _classes_of(rgb))
            semi = np.round(a["semi_aerial"].numpy() * 255).astype(np.uint8)
            np.testing.assert_array_equal(b["semi_aerial"].numpy(), np.stack([_classes_of(s) for s in semi]))
            torch.testing.assert_close(a["pano"], b["pano"])
            assert a["heading_deg"] == b["heading_deg"]
            torch.testing.assert_close(a["pano_px_in_tile"], b["pano_px_in_tile"])
            moved += not torch.equal(b["aerial"], osm.load_satellite(b["sat_name"]))
    assert moved > 0  # the tiles were flipped or turned


def test_photometric_jitter_leaves_osm_tiles_alone(tree):
    plain = VigorDataset(tree, split="cross", cities=["Alpha"], map="osm", seed=1)
    jittered = VigorDataset(tree, split="cross", cities=["Alpha"], map="osm", photometric=True, seed=1)
    a, b = plain[0], jittered[0]
    assert torch.equal(a["aerial"], b["aerial"])
    assert not torch.equal(a["pano"], b["pano"])  # the panorama is still jittered

"""End-to-end tests of ``crossview synth``: files, georeferencing, OSM, determinism and renderer/map agreement.

The worlds are tiny (60 m towns, five 512x256 panoramas) so the module stays fast. The key check is geometric:
a panorama or pinhole pixel that sees bare ground must show the orthophoto's colour at the ground point DESIGN's
geometry predicts (crossview.geometry's camera models, Pose2 with the meridian convergence, image_to_ground,
then Web Mercator), and predictions that ignore the convergence must do measurably worse.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import shapely
import torch
from PIL import Image

from crossview.cli import build_parser
from crossview.data.synth import world as world_module
from crossview.data.synth.command import COMMAND
from crossview.data.synth.places import place_for_seed, select_places
from crossview.data.synth.render import HIT_GROUND, RayCaster, SceneGeometry, panorama_view, pinhole_view
from crossview.data.synth.world import POSES_HEADER, city_model, generate_world
from crossview.data.vigor import VigorDataset, parse_pano_name
from crossview.errors import ConfigError
from crossview.geometry.cameras import PanoramaCamera, PinholeCamera
from crossview.geometry.frames import LocalFrame
from crossview.geometry.ground import image_to_ground
from crossview.geometry.pose import Pose2
from crossview.geometry.webmercator import latlon_to_pixel
from crossview.imagemeta import read_image_metadata
from crossview.inputs import choose_camera

EARTH_EQUATOR_M = 2 * math.pi * 6378137.0
ZOOM20_PIXEL_M = EARTH_EQUATOR_M / (256 * 2**20)
CITY = "Bergen"  # UTM zone 32 by Norway's exception, convergence about -3.2 degrees: a demanding place
WORLD = dict(
    seed=3,
    cities=[CITY],
    size_m=60.0,
    panoramas=5,
    pinhole_per_pano=1,
    pano_size=(256, 512),
    pinhole_size=(240, 320),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "world"
    generate_world(out, **WORLD)
    return out


@pytest.fixture(scope="module")
def poses(world) -> list[dict[str, str]]:
    with open(world / CITY / "poses.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---- layout and files ---------------------------------------------------------------------------------------


def test_world_has_the_vigor_layout(world):
    city = world / CITY
    for name in ("map.tif", "osm.osm", "poses.csv"):
        assert (city / name).is_file()
    assert len(list((city / "panorama").glob("*.jpg"))) == 5
    assert len(list((city / "pinhole").glob("*.jpg"))) == 5
    assert len(list((city / "satellite").glob("satellite_*.png"))) >= 4
    for name in ("satellite_list.txt", "pano_label_balanced.txt", "same_area_balanced_train.txt"):
        assert (world / "splits" / CITY / name).is_file()
    summary = json.loads((world / "synth.json").read_text())
    assert summary["settings"]["seed"] == 3 and summary["towns"][0]["name"] == CITY
    assert not [p for p in world.parent.iterdir() if p.name.startswith(".")], "a temporary folder was left behind"


def test_poses_csv_lists_every_image_with_its_pose(world, poses):
    city = world / CITY
    with open(city / "poses.csv", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == list(POSES_HEADER)
    images = {row["image"] for row in poses}
    on_disk = {p.relative_to(city).as_posix() for p in [*city.glob("panorama/*.jpg"), *city.glob("pinhole/*.jpg")]}
    assert images == on_disk and len(poses) == 10
    for row in poses:
        lat, lon, heading = float(row["lat"]), float(row["lon"]), float(row["heading_deg"])
        assert 1.5 <= float(row["camera_height_m"]) <= 3.0
        size = Image.open(city / row["image"]).size
        if row["camera"] == "panorama":
            record = parse_pano_name(Path(row["image"]).name)
            assert (record.lat, record.lon) == (lat, lon)
            assert heading == 0.0 and float(row["fov_deg"]) == 360.0 and size == (512, 256)
        else:
            assert row["camera"] == "pinhole" and size == (320, 240)
            assert 0.0 <= heading < 360.0 and 60.0 <= float(row["fov_deg"]) <= 110.0
            # A phone's EXIF: the whole-millimetre 35 mm focal length gives the field of view within 2 degrees.
            camera = choose_camera(read_image_metadata(city / row["image"]), camera="auto", hfov_deg=None, height_m=2.0)
            assert camera.model == "pinhole" and abs(camera.hfov_deg - float(row["fov_deg"])) < 2.0
            pano_id = Path(row["image"]).stem.rsplit("_", 1)[0]
            assert any(Path(r["image"]).name.startswith(pano_id + ",") for r in poses)


def test_convention_map_tif_is_on_the_global_zoom20_grid(world, poses):
    with rasterio.open(world / CITY / "map.tif") as src:
        assert src.crs.to_epsg() == 3857
        assert src.count == 3 and src.dtypes == ("uint8", "uint8", "uint8")
        assert src.descriptions == ("red", "green", "blue")
        t = src.transform
        assert t.b == 0 and t.d == 0
        assert math.isclose(t.a, ZOOM20_PIXEL_M, rel_tol=1e-12) and math.isclose(t.e, -ZOOM20_PIXEL_M, rel_tol=1e-12)
        col0 = (t.c + EARTH_EQUATOR_M / 2) / ZOOM20_PIXEL_M
        row0 = (EARTH_EQUATOR_M / 2 - t.f) / ZOOM20_PIXEL_M
        assert abs(col0 - round(col0)) < 1e-6 and abs(row0 - round(row0)) < 1e-6
        tags = src.tags()
        width, height = src.width, src.height
    assert tags["source"] == "crossview-synth" and tags["seed"] == "3" and tags["city"] == CITY
    assert not [k for k in tags if "time" in k.lower() or "date" in k.lower()]
    for row in poses:  # every aerial tile around a panorama (<= 640 px away) lies inside the map
        col, row_px = latlon_to_pixel(lat=float(row["lat"]), lon=float(row["lon"]), zoom=20)
        assert 640 <= col - col0 <= width - 640 and 640 <= row_px - row0 <= height - 640


def test_osm_file_reads_with_osmnx(world):
    osmnx = pytest.importorskip("osmnx")
    path = world / CITY / "osm.osm"
    features = osmnx.features_from_xml(path)
    buildings = features[features["building"].notna()]
    assert len(buildings) >= 5
    assert set(buildings.geom_type) <= {"Polygon", "MultiPolygon"}
    heights = buildings["height"].astype(float)
    levels = buildings["building:levels"].astype(int)
    assert (heights > 3).all() and (levels >= 1).all()
    highways = set(features["highway"].dropna())
    assert {"primary", "residential"} <= highways
    assert features[features["highway"] == "primary"]["lanes"].astype(int).eq(4).all()
    assert (features["natural"] == "tree").sum() >= 3
    assert (features["landuse"] == "grass").any()
    area_tags = {key: set(features[key].dropna()) for key in ("amenity", "leisure", "natural") if key in features}
    assert area_tags.get("amenity", set()) <= {"parking"} and area_tags.get("leisure", set()) <= {"park"}
    # <bounds> is the map's envelope.
    bounds = ET.parse(path).getroot().find("bounds").attrib
    with rasterio.open(world / CITY / "map.tif") as src:
        west, south, east, north = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    for key, value in (("minlat", south), ("minlon", west), ("maxlat", north), ("maxlon", east)):
        assert math.isclose(float(bounds[key]), value, abs_tol=1e-7), key


def test_vigor_reader_loads_the_world(world):
    for train in (True, False):
        dataset = VigorDataset(world, split="same", train=train, cities=[CITY])
        item = dataset[0]
        assert item["pano"].shape == (3, 256, 512) and item["aerial"].shape == (3, 640, 640)
        assert 160 <= item["pano_px_in_tile"][0] < 480 and 160 <= item["pano_px_in_tile"][1] < 480
    both = len(VigorDataset(world, split="same", train=True, cities=[CITY]))
    assert both + len(VigorDataset(world, split="same", train=False, cities=[CITY])) == 5


def test_cameras_stand_on_streets_clear_of_obstacles(poses, model):
    town = model.town
    streets = shapely.union_all([r.corridor(r.cls.width_m / 2 + r.cls.sidewalk_m) for r in town.roads])
    buildings = shapely.union_all([b.footprint() for b in town.buildings])
    cars = shapely.union_all([c.box.polygon() for c in town.cars])
    positions = []
    for row in poses:
        if row["camera"] != "panorama":
            continue
        x, y = model.projection.local_of(lat=float(row["lat"]), lon=float(row["lon"]))
        point = shapely.Point(float(x), float(y))
        assert streets.contains(point), f"{row['image']} is not on a street or sidewalk"
        assert point.distance(buildings) > 0.9 and point.distance(cars) > 0.5
        assert all(math.hypot(t.x - point.x, t.y - point.y) > t.trunk_radius_m + 0.5 for t in town.trees)
        positions.append((point.x, point.y))
    gaps = [math.dist(a, b) for k, a in enumerate(positions) for b in positions[k + 1 :]]
    assert min(gaps) > 1.0


def test_command_module_imports_no_heavy_dependency():
    code = "import sys, crossview.data.synth.command; sys.exit('torch' in sys.modules or 'rasterio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---- renderer / map / geometry agreement ------------------------------------------------------------------------


def _bilinear(image: np.ndarray, col: np.ndarray, row: np.ndarray) -> np.ndarray:
    """(N, 3) colours of a (3, H, W) raster at continuous edge-based pixel coordinates (col, row)."""
    u, v = col - 0.5, row - 0.5
    c0, r0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - c0, v - r0
    top = image[:, r0, c0] * (1 - fu) + image[:, r0, c0 + 1] * fu
    bottom = image[:, r0 + 1, c0] * (1 - fu) + image[:, r0 + 1, c0 + 1] * fu
    return (top * (1 - fv) + bottom * fv).T


@dataclass
class _Truth:
    """The town's model (rebuilt from the seed) for choosing which pixels see bare ground."""

    projection: object
    town: object
    caster: RayCaster
    overlays: shapely.Geometry  # where the orthophoto shows something above the ground, slightly grown
    ortho: np.ndarray  # map.tif, (3, H, W) float32
    origin_px: tuple[int, int]  # its top-left corner on the global zoom-20 grid (col, row)


@pytest.fixture(scope="module")
def model(world) -> _Truth:
    town_model = city_model(
        place_for_seed(select_places([CITY])[0], WORLD["seed"]), seed=WORLD["seed"], size_m=WORLD["size_m"]
    )
    town = town_model.town
    shapes = [shapely.Point(t.x, t.y).buffer(t.crown_radius_m + 0.15) for t in town.trees]
    shapes += [c.box.polygon().buffer(0.15) for c in town.cars] + [b.footprint().buffer(0.15) for b in town.buildings]
    shapes += [shapely.LineString(f.points).buffer(0.25) for f in town.fences]
    with rasterio.open(world / CITY / "map.tif") as src:
        ortho = src.read().astype(np.float32)
        col0 = round((src.transform.c + EARTH_EQUATOR_M / 2) / ZOOM20_PIXEL_M)
        row0 = round((EARTH_EQUATOR_M / 2 - src.transform.f) / ZOOM20_PIXEL_M)
    overlays = shapely.union_all(shapes)
    shapely.prepare(overlays)
    return _Truth(town_model.projection, town, RayCaster(SceneGeometry(town)), overlays, ortho, (col0, row0))


def _ground_errors(world, model, row, heading_offsets_deg):
    """|JPEG - map.tif| colour errors (mean over RGB) of the pixels that see bare ground, one array per heading
    offset, and which of those pixels see the ground farther than 2.5 m (where a rotation moves points most)."""
    city = world / CITY
    col0, row0 = model.origin_px
    image = np.asarray(Image.open(city / row["image"]).convert("RGB")).astype(np.float64)
    height, width = image.shape[:2]
    lat, lon, cam_h = float(row["lat"]), float(row["lon"]), float(row["camera_height_m"])
    heading = float(row["heading_deg"])
    frame = LocalFrame.from_center(lat=lat, lon=lon)  # the panorama's UTM zone: independent of the town's frame
    x, y = frame.to_xy(lat=lat, lon=lon)
    convergence = frame.convergence_deg(lat=lat, lon=lon)
    if row["camera"] == "panorama":
        camera = PanoramaCamera(width, height)
        view = panorama_view(width, height, heading - convergence)
    else:
        camera = PinholeCamera.from_hfov(width, height, float(row["fov_deg"]))
        view = pinhole_view(width, height, float(row["fov_deg"]), heading - convergence)
    # Which pixels see bare ground within 8 m (selection only: the colours compared come from the files).
    town_x, town_y = model.projection.local_of(lat=lat, lon=lon)
    kind, distance = model.caster.hits(view, float(town_x), float(town_y), cam_h)
    vs, us = np.nonzero((kind == HIT_GROUND) & (distance < 8.0))
    far = distance[vs, us] > 2.5
    uv = torch.tensor(np.stack([us + 0.5, vs + 0.5], axis=-1), dtype=torch.float64)
    errors, keep = [], None
    for offset in heading_offsets_deg:
        pose = Pose2.from_true_heading_deg(torch.tensor(x, dtype=torch.float64), y, heading + offset, convergence)
        ground_xy, valid = image_to_ground(uv, pose, camera, cam_h)
        g_lat, g_lon = frame.to_latlon(ground_xy[:, 0].numpy(), ground_xy[:, 1].numpy())
        if keep is None:  # the true ground points must be bare in the orthophoto too
            gx, gy = model.projection.local_of(lat=g_lat, lon=g_lon)
            keep = valid.numpy() & ~shapely.contains_xy(model.overlays, gx, gy)
        col, row_px = latlon_to_pixel(lat=g_lat, lon=g_lon, zoom=20)
        expected = _bilinear(model.ortho, np.asarray(col) - col0, np.asarray(row_px) - row0)
        errors.append(np.abs(expected - image[vs, us]).mean(axis=1)[keep])
    return errors, far[keep]


def test_convention_headings_are_true_north_and_images_agree_with_the_map(world, model, poses):
    """Ground seen in a panorama or pinhole view is where DESIGN's geometry puts it on the map (with convergence)."""
    pooled: dict[str, list[np.ndarray]] = {"right": [], "grid north": [], "5 deg off": []}
    for row in poses:
        lat, lon = float(row["lat"]), float(row["lon"])
        convergence = LocalFrame.from_center(lat=lat, lon=lon).convergence_deg(lat=lat, lon=lon)
        assert convergence < -3.0  # Bergen: large enough for the negative controls to see it
        errors, far = _ground_errors(world, model, row, [0.0, convergence, 5.0])
        right = errors[0]
        assert right.size > 200, f"{row['image']}: too few bare-ground pixels to compare"
        # JPEG noise only: a few levels on average, never a different texture.
        assert right.mean() < 3.0, f"{row['image']}: mean colour error {right.mean():.2f}"
        assert np.percentile(right, 95) < 8.0, f"{row['image']}: 95th percentile {np.percentile(right, 95):.2f}"
        for name, error in zip(pooled, errors, strict=True):
            pooled[name].append(error[far])
    means = {name: float(np.concatenate(values).mean()) for name, values in pooled.items()}
    # Negative controls: taking the true heading as a grid heading (convergence ignored, 3.2 degrees here) or
    # turning it by 5 degrees misplaces the ground texture, visibly.
    assert means["grid north"] > 2.0 * means["right"], means
    assert means["5 deg off"] > 2.0 * means["right"], means


# ---- determinism ------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(world, tmp_path):
    again = tmp_path / "again"
    generate_world(again, **WORLD)
    assert _tree_digest(again) == _tree_digest(world)


def test_another_seed_gives_another_world(world, tmp_path):
    other = tmp_path / "other"
    generate_world(other, **{**WORLD, "seed": 4, "pinhole_per_pano": 0, "panoramas": 1, "pano_size": (32, 64)})
    assert (other / CITY / "map.tif").read_bytes() != (world / CITY / "map.tif").read_bytes()
    names = {p.name for p in (other / CITY / "panorama").iterdir()}
    assert not names & {p.name for p in (world / CITY / "panorama").iterdir()}


# ---- command line ---------------------------------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    return build_parser([COMMAND]).parse_args(["synth", *argv])


def test_cli_places_towns_in_their_hemispheres(world, tmp_path, capsys):
    out = tmp_path / "south-west"
    args = _args("--out", str(out), "--city", "SaoPaulo", "--size-m", "50", "--panoramas", "1", "--pano-size", "64x32")
    assert COMMAND.run(args) == 0
    assert "wrote" in capsys.readouterr().out
    expected = {"SaoPaulo": (out, -23.5505, -46.6333), CITY: (world, 60.3913, 5.3221)}  # south-west, north-east
    for name, (root, lat, lon) in expected.items():
        with rasterio.open(root / name / "map.tif") as src:
            centre = src.xy(src.height / 2, src.width / 2, offset="ul")
            c_lon, c_lat = rasterio.warp.transform(src.crs, "EPSG:4326", [centre[0]], [centre[1]])
        assert np.sign(c_lat[0]) == np.sign(lat) and np.sign(c_lon[0]) == np.sign(lon)
        assert abs(c_lat[0] - lat) < 0.1 and abs(c_lon[0] - lon) < 0.2  # the seed moves a town by up to 8 km
    assert json.loads((out / "synth.json").read_text())["towns"][0]["utm_epsg"] == 32723  # UTM 23 south


def test_bergen_uses_the_norway_utm_exception(world):
    assert json.loads((world / "synth.json").read_text())["towns"][0]["utm_epsg"] == 32632  # not 32631


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--panoramas", "0"], "--panoramas 0: must be at least 1"),
        (["--pinhole-per-pano", "-1"], "--pinhole-per-pano -1"),
        (["--size-m", "10"], "--size-m 10"),
        (["--cities", "9"], "--cities 9"),
        (["--city", "Atlantis"], "unknown town"),
        (["--pano-size", "1024"], "--pano-size"),
        (["--pano-size", "4x2"], "--pano-size 4x2"),
        (["--seed", "-2"], "--seed -2"),
    ],
)
def test_cli_rejects_bad_options_with_one_line(tmp_path, argv, message):
    args = _args("--out", str(tmp_path / "w"), *argv)
    with pytest.raises(ConfigError, match=message) as error:
        COMMAND.run(args)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "w").exists()


def test_cli_refuses_a_non_empty_folder(tmp_path):
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        COMMAND.run(_args("--out", str(out), "--size-m", "50", "--panoramas", "1"))
    assert (out / "keep.txt").read_text() == "mine"


def _fake_city(root: Path, place, settings, progress=None) -> dict:
    (root / place.name).mkdir()
    (root / place.name / "poses.csv").write_text("new\n")
    return {"name": place.name}


def test_overwrite_replaces_the_folder_only_once_the_new_world_is_complete(tmp_path, monkeypatch):
    out = tmp_path / "w"
    out.mkdir()
    (out / "old.txt").write_text("old")
    monkeypatch.setattr(world_module, "build_city", _fake_city)
    generate_world(out, cities=1, size_m=50, panoramas=1, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "Berlin" / "poses.csv").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def test_a_failure_leaves_no_half_written_world(tmp_path, monkeypatch):
    def crash(root, place, settings, progress=None):
        _fake_city(root, place, settings)
        raise RuntimeError("disk full")

    monkeypatch.setattr(world_module, "build_city", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_world(tmp_path / "w", cities=2, size_m=50, panoramas=1)
    assert list(tmp_path.iterdir()) == []

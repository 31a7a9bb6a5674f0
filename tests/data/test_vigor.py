"""VIGOR format: names, the writer, the reader, splits, malformed inputs, augmentation and its heading convention."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from vigor_fixtures import (
    GRID_PX,
    PANO_WIDTH,
    anchor_px,
    blue_centroid,
    bright_column_u,
    build_city,
    global_px,
    latlon_of,
    make_ortho,
)

from crossview.data import vigor
from crossview.data.vigor import (
    DatasetError,
    DatasetFileError,
    PanoramaRecord,
    VigorDataset,
    format_pano_name,
    format_satellite_name,
    parse_pano_name,
    parse_satellite_name,
    photometric_jitter,
    rotate_tile,
    rotate_tile_px,
    write_vigor_city,
)
from crossview.errors import ConfigError, CrossviewError, ImageReadError
from crossview.maps.raster import GeoRaster, MapError

NEW_YORK = (40.7128, -74.0060)
SYDNEY = (-33.8688, 151.2093)  # southern hemisphere, eastern longitudes
TRAIN_FILE = "same_area_balanced_train.txt"


# ---- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two cities (north and south hemispheres), all panoramas in the train list."""
    root = tmp_path_factory.mktemp("vigor_world")
    specs = {
        "NewYork": build_city(root, "NewYork", *NEW_YORK, count=5, train_fraction=1.0),
        "Sydney": build_city(root, "Sydney", *SYDNEY, count=3, train_fraction=1.0),
    }
    return root, specs


@pytest.fixture(scope="module")
def four_cities(tmp_path_factory):
    """VIGOR's four cities, 4 panoramas each, half in train; corrected copies too."""
    root = tmp_path_factory.mktemp("vigor_four")
    places = {"NewYork": NEW_YORK, "Seattle": (47.6062, -122.3321), "SanFrancisco": (37.7749, -122.4194)}
    places["Chicago"] = (41.8781, -87.6298)
    specs = {city: build_city(root, city, *p, count=4, seed=3, corrected=True) for city, p in places.items()}
    return root, specs


@pytest.fixture
def small_copy(world, tmp_path):
    """A writable copy of the world (for tests that break files)."""
    root, specs = world
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    return copy, specs


def _dataset(root, **kwargs) -> VigorDataset:
    return VigorDataset(root, cities=kwargs.pop("cities", ["NewYork", "Sydney"]), **kwargs)


def _label_lines(root: Path, city: str, name: str = "pano_label_balanced.txt") -> list[list[str]]:
    return [line.split() for line in (root / "splits" / city / name).read_text().splitlines()]


# ---- names -------------------------------------------------------------------------------------------------

_ids = st.from_regex(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,21}", fullmatch=True)
_lats = st.floats(-85.0, 85.0, allow_nan=False)
_lons = st.floats(-180.0, 180.0, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(pano_id=_ids, lat=_lats, lon=_lons)
def test_names_round_trip(pano_id, lat, lon):
    parsed = parse_pano_name(format_pano_name(pano_id, lat, lon))
    assert parsed.pano_id == pano_id
    assert abs(parsed.lat - lat) <= 5.1e-9 and abs(parsed.lon - lon) <= 5.1e-9
    tile = parse_satellite_name(format_satellite_name(lat, lon))
    assert abs(tile.lat - lat) <= 5.1e-9 and abs(tile.lon - lon) <= 5.1e-9
    # 5e-9 deg of rounding is far below half a zoom-20 pixel (1.34e-6 deg of longitude, less of latitude)
    col, row = global_px(lat, lon)
    col_t, row_t = global_px(tile.lat, tile.lon)
    assert abs(col - col_t) < 0.05 and abs(row - row_t) < 0.05


def test_parse_names_as_vigor_writes_them():
    # Names from VIGOR's Chicago split (SliceMatch's corrected labels), with VIGOR's variable number of decimals.
    pano = parse_pano_name("L-1poX8YZAmBZVLMqBu-4w,41.877949,-87.689396,.jpg")
    assert pano == PanoramaRecord("L-1poX8YZAmBZVLMqBu-4w", 41.877949, -87.689396)
    assert tuple(parse_satellite_name("satellite_41.877971796211014_-87.68943505304125.png")) == (
        41.877971796211014,
        -87.68943505304125,
    )


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "a/b,40.0,-74.0,.jpg",
        "a\\b,40.0,-74.0,.jpg",
        "abc,40.0,-74.0.jpg",
        "abc,40.0,-74.0,.png",
        "abc,north,-74.0,.jpg",
        "abc,nan,-74.0,.jpg",
        "abc,1_0,-74.0,.jpg",
        "abc,89.0,-74.0,.jpg",
        "abc,40.0,-190.0,.jpg",
        ",40.0,-74.0,.jpg",
        "",
    ],
)
def test_parse_pano_name_rejects(name):
    with pytest.raises(DatasetError, match="panorama name") as info:
        parse_pano_name(name)
    assert isinstance(info.value, ValueError) and isinstance(info.value, CrossviewError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name",
    ["satellite_40.0_-74.0.jpg", "satellite_40.0-74.0.png", "sat_40.0_-74.0.png", "satellite_inf_1.png", "../x.png"],
)
def test_parse_satellite_name_rejects(name):
    with pytest.raises(DatasetError, match="satellite tile name"):
        parse_satellite_name(name)


@pytest.mark.parametrize("pano_id", ["", "a,b", "a b", "a/b", "..", ".hidden", "é"])
def test_format_pano_name_rejects_bad_ids(pano_id):
    with pytest.raises(DatasetError, match="panorama id"):
        format_pano_name(pano_id, 40.0, -74.0)


# ---- writer ------------------------------------------------------------------------------------------------


def test_written_labels_match_names(world):
    root, specs = world
    for city, city_specs in specs.items():
        lines = _label_lines(root, city)
        assert sorted(tokens[0] for tokens in lines) == sorted(spec.name for spec in city_specs)
        for tokens in lines:
            pano = parse_pano_name(tokens[0])
            col_p, row_p = global_px(pano.lat, pano.lon)
            for k in range(4):
                tile = parse_satellite_name(tokens[1 + 3 * k])
                col_c, row_c = global_px(tile.lat, tile.lon)
                dr, dc = float(tokens[2 + 3 * k]), float(tokens[3 + 3 * k])
                assert abs(dr - (row_p - row_c)) < 1e-5 and abs(dc - (col_c - col_p)) < 1e-5
                assert "e" not in tokens[2 + 3 * k].lower() and "e" not in tokens[3 + 3 * k].lower()
                # tile centres lie on the 320-px global grid (up to the names' 1e-8 deg rounding)
                assert abs(col_c / GRID_PX - round(col_c / GRID_PX)) * GRID_PX < 0.01
                assert abs(row_c / GRID_PX - round(row_c / GRID_PX)) * GRID_PX < 0.01
                # the panorama lies in every one of its tiles; in the positive's central quarter
                row, col = 320 + dr, 320 - dc
                low, high = (160, 480) if k == 0 else (0, 640)
                assert low <= row < high and low <= col < high, (tokens[0], k, row, col)


def test_semi_positive_order_is_horizontal_vertical_diagonal(world):
    root, _ = world
    for tokens in _label_lines(root, "NewYork") + _label_lines(root, "Sydney"):
        tiles = [parse_satellite_name(tokens[1 + 3 * k]) for k in range(4)]
        assert tiles[1].lat == tiles[0].lat and tiles[1].lon != tiles[0].lon
        assert tiles[2].lon == tiles[0].lon and tiles[2].lat != tiles[0].lat
        assert tiles[3].lat == tiles[2].lat and tiles[3].lon == tiles[1].lon


def test_each_panorama_lies_in_exactly_its_four_tiles(world):
    root, specs = world
    for city, city_specs in specs.items():
        gallery = (root / "splits" / city / "satellite_list.txt").read_text().split()
        assert gallery == sorted(gallery, key=lambda n: tuple(parse_satellite_name(n)))
        assert sorted(os.listdir(root / city / "satellite")) == sorted(gallery)
        labels = {tokens[0]: set(tokens[1::3]) for tokens in _label_lines(root, city)}
        assert set().union(*labels.values()) == set(gallery)  # only the tiles some panorama uses
        for spec in city_specs:
            holding = set()
            for name in gallery:
                col_c, row_c = global_px(*parse_satellite_name(name))
                if -320 <= spec.col - col_c < 320 and -320 <= spec.row - row_c < 320:
                    holding.add(name)
            assert holding == labels[spec.name] and len(holding) == 4


def test_writer_summary_and_split(world, tmp_path):
    root, specs = world
    lines = (root / "splits" / "NewYork" / TRAIN_FILE).read_text().splitlines()
    assert len(lines) == 5 and (root / "splits" / "NewYork" / "same_area_balanced_test.txt").read_text() == ""
    spec_list = specs["NewYork"]
    anchor = anchor_px(*NEW_YORK)
    ortho = make_ortho(anchor[0] - 640, anchor[1] - 640, 1280)
    summary = write_vigor_city(tmp_path, "X", ortho, [s.record for s in spec_list], train_fraction=0.6, seed=5)
    assert (summary["num_panoramas"], summary["num_train"], summary["num_test"]) == (5, 3, 2)
    assert summary["num_tiles"] == len((tmp_path / "splits" / "X" / "satellite_list.txt").read_text().split())
    train = _label_lines(tmp_path, "X", TRAIN_FILE)
    test = _label_lines(tmp_path, "X", "same_area_balanced_test.txt")
    assert sorted(map(tuple, train + test)) == sorted(map(tuple, _label_lines(tmp_path, "X")))
    assert [t[0] for t in train] == sorted(t[0] for t in train)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in tmp_path.rglob("*.png"))  # readable by all
    assert sorted(p.name for p in summary["label_files"]) == sorted(vigor.LABEL_FILES)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_writes_are_deterministic(tmp_path):
    for run in ("a", "b"):
        build_city(tmp_path / run, "NewYork", *NEW_YORK, count=4, seed=11, corrected=True)
    first, second = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert len(first) > 10 and first == second


def test_writer_rejects_misaligned_or_foreign_orthos(tmp_path):
    anchor = anchor_px(*NEW_YORK)
    record = PanoramaRecord("p", *latlon_of(anchor[0] + 5.5, anchor[1] + 7.5))
    good = make_ortho(anchor[0] - 640, anchor[1] - 640, 1280)
    shifted = GeoRaster(good.array, good.crs, good.transform @ Affine.translation(0.5, 0.0))
    coarse = GeoRaster(good.array, good.crs, good.transform @ Affine.scale(2.0))
    foreign = GeoRaster(good.array, "EPSG:32618", good.transform)
    gray = GeoRaster(good.array[:1], good.crs, good.transform)
    for ortho, message in [(shifted, "integer pixel"), (coarse, "zoom 20"), (foreign, "EPSG:3857"), (gray, "3-band")]:
        with pytest.raises(MapError, match=message):
            write_vigor_city(tmp_path, "X", ortho, [record])
    assert not (tmp_path / "splits").exists()


def test_writer_rejects_panoramas_outside_the_ortho(tmp_path):
    anchor = anchor_px(*NEW_YORK)
    ortho = make_ortho(anchor[0] - 640, anchor[1] - 640, 1280)
    outside = PanoramaRecord("far", *latlon_of(anchor[0] + 400.5, anchor[1]))  # its tiles reach col + 960
    with pytest.raises(DatasetError, match=r"panorama far,.*not inside the ortho"):
        write_vigor_city(tmp_path, "X", ortho, [outside])
    inside = PanoramaRecord("near", *latlon_of(anchor[0] + 10.5, anchor[1] + 10.5))
    ortho.valid = np.ones((1280, 1280), dtype=bool)
    ortho.valid[1270, 700] = False  # under the tile centred at global (anchor + 320, anchor + 320)
    with pytest.raises(DatasetError, match=r"panorama near,.*invalid"):
        write_vigor_city(tmp_path, "X", ortho, [inside])
    with pytest.raises(DatasetError, match="duplicate panorama id"):
        write_vigor_city(tmp_path, "X", ortho, [PanoramaRecord("a", 0.0, 0.0), PanoramaRecord("a", 0.0, 0.0)])
    with pytest.raises(ConfigError, match="train_fraction"):
        write_vigor_city(tmp_path, "X", ortho, [inside], train_fraction=1.5)


# ---- reader: pixel chain -----------------------------------------------------------------------------------


@pytest.mark.parametrize("aerial_size", [None, 320])
def test_marker_appears_at_pano_px_in_tile(world, aerial_size):
    root, _ = world
    dataset = _dataset(root, aerial_size=aerial_size)
    assert len(dataset) == 8
    size = aerial_size or 640
    tolerance_px = 0.25 if aerial_size is None else 0.3  # a 28-pixel disk's centroid
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["aerial"].shape == (3, size, size) and item["aerial"].dtype == torch.float32
        assert item["aerial"].min() >= 0.0 and item["aerial"].max() <= 1.0
        row, col = item["pano_px_in_tile"].tolist()
        found = blue_centroid(item["aerial"].numpy(), row, col, 0.0, 12.0 * size / 640)
        assert np.allclose(found, (row, col), atol=tolerance_px), (item["pano_name"], found, (row, col))
        assert item["heading_deg"] == 0.0 and item["city"] in ("NewYork", "Sydney") and item["index"] == i


def test_record_fields_match_the_names(world):
    root, specs = world
    dataset = _dataset(root)
    by_name = {spec.name: spec for city_specs in specs.values() for spec in city_specs}
    for i, record in enumerate(dataset.records):
        item = dataset[i]
        lat, lon = by_name[record.pano_name].latlon
        assert abs(item["lat"] - lat) < 1e-8 and abs(item["lon"] - lon) < 1e-8
        assert item["sat_name"] == record.sat_names[0] and item["pano_name"] == record.pano_name
        assert record.label_file == f"splits/{record.city}/{TRAIN_FILE}"


def test_convention_vigor_label_pixel(world, tmp_path):
    # DESIGN: the panorama sits at (row 320 + dr, col 320 - dc) of the 640x640 tile.
    root, _ = world
    tree = tmp_path / "tree"
    shutil.copytree(root, tree)
    tokens = _label_lines(tree, "NewYork", TRAIN_FILE)[0]
    tokens[2:4] = ["10.25", "-20.5"]
    (tree / "splits" / "NewYork" / TRAIN_FILE).write_text(" ".join(tokens) + "\n")
    item = VigorDataset(tree, cities=["NewYork"])[0]
    assert item["pano_px_in_tile"].tolist() == [330.25, 340.5]
    assert VigorDataset(tree, cities=["NewYork"], aerial_size=160)[0]["pano_px_in_tile"].tolist() == [82.5625, 85.125]
    # VIGOR's own numbers (SliceMatch corrected labels, Chicago test split, line 1): the positive tile's
    # (dr, dc) = (23, -29) agrees with the spherical Web Mercator formula within the labels' rounding.
    col_p, row_p = global_px(41.877949, -87.689396)
    col_c, row_c = global_px(41.877971796211014, -87.68943505304125)
    assert abs((row_p - row_c) - 23.0) < 0.5 and abs((col_c - col_p) - -29.0) < 0.5


@pytest.mark.parametrize("aerial_size", [None, 200])
def test_convention_vigor_mpp(world, aerial_size):
    # DESIGN: metres per pixel come from the tile's latitude: 156543.03392 * cos(lat) / 2**20 (640-px tile).
    root, _ = world
    dataset = _dataset(root, aerial_size=aerial_size)
    for i in (0, len(dataset) - 1):
        item = dataset[i]
        lat_tile = parse_satellite_name(item["sat_name"]).lat
        expected = 156543.03392 * math.cos(math.radians(lat_tile)) / 2**20 * 640 / (aerial_size or 640)
        assert item["mpp"] == pytest.approx(expected, rel=1e-12)
    assert dataset[len(dataset) - 1]["lat"] < 0  # the Sydney city is in the check


def test_pano_is_resized_and_semi_positives_hold_the_marker(world):
    root, _ = world
    dataset = _dataset(root, pano_size=(32, 64), aerial_size=320, semi_positives=True)
    item = dataset[0]
    assert item["pano"].shape == (3, 32, 64) and item["semi_aerial"].shape == (3, 3, 320, 320)
    record = dataset.records[0]
    for k in range(3):
        row, col = item["semi_pano_px_in_tile"][k].tolist()
        assert (row, col) == pytest.approx(record.pano_px_in_tile(k + 1, 320), abs=1e-4)
        if 8 < row < 312 and 8 < col < 312:  # the marker is whole inside this tile
            found = blue_centroid(item["semi_aerial"][k].numpy(), row, col, 0.0, 6.0)
            assert np.allclose(found, (row, col), atol=0.3)


def test_gallery_and_load_satellite(world):
    root, _ = world
    dataset = _dataset(root, aerial_size=64)
    gallery = dataset.satellite_names
    listed = [(root / "splits" / c / "satellite_list.txt").read_text().split() for c in ("NewYork", "Sydney")]
    assert gallery == listed[0] + listed[1]
    assert dataset.satellite_index[gallery[3]] == 3
    tile = dataset.load_satellite(gallery[3])
    with Image.open(root / "NewYork" / "satellite" / gallery[3]) as image:
        reference = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
    assert torch.allclose(tile, torch.from_numpy(reference / 255.0).permute(2, 0, 1), atol=1e-6)
    with pytest.raises(DatasetError, match="unknown satellite tile"):
        dataset.load_satellite("satellite_1.0_2.0.png")
    with pytest.raises(IndexError):
        dataset[len(dataset)]


# ---- reader: splits ----------------------------------------------------------------------------------------


def _names(specs, cities) -> set[str]:
    return {spec.name for city in cities for spec in specs[city]}


def test_same_and_cross_area_splits(four_cities):
    root, specs = four_cities
    same_train = VigorDataset(root, split="same", train=True)
    same_test = VigorDataset(root, split="same", train=False)
    assert same_train.cities == ("NewYork", "Seattle", "SanFrancisco", "Chicago") == same_test.cities
    train_names = {r.pano_name for r in same_train.records}
    test_names = {r.pano_name for r in same_test.records}
    assert not train_names & test_names and train_names | test_names == _names(specs, specs)
    assert {r.city for r in same_train.records} == set(specs)  # half of every city
    assert {r.label_file.rsplit("/", 1)[1] for r in same_test.records} == {"same_area_balanced_test.txt"}
    cross_train = VigorDataset(root, split="cross", train=True)
    cross_test = VigorDataset(root, split="cross", train=False)
    assert cross_train.cities == ("NewYork", "Seattle") and cross_test.cities == ("SanFrancisco", "Chicago")
    assert {r.pano_name for r in cross_train.records} == _names(specs, ["NewYork", "Seattle"])
    assert {r.pano_name for r in cross_test.records} == _names(specs, ["SanFrancisco", "Chicago"])
    assert {r.label_file.rsplit("/", 1)[1] for r in cross_test.records} == {"pano_label_balanced.txt"}
    gallery = set(cross_test.satellite_names)
    for city in ("SanFrancisco", "Chicago"):
        assert set((root / "splits" / city / "satellite_list.txt").read_text().split()) <= gallery
    assert len(VigorDataset(root, split="cross", cities=["Seattle"])) == 4


def test_corrected_label_files_are_used(four_cities, tmp_path):
    root, _ = four_cities
    tree = tmp_path / "tree"
    shutil.copytree(root, tree)
    corrected = tree / "splits" / "Chicago" / "same_area_balanced_train__corrected.txt"
    lines = corrected.read_text().splitlines()
    assert lines == (tree / "splits" / "Chicago" / TRAIN_FILE).read_text().splitlines()
    corrected.write_text(lines[0] + "\n")
    assert len(VigorDataset(tree, cities=["Chicago"])) == len(lines)
    dataset = VigorDataset(tree, cities=["Chicago"], corrected=True)
    assert len(dataset) == 1 and dataset.records[0].label_file.endswith("same_area_balanced_train__corrected.txt")
    # SliceMatch ships the corrected files in splits__corrected/<City>/
    moved = tree / "splits__corrected" / "Chicago"
    moved.mkdir(parents=True)
    corrected.rename(moved / corrected.name)
    dataset = VigorDataset(tree, cities=["Chicago"], corrected=True)
    assert dataset.records[0].label_file == "splits__corrected/Chicago/same_area_balanced_train__corrected.txt"
    (tree / "splits" / "Chicago" / "pano_label_balanced__corrected.txt").unlink()
    with pytest.raises(DatasetFileError, match=r"pano_label_balanced__corrected\.txt"):
        VigorDataset(tree, split="cross", cities=["Chicago"], corrected=True)


# ---- reader: malformed inputs ------------------------------------------------------------------------------


def _break_line(root: Path, line_index: int, edit) -> str:
    """Apply ``edit(tokens) -> tokens`` to one line of NewYork's train labels; return the 'file:line' prefix."""
    path = root / "splits" / "NewYork" / TRAIN_FILE
    lines = [line.split() for line in path.read_text().splitlines()]
    lines[line_index] = edit(lines[line_index])
    path.write_text("".join(" ".join(tokens) + "\n" for tokens in lines))
    return f"splits/NewYork/{TRAIN_FILE}:{line_index + 1}: "


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t[:12], "expected 13 tokens, got 12"),
        (lambda t: [*t, "0.0"], "expected 13 tokens, got 14"),
        (lambda t: [*t[:2], "north", *t[3:]], "bad delta 'north'"),
        (lambda t: [*t[:5], "nan", *t[6:]], "bad delta 'nan'"),
        (lambda t: [*t[:12], "inf"], "bad delta 'inf'"),
        (lambda t: ["pano.jpg", *t[1:]], "bad panorama name 'pano.jpg'"),
        (lambda t: ["../../etc/passwd", *t[1:]], "bad panorama name '../../etc/passwd'"),
        (lambda t: ["/etc/passwd", *t[1:]], "bad panorama name '/etc/passwd'"),
        (lambda t: [*t[:4], "../satellite_40.0_-74.0.png", *t[5:]], "bad satellite tile name"),
        (lambda t: [*t[:7], "/tmp/satellite_40.0_-74.0.png", *t[8:]], "bad satellite tile name"),
        (lambda t: [*t[:1], "satellite_40.0_-74.0.png", *t[2:]], "not in NewYork's satellite_list.txt"),
    ],
)
def test_malformed_label_lines(small_copy, edit, message):
    root, _ = small_copy
    prefix = _break_line(root, 2, edit)
    with pytest.raises(DatasetError) as info:
        VigorDataset(root, cities=["NewYork"])
    text = str(info.value)
    assert text.startswith(prefix) and message in text and "\n" not in text
    assert isinstance(info.value, ValueError)


def test_missing_files(small_copy):
    root, specs = small_copy
    (root / "NewYork" / "panorama" / specs["NewYork"][1].name).unlink()
    line = 1 + sorted(s.name for s in specs["NewYork"]).index(specs["NewYork"][1].name)
    with pytest.raises(DatasetFileError) as info:
        VigorDataset(root, cities=["NewYork"])
    assert isinstance(info.value, FileNotFoundError)
    assert str(info.value).startswith(f"splits/NewYork/{TRAIN_FILE}:{line}: panorama file not found: NewYork/")
    assert len(VigorDataset(root, cities=["NewYork"], validate_files=False)) == 5  # checked lazily instead
    tile = (root / "splits" / "NewYork" / "satellite_list.txt").read_text().split()[0]
    (root / "NewYork" / "satellite" / tile).unlink()
    with pytest.raises(
        DatasetFileError, match=rf"satellite_list.txt:1: satellite file not found: NewYork/satellite/{tile}"
    ):
        VigorDataset(root, cities=["NewYork"])
    with pytest.raises(DatasetFileError, match="folder not found: Atlantis/panorama"):
        VigorDataset(root, cities=["Atlantis"])


def test_symlinks_leaving_the_root_are_rejected(small_copy, tmp_path):
    root, specs = small_copy
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = root / "NewYork" / "panorama" / specs["NewYork"][0].name
    shutil.copy(victim, outside / "secret.jpg")
    victim.unlink()
    victim.symlink_to(outside / "secret.jpg")
    with pytest.raises(DatasetError, match=r"_train.txt:\d+: .*symlink leading outside the dataset root"):
        VigorDataset(root, cities=["NewYork"])
    dataset = VigorDataset(root, cities=["NewYork"], validate_files=False)
    index = [r.pano_name for r in dataset.records].index(victim.name)
    with pytest.raises(DatasetError, match="outside the dataset root"):
        dataset[index]
    shutil.move(root / "Sydney", outside / "Sydney")
    (root / "Sydney").symlink_to(outside / "Sydney", target_is_directory=True)
    with pytest.raises(DatasetError, match=r"Sydney/panorama resolves to .* outside the dataset root"):
        VigorDataset(root, cities=["Sydney"])


def test_corrupt_and_oversized_images(small_copy, monkeypatch):
    root, specs = small_copy
    dataset = VigorDataset(root, cities=["NewYork"])
    index = [r.pano_name for r in dataset.records].index(specs["NewYork"][0].name)
    path = root / "NewYork" / "panorama" / specs["NewYork"][0].name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match=rf"cannot read image .*{specs['NewYork'][0].name}"):
        dataset[index]
    path.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="cannot read image"):
        dataset[index]
    monkeypatch.setattr(vigor, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match=r"640x640 pixels, more than MAX_IMAGE_PIXELS=1000"):
        dataset.load_satellite(dataset.satellite_names[0])


def test_bad_arguments(world):
    root, _ = world
    for kwargs, message in [
        ({"split": "diagonal"}, "split"),
        ({"aerial_size": 0}, "aerial_size"),
        ({"pano_size": 64}, "pano_size"),
        ({"seed": -1}, "seed"),
        ({"cities": []}, "cities"),
        ({"cities": ["../NewYork"]}, "city name"),
    ]:
        with pytest.raises(ConfigError, match=message):
            VigorDataset(root, **{"cities": ["NewYork"], **kwargs})
    with pytest.raises(DatasetFileError, match="dataset root not found"):
        VigorDataset(root / "nope")


# ---- augmentation and heading ------------------------------------------------------------------------------


def test_rotate_tile_turns_clockwise_and_moves_points_with_it():
    image = np.zeros((1, 8, 8))
    image[0, 1, 5] = 1.0  # pixel centre (1.5, 5.5): north-east of the centre
    assert rotate_tile(image, 1)[0, 5, 6] == 1.0  # a quarter turn clockwise brings north-east to south-east
    assert rotate_tile_px((1.5, 5.5), 8, 1) == (5.5, 6.5)
    for turns in range(-1, 5):
        row, col = np.argwhere(rotate_tile(image, turns)[0] == 1.0)[0] + 0.5
        assert rotate_tile_px((1.5, 5.5), 8, turns) == (row, col)


def _pointer_azimuth_in_tile(item) -> float:
    """Azimuth (clockwise from the tile's up) of the pointer marker seen from the panorama, in the item's tile."""
    row, col = item["pano_px_in_tile"].tolist()
    size = item["aerial"].shape[-1]
    p_row, p_col = blue_centroid(item["aerial"].numpy(), row, col, 25.0 * size / 640, 55.0 * size / 640)
    return math.degrees(math.atan2(p_col - col, -(p_row - row))) % 360.0


def _angle_error_deg(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.mark.parametrize(("augment", "random_roll"), [(True, False), (False, True), (True, True)])
def test_augmentation_keeps_marker_and_heading_consistent(world, augment, random_roll):
    # The panorama sees the pointer marker at its column u; heading convention: tile azimuth of that marker =
    # heading_deg + (u / W - 0.5) * 360. Checked against the pointer's direction measured in the aerial tile.
    root, _ = world
    headings = set()
    plain = _dataset(root)
    for seed in range(6):
        dataset = _dataset(root, augment=augment, random_roll=random_roll, seed=seed)
        for i in range(len(dataset)):
            item = dataset[i]
            row, col = item["pano_px_in_tile"].tolist()
            assert np.allclose(blue_centroid(item["aerial"].numpy(), row, col, 0.0, 12.0), (row, col), atol=0.25)
            u = bright_column_u(item["pano"].numpy())
            seen_deg = item["heading_deg"] + (u / PANO_WIDTH - 0.5) * 360.0
            assert _angle_error_deg(seen_deg, _pointer_azimuth_in_tile(item)) < 2.5, (seed, i, item["heading_deg"])
            assert 0.0 <= item["heading_deg"] < 360.0
            headings.add(round(item["heading_deg"], 6))
            if not augment and seed == 0:
                assert torch.equal(item["aerial"], plain[i]["aerial"])
    if augment and not random_roll:
        assert headings == {0.0, 90.0, 180.0, 270.0}
    if random_roll:
        assert len(headings) > 20


def test_flip_is_drawn_and_mirrors_both_views(world):
    root, _ = world
    plain = _dataset(root)[0]
    seen = set()
    for seed in range(12):
        item = _dataset(root, augment=True, seed=seed)[0]
        turns = round(item["heading_deg"] / 90.0) % 4
        unrotated = torch.rot90(item["aerial"], turns, dims=(-2, -1))  # undo the clockwise turns
        flipped = torch.equal(unrotated, plain["aerial"].flip(-1))
        assert flipped or torch.equal(unrotated, plain["aerial"])
        assert torch.equal(item["pano"], plain["pano"].flip(-1) if flipped else plain["pano"])
        seen.add(flipped)
    assert seen == {True, False}


def test_flip_alone_keeps_north_aligned_panoramas_north_aligned(world):
    root, _ = world
    plain = _dataset(root)
    seen = set()
    for seed in range(8):
        dataset = _dataset(root, flip=True, seed=seed)
        for i in range(len(dataset)):
            item = dataset[i]
            assert item["heading_deg"] == 0.0
            flipped = torch.equal(item["aerial"], plain[i]["aerial"].flip(-1))
            assert flipped or torch.equal(item["aerial"], plain[i]["aerial"])
            assert torch.equal(item["pano"], plain[i]["pano"].flip(-1) if flipped else plain[i]["pano"])
            row, col = item["pano_px_in_tile"].tolist()
            assert np.allclose(blue_centroid(item["aerial"].numpy(), row, col, 0.0, 12.0), (row, col), atol=0.25)
            u = bright_column_u(item["pano"].numpy())
            seen_deg = (u / PANO_WIDTH - 0.5) * 360.0
            assert _angle_error_deg(seen_deg, _pointer_azimuth_in_tile(item)) < 2.5
            seen.add(flipped)
    assert seen == {True, False}


def test_photometric_jitter_is_a_chroma_rotation_then_scalings(monkeypatch):
    rng = np.random.default_rng(0)
    image = rng.random((3, 8, 10)).astype(np.float32) * 0.5 + 0.25
    fixed = {"gain": (1.0, 1.0), "contrast": (1.0, 1.0), "saturation": (1.0, 1.0), "hue_deg": (120.0, 120.0)}
    monkeypatch.setattr("crossview.data.vigor.PHOTOMETRIC_RANGES", fixed)
    monkeypatch.setattr("crossview.data.vigor.GRAYSCALE_PROBABILITY", 0.0)
    # A 120-degree turn about the gray axis is a cyclic permutation of the channels: red -> green -> blue.
    assert np.allclose(photometric_jitter(image, rng), image[[2, 0, 1]], atol=1e-5)
    fixed.update(hue_deg=(0.0, 0.0), saturation=(0.0, 0.0), gain=(0.5, 0.5))
    luma = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    assert np.allclose(photometric_jitter(image, rng), 0.5 * np.broadcast_to(luma, image.shape), atol=1e-5)
    fixed.update(saturation=(1.0, 1.0), gain=(1.0, 1.0), contrast=(0.5, 0.5))
    expected = image.mean() + 0.5 * (image - image.mean())
    assert np.allclose(photometric_jitter(image, rng), expected, atol=1e-5)


def test_photometric_augmentation_jitters_views_independently_and_keeps_geometry(world):
    root, _ = world
    plain = _dataset(root)[0]
    items = [_dataset(root, photometric=True, seed=seed)[0] for seed in range(4)]
    for item in items:
        assert item["heading_deg"] == 0.0 and torch.equal(item["pano_px_in_tile"], plain["pano_px_in_tile"])
        assert float(item["pano"].min()) >= 0.0 and float(item["pano"].max()) <= 1.0
        assert not torch.allclose(item["pano"], plain["pano"], atol=1e-3)
        ratio_pano = (item["pano"].mean() / plain["pano"].mean()).item()
        ratio_tile = (item["aerial"].mean() / plain["aerial"].mean()).item()
        assert abs(ratio_pano - ratio_tile) > 1e-3  # separate draws for the two views
    again = _dataset(root, photometric=True, seed=0)[0]
    assert torch.equal(again["pano"], items[0]["pano"]) and torch.equal(again["aerial"], items[0]["aerial"])


def test_seeded_augmentation_is_reproducible_and_changes_with_epoch(world):
    root, _ = world
    first = _dataset(root, augment=True, random_roll=True, seed=7, aerial_size=64)
    second = _dataset(root, augment=True, random_roll=True, seed=7, aerial_size=64)
    assert all(first[i]["heading_deg"] == second[i]["heading_deg"] for i in range(len(first)))
    assert torch.equal(first[2]["pano"], second[2]["pano"])
    before = [first[i]["heading_deg"] for i in range(len(first))]
    first.set_epoch(1)
    assert [first[i]["heading_deg"] for i in range(len(first))] != before


def test_dataloader_collates_items(world):
    root, _ = world
    loader = torch.utils.data.DataLoader(_dataset(root, pano_size=(32, 64), aerial_size=64), batch_size=4)
    batch = next(iter(loader))
    assert batch["pano"].shape == (4, 3, 32, 64) and batch["pano_px_in_tile"].shape == (4, 2)
    assert batch["mpp"].shape == (4,) and len(batch["pano_name"]) == 4

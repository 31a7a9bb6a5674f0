"""``crossview index`` through the real entry point with the shipped model synth-v1: build, up-to-date re-runs,
mismatched models and maps, corrupt files, --overwrite and bad options.

References: the registry's SHA-256 of synth-v1 read from models/registry.json directly, VIGOR's tile footprint
formula, and rasterio-written maps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR / "retrieval") not in sys.path:
    sys.path.insert(0, str(TESTS_DIR / "retrieval"))

from retrieval_fixtures import vigor_tile_extent_m, write_map  # noqa: E402

from crossview import cli  # noqa: E402
from crossview.checkpoints import export_model, models_dir  # noqa: E402
from crossview.maps.raster import GeoRaster  # noqa: E402
from crossview.retrieval import ChipIndex, map_fingerprint  # noqa: E402

STRIDE = "30"


def run_cli(argv: list[str]) -> int:
    return cli.main(argv)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """synth-v1 indexes a 160 m map once (about 20 chips)."""
    folder = tmp_path_factory.mktemp("index-cli")
    map_path = write_map(folder / "map.tif")
    out = folder / "area.idx"
    code = run_cli(["index", "--map", str(map_path), "--model", "synth-v1", "--out", str(out), "--stride", STRIDE])
    assert code == 0
    return folder, map_path, out


def synth_v1_sha256() -> str:
    registry = json.loads((models_dir() / "registry.json").read_text())
    return registry["models"]["synth-v1"]["sha256"]


def test_index_command_writes_an_index_of_the_map_for_synth_v1(built):
    _, map_path, out = built
    raster = GeoRaster.read(map_path)
    index = ChipIndex.load(out, model_sha256=synth_v1_sha256(), map_fingerprint=map_fingerprint(raster))
    assert 5 <= len(index) <= 36 and index.index_type == "flat" and index.dim == 512
    assert index.meta["model"]["name"] == "synth-v1" and index.meta["map"]["path"] == str(map_path)
    assert index.geometry.size_px == 128
    assert index.geometry.extent_m == pytest.approx(vigor_tile_extent_m(raster.center_latlon().lat))
    assert index.meta["chips"]["stride_m"] == float(STRIDE)
    # every chip's own descriptor finds it first
    result = index.search(index.vectors(range(len(index))), 1)
    assert result.ids[:, 0].tolist() == list(range(len(index)))
    assert not list(out.parent.glob(".*.tmp"))
    # the map's dense-search features: 4 m-ish cells (stride 4 of the chips' pixels) over the whole 160 m map
    raster = index.feature_raster
    assert raster.cell_m == pytest.approx(4 * index.geometry.gsd_m) and raster.size * raster.cell_m >= 160.0
    assert raster.features.shape[0] == 16 and 0.5 < raster.valid.float().mean() < 0.95  # the masked corner


def test_rerun_with_the_same_inputs_keeps_the_file(built, capsys):
    _, map_path, out = built
    before = out.read_bytes()
    code = run_cli(["index", "--map", str(map_path), "--model", "synth-v1", "--out", str(out), "--stride", STRIDE])
    assert code == 0 and "up to date" in capsys.readouterr().out
    assert out.read_bytes() == before


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_another_model_is_refused_with_exit_2(built, tmp_path, capsys):
    _, map_path, out = built
    other = export_model("synth-v1", tmp_path / "other.pt", metrics={"note": "a re-exported copy"})
    code = run_cli(["index", "--map", str(map_path), "--model", str(other), "--out", str(out), "--stride", STRIDE])
    assert code == 2
    err = _one_line_error(capsys)
    assert str(out) in err and "built with model synth-v1" in err and "crossview index" in err


def test_another_map_is_refused_with_exit_2(built, capsys):
    folder, _, out = built
    other_map = write_map(folder / "other.tif", seed=7)
    code = run_cli(["index", "--map", str(other_map), "--model", "synth-v1", "--out", str(out), "--stride", STRIDE])
    assert code == 2
    err = _one_line_error(capsys)
    assert str(out) in err and "another map" in err


def test_other_settings_need_overwrite(built, tmp_path, capsys):
    _, map_path, out = built
    copy = tmp_path / "area.idx"
    copy.write_bytes(out.read_bytes())
    argv = ["index", "--map", str(map_path), "--model", "synth-v1", "--out", str(copy), "--stride", "60"]
    assert run_cli(argv) == 2
    assert "--overwrite" in _one_line_error(capsys)
    assert run_cli([*argv, "--overwrite"]) == 0
    assert ChipIndex.load(copy).meta["chips"]["stride_m"] == 60.0


def test_corrupt_index_file_exits_1_naming_it(built, tmp_path, capsys):
    _, map_path, out = built
    corrupt = tmp_path / "area.idx"
    corrupt.write_bytes(out.read_bytes()[:5000])
    code = run_cli(["index", "--map", str(map_path), "--model", "synth-v1", "--out", str(corrupt)])
    assert code == 1
    err = _one_line_error(capsys)
    assert str(corrupt) in err and "corrupt" in err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--stride", "0"], "--stride"),
        (["--batch-size", "0"], "--batch-size"),
        (["--chip-extent-m", "-3"], "--chip-extent-m"),
    ],
)
def test_bad_options_exit_2(built, tmp_path, capsys, options, message):
    _, map_path, _ = built
    argv = ["index", "--map", str(map_path), "--model", "synth-v1", "--out", str(tmp_path / "a.idx"), *options]
    assert run_cli(argv) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "a.idx").exists()


def test_missing_map_and_unknown_model_exit_2(tmp_path, capsys):
    out = str(tmp_path / "a.idx")
    assert run_cli(["index", "--map", str(tmp_path / "none.tif"), "--model", "synth-v1", "--out", out]) == 2
    assert "none.tif" in _one_line_error(capsys)
    map_path = write_map(tmp_path / "map.tif")
    assert run_cli(["index", "--map", str(map_path), "--model", "no-such-model", "--out", out]) == 2
    assert "no-such-model" in _one_line_error(capsys)


def test_help_lists_examples_and_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["index", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--map", "--model", "--out", "--stride", "--index-type", "--batch-size", "--device"):
        assert option in text
    assert "examples:" in text and "crossview index --map" in text

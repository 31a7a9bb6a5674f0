"""`crossview fetch` end to end through the CLI entry point, against a real local tile server and real files."""

from __future__ import annotations

import io
import json

import mercantile
import numpy as np
import pytest
import rasterio
from PIL import Image
from tileserver import Fault, TileServer, tile_rgb

from crossview.cli import main
from crossview.fetch import classify_source

ZOOM = 17
# a box well inside tile (x=70390..70391, y=42980) at zoom 17 (Berlin): two tiles wide, one tall
TILE_A, TILE_B = mercantile.Tile(70390, 42980, ZOOM), mercantile.Tile(70391, 42980, ZOOM)


def _inner_bbox(*tiles: mercantile.Tile, inset: float = 0.1) -> str:
    """W,S,E,N of the union of tiles, shrunk by ``inset`` of a tile so only these tiles are needed."""
    bounds = [mercantile.bounds(t) for t in tiles]
    west, east = min(b.west for b in bounds), max(b.east for b in bounds)
    south, north = min(b.south for b in bounds), max(b.north for b in bounds)
    dx, dy = (bounds[0].east - bounds[0].west) * inset, (bounds[0].north - bounds[0].south) * inset
    return f"{west + dx},{south + dy},{east - dx},{north - dy}"


def _fetch(tmp_path, server, *extra: str, out_name: str = "map.tif") -> tuple[int, object]:
    out = tmp_path / out_name
    argv = ["fetch", "--source", server.template(), "--bbox", _inner_bbox(TILE_A, TILE_B), "--zoom", str(ZOOM)]
    argv += ["--cache-dir", str(tmp_path / "tiles"), "--out", str(out), *extra]
    return main(argv), out


def test_native_mosaic_holds_the_tiles_unchanged(tmp_path):
    with TileServer() as server:
        code, out = _fetch(tmp_path, server, "--crs", "native")
    assert code == 0
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 3857
        assert src.res[0] == pytest.approx(2 * np.pi * 6378137 / (256 * 2**ZOOM))
        mosaic = src.read()
        window_col0 = round((src.bounds.left - mercantile.xy_bounds(TILE_A).left) / src.res[0])
        assert src.descriptions == ("red", "green", "blue")
    # the output is a pixel window of the tiles, placed where Web Mercator says: compare with the tiles themselves
    tiles = np.concatenate([tile_rgb(t.x, t.y, t.z) for t in (TILE_A, TILE_B)], axis=1).transpose(2, 0, 1)
    row0 = round((mercantile.xy_bounds(TILE_A).top - rasterio.open(out).bounds.top) / rasterio.open(out).res[1])
    expected = tiles[:, row0 : row0 + mosaic.shape[1], window_col0 : window_col0 + mosaic.shape[2]]
    np.testing.assert_array_equal(mosaic, expected)


def test_utm_output_has_the_gsd_and_local_zone(tmp_path):
    with TileServer() as server:
        code, out = _fetch(tmp_path, server, "--crs", "utm")
    assert code == 0
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32633  # Berlin
        gsd = src.res[0]
        assert src.res[0] == src.res[1]
        assert 0.6 < gsd < 0.8  # zoom 17 at 52.5 N: 1.19 m * cos(52.5)
        assert src.tags()["source"] and "bbox_wgs84" in src.tags()
        assert (src.dataset_mask() > 0).mean() > 0.95


def test_cache_reuse_and_offline(tmp_path):
    with TileServer() as server:
        assert _fetch(tmp_path, server, "--crs", "native")[0] == 0
        first = server.total
        assert first == 2
        code, _ = _fetch(tmp_path, server, "--crs", "native", "--offline", out_name="again.tif")
        assert code == 0 and server.total == first  # nothing downloaded again
    (tmp_path / "tiles").rename(tmp_path / "gone")
    with TileServer() as server:
        code, out = _fetch(tmp_path, server, "--offline", out_name="offline.tif")
        assert code == 1 and not out.exists() and server.total == 0


def test_offline_names_missing_tiles(tmp_path, capsys):
    with TileServer() as server:
        code, out = _fetch(tmp_path, server, "--offline")
    assert code == 1 and not out.exists()
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and f"{ZOOM}/{TILE_A.x}/{TILE_A.y}" in message


def test_failed_tiles_fail_the_command_without_output(tmp_path, capsys):
    with TileServer(faults=(Fault("status", status=503, path_contains=f"/{TILE_B.x}/"),)) as server:
        code, out = _fetch(tmp_path, server, "--rate-limit", "1000")
    assert code == 1
    assert not out.exists() and not list(tmp_path.glob("*.tif*"))  # nothing partial, no temp file
    err = capsys.readouterr().err
    assert f"{ZOOM}/{TILE_B.x}/{TILE_B.y}" in err and f"{TILE_A.x}/{TILE_A.y}" not in err


def test_max_tiles_refuses_before_any_download(tmp_path, capsys):
    with TileServer() as server:
        code, out = _fetch(tmp_path, server, "--max-tiles", "1")
        assert server.total == 0
    assert code == 2 and not out.exists()
    assert "2" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("area", "message"),
    [
        (["--bbox", "13.4,52.5,13.3,52.6"], "bbox"),
        (["--bbox", "1,2,3"], "bbox"),
        (["--bbox", "10,85.2,10.1,85.3"], "85.05"),
        (["--center", "52.5,13.4"], "radius"),
        ([], "area"),
    ],
)
def test_bad_areas_exit_2_with_one_line(tmp_path, capsys, area, message):
    with TileServer() as server:
        argv = ["fetch", "--source", server.template(), *area, "--out", str(tmp_path / "x.tif")]
        code = main([*argv, "--cache-dir", str(tmp_path / "tiles")])
        assert server.total == 0
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "x.tif").exists()


def test_negative_coordinates_are_values_not_options(tmp_path, realdata):
    """`--bbox -105.x,...` (western longitudes) must parse as a value."""
    out = tmp_path / "colorado.tif"
    source = realdata / "aerial" / "colorado_hro_0p15m_utm13n.tif"
    code = main(["fetch", "--source", str(source), "--bbox", "-106,38,-104,40", "--gsd", "0.3", "--out", str(out)])
    assert code == 0
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32613 and src.res == (0.3, 0.3)
        assert (src.dataset_mask() > 0).mean() > 0.8


def test_real_robosat_tiles_native_mosaic(tmp_path, realdata):
    tiles_dir = realdata / "tiles" / "robosat_jpg"
    top, bottom = mercantile.Tile(69108, 105091, 18), mercantile.Tile(69108, 105092, 18)
    with TileServer(real_tiles_dir=tiles_dir) as server:
        out = tmp_path / "robosat.tif"
        argv = ["fetch", "--source", server.real_template(), "--bbox", _inner_bbox(top, bottom, inset=0.0001)]
        argv += ["--zoom", "18", "--crs", "native", "--out", str(out), "--cache-dir", str(tmp_path / "c")]
        assert main(argv) == 0
    with rasterio.open(out) as src:
        mosaic = src.read()
        assert src.res[0] == pytest.approx(2 * np.pi * 6378137 / (512 * 2**18))  # 512-px tiles
        left, top_m = src.bounds.left, src.bounds.top
        tile_bounds = mercantile.xy_bounds(top)
        col0 = round((left - tile_bounds.left) / src.res[0])
        row0 = round((tile_bounds.top - top_m) / src.res[1])
    originals = [
        np.asarray(Image.open(tiles_dir / "18" / "69108" / f"{t.y}.jpg").convert("RGB")) for t in (top, bottom)
    ]
    expected = np.concatenate(originals, axis=0).transpose(2, 0, 1)
    expected = expected[:, row0 : row0 + mosaic.shape[1], col0 : col0 + mosaic.shape[2]]
    assert mosaic.shape[1] > 1000 and mosaic.shape[2] > 500  # nearly both tiles
    np.testing.assert_array_equal(mosaic, expected)


def test_osm_file_source_writes_class_bands(tmp_path, realdata):
    out = tmp_path / "osm.tif"
    source = realdata / "osm" / "planet_10.068,48.135_10.071,48.137.osm"
    assert main(["fetch", "--source", str(source), "--bbox", "10.068,48.135,10.071,48.137", "--out", str(out)]) == 0
    with rasterio.open(out) as src:
        assert src.descriptions == ("areas", "ways", "nodes") and src.dtypes[0] == "uint8"
        assert src.res == (0.5, 0.5) and src.crs.to_epsg() == 32632
        classes = json.loads(src.tags()["CLASSES"])
        areas = src.read(1)
    assert classes["areas"][0] == "building"
    assert 0.02 < (areas == 1).mean() < 0.6  # buildings present, not everywhere
    with pytest.raises(SystemExit):
        main(
            [
                "fetch",
                "--source",
                str(source),
                "--bbox",
                "10.068,48.135,10.071,48.137",
                "--gsd",
                "-1",
                "--out",
                str(out),
            ]
        )


def test_osm_native_crs_is_refused(tmp_path, realdata, capsys):
    source = realdata / "osm" / "planet_10.068,48.135_10.071,48.137.osm"
    argv = ["fetch", "--source", str(source), "--bbox", "10.068,48.135,10.071,48.137", "--crs", "native"]
    assert main([*argv, "--out", str(tmp_path / "o.tif")]) == 2
    assert "native" in capsys.readouterr().err


def test_geotiff_outside_the_area_is_an_empty_result(tmp_path, realdata, capsys):
    source = realdata / "aerial" / "colorado_hro_0p15m_utm13n.tif"
    assert (
        main(["fetch", "--source", str(source), "--bbox", "10,45,10.01,45.01", "--out", str(tmp_path / "e.tif")]) == 2
    )
    assert "empty result" in capsys.readouterr().err


def test_classify_source():
    assert classify_source("osm") == "osm"
    assert classify_source("extract.osm.bz2") == "osm"
    assert classify_source("https://a.example/{z}/{x}/{y}.png") == "xyz"
    assert classify_source("Esri.WorldImagery") == "xyz"
    assert classify_source("/vsicurl/https://example.org/cog.tif") == "geotiff"
    with pytest.raises(ValueError, match="not found"):
        classify_source("missing/ortho.tif")


def test_png_is_decodable_by_tile_server_helper():
    """Guard for the tests above: generated tiles differ between neighbours (so a shifted mosaic cannot pass)."""
    a, b = tile_rgb(TILE_A.x, TILE_A.y, ZOOM), tile_rgb(TILE_B.x, TILE_B.y, ZOOM)
    assert not np.array_equal(a, b) and len(np.unique(a.reshape(-1, 3), axis=0)) > 100
    assert Image.open(io.BytesIO(b"not an image") if False else io.BytesIO(_png(a))).size == (256, 256)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()

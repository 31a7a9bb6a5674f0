"""``crossview locate`` through the CLI on a small synthetic town with the shipped model: outputs, bad files,
interruption and resume, CSV, early failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas
import numpy as np
import pytest
import rasterio
from locate_fixtures import make_town, write_priors
from pyproj import Transformer
from test_imagemeta import png_with_header_size

from crossview.accuracy import pose_errors, summarize
from crossview.cli import main as cli_main
from crossview.export import read_jsonl, read_results
from crossview.locate import DEFAULT_MODEL, run_state_path, sidecar_path

pytestmark = pytest.mark.usefixtures("single_torch_thread")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def town(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("locate")
    folder = make_town(root / "world")
    write_priors(folder, root / "priors.csv")
    return folder


def _locate(town: Path, out: Path, *inputs: str | Path, extra: tuple[str, ...] = ()) -> int:
    priors = town.parent.parent / "priors.csv"
    argv = ["locate", *map(str, inputs), "--map", str(town / "map.tif"), "--priors", str(priors)]
    return cli_main([*argv, "--out", str(out), "--workers", "0", "--top-k", "3", *extra])


def test_locate_writes_geojson_that_gdal_reads(town, tmp_path, capsys):
    out = tmp_path / "results.geojson"
    assert _locate(town, out, town / "panorama", town / "pinhole", extra=("--ellipses",)) == 0
    assert "8 located, 0 failed of 8 images" in capsys.readouterr().err
    frame = geopandas.read_file(out)
    assert frame.crs.to_epsg() == 4326
    poses = frame[frame["kind"] == "pose"]
    assert len(poses) == 8 and set(poses["status"]) == {"ok"}
    assert set(frame["kind"]) == {"pose", "ellipse", "heading"}
    results, meta = read_results(out)
    assert meta["model"] == DEFAULT_MODEL and meta["settings"]["top_k"] == 3
    assert [r.camera.model for r in results] == ["panorama"] * 4 + ["pinhole"] * 4
    assert all(r.prior.source == "cli" and r.prior.radius_m == 30.0 for r in results)
    errors = pose_errors(results, town / "poses.csv")
    summary = summarize(errors)
    # Every pose lies inside its prior disc (30 m around a position 10 m from the truth).
    assert np.nanmax([e.position_m for e in errors]) < 40.0, summary
    # The easy cases, panoramas with a 30 m prior, meet the locate issue's targets: median position error 2 m and
    # heading error 3 degrees (measured with synth-v7: 0.6, 1.0, 0.7 and 2.2 m; 1.2, 2.9, 1.6 and 1.0 degrees).
    panoramas = summarize([e for e in errors if e.camera == "panorama"])
    assert panoramas["median_position_error_m"] <= 2.0 and panoramas["median_heading_error_deg"] <= 3.0, panoramas
    # Pinhole views (their field of view from EXIF) are found: half of these four within 5 m and 10 degrees (measured:
    # 2.3, 0.9, 21.3 and 13.7 m). Four views are too few for a median; test_demo asserts the pinhole targets on 18.
    found = [e for e in errors if e.camera == "pinhole" and e.position_m <= 5.0]
    assert len(found) >= 2 and all(e.heading_deg <= 10.0 for e in found), summary
    assert all(np.isfinite(r.position_std_m) and 0 <= r.heading_deg < 360 for r in results)
    assert sidecar_path(out).is_file() and len(read_jsonl(sidecar_path(out))) == 8


def test_without_a_prior_the_whole_small_map_is_searched(town, tmp_path, capsys):
    out = tmp_path / "results.csv"
    argv = ["locate", str(town / "panorama"), "--map", str(town / "map.tif"), "--no-exif-prior", "--out", str(out)]
    assert cli_main([*argv, "--workers", "0"]) == 0
    assert "4 located, 0 failed of 4 images" in capsys.readouterr().err
    results, _ = read_results(out)
    assert all(r.prior.lat is None for r in results)
    errors = pose_errors(results, town / "poses.csv")
    # Searched over the whole map (290 m x 330 m, 0.1 km^2): every pose is on it, and the panoramas' median
    # position error meets the locate issue's 2 m (measured: 1.0, 0.3, 1.0 and 0.7 m).
    with rasterio.open(town / "map.tif") as src:
        bounds, crs = src.bounds, src.crs
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(
        [r.lon for r in results], [r.lat for r in results]
    )
    assert all(bounds.left <= a <= bounds.right and bounds.bottom <= b <= bounds.top for a, b in zip(x, y, strict=True))
    assert summarize(errors)["median_position_error_m"] <= 2.0, summarize(errors)


def test_bad_files_are_recorded_and_the_run_goes_on(town, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    first, second = sorted((town / "panorama").iterdir())[:2]
    good = shutil.copy(first, folder / first.name)  # named as in the priors file, like the truncated one
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    (folder / second.name).write_bytes(Path(good).read_bytes()[:2000])  # a readable header: it has a prior
    png_with_header_size(folder / "bomb.png", 40_000, 40_000)
    out = tmp_path / "mixed.geojson"
    assert _locate(town, out, folder) == 0
    results, _ = read_results(out)
    by_name = {Path(r.image).name: r for r in results}
    assert [Path(r.image).name for r in results] == sorted(by_name)  # input order: the sorted folder
    assert by_name[first.name].status == "ok"
    for name, reason in [("empty.jpg", "empty"), ("text.png", "not"), (second.name, "truncated"),
                         ("bomb.png", "too large")]:  # fmt: skip
        assert by_name[name].status == "failed" and reason in by_name[name].error.lower(), by_name[name].error
    assert "1 located, 4 failed" in capsys.readouterr().err
    assert _locate(town, tmp_path / "strict.geojson", folder, extra=("--strict",)) == 1


def test_csv_output_matches_the_geojson(town, tmp_path):
    images = sorted((town / "panorama").iterdir())[:2]
    assert _locate(town, tmp_path / "a.geojson", *images) == 0
    assert _locate(town, tmp_path / "a.csv", *images) == 0
    from_geojson, _ = read_results(tmp_path / "a.geojson")
    from_csv, _ = read_results(tmp_path / "a.csv")
    assert [r.to_dict() for r in from_csv] == [r.to_dict() for r in from_geojson]


def test_images_encoded_in_one_batch_get_the_poses_they_get_one_at_a_time(town, tmp_path):
    inputs = (town / "panorama", town / "pinhole")
    assert _locate(town, tmp_path / "batched.geojson", *inputs) == 0
    assert _locate(town, tmp_path / "single.geojson", *inputs, extra=("--batch-size", "1")) == 0
    batched, _ = read_results(tmp_path / "batched.geojson")
    single, _ = read_results(tmp_path / "single.geojson")
    assert [r.image for r in batched] == [r.image for r in single] and len(batched) == 8
    for one, other in zip(batched, single, strict=True):
        assert one.status == other.status == "ok"
        # a batched convolution may round differently: the same pose to a centimetre and a hundredth of a degree
        assert abs(one.lat - other.lat) < 1e-7 and abs(one.lon - other.lon) < 1e-7, (one, other)
        assert abs((one.heading_deg - other.heading_deg + 180.0) % 360.0 - 180.0) < 0.01, (one, other)


def test_retrieval_search_refines_the_retrieved_chips(town, tmp_path):
    out = tmp_path / "retrieval.geojson"
    assert _locate(town, out, town / "panorama", extra=("--search", "retrieval")) == 0
    results, meta = read_results(out)
    assert meta["settings"]["search"] == "retrieval" and [r.status for r in results] == ["ok"] * 4
    errors = pose_errors(results, town / "poses.csv")
    assert max(e.position_m for e in errors) < 40.0  # inside each prior disc (LM stays near its chip)


def test_an_index_with_its_feature_raster_locates_without_the_map(town, tmp_path, capsys):
    map_copy = tmp_path / "map.tif"
    shutil.copy(town / "map.tif", map_copy)
    index = tmp_path / "town.idx"
    assert cli_main(["index", "--map", str(map_copy), "--model", DEFAULT_MODEL, "--out", str(index)]) == 0
    map_copy.unlink()  # the dense search in small prior discs reads only the index's feature raster
    priors = town.parent.parent / "priors.csv"
    common = [str(town / "panorama"), "--index", str(index), "--priors", str(priors), "--workers", "0"]
    out = tmp_path / "indexed.geojson"
    assert cli_main(["locate", *common, "--out", str(out)]) == 0
    assert "4 located, 0 failed of 4 images" in capsys.readouterr().err
    panoramas = summarize(pose_errors(read_results(out)[0], town / "poses.csv"))
    assert panoramas["median_position_error_m"] <= 2.0 and panoramas["median_heading_error_deg"] <= 3.0, panoramas
    never = tmp_path / "never.geojson"  # retrieval cuts chips of the map: refused before any image
    assert cli_main(["locate", *common, "--search", "retrieval", "--out", str(never)]) != 0
    err = capsys.readouterr().err
    assert "map.tif is not there" in err and len(err.strip().splitlines()) == 1 and not never.exists(), err


def test_unusable_inputs_fail_before_any_image(town, tmp_path, capsys):
    out = tmp_path / "never.geojson"
    image = next((town / "panorama").iterdir())
    broken_map = tmp_path / "broken.tif"
    broken_map.write_bytes(b"II*\x00garbage")
    cases = [
        (["--map", str(broken_map)], "broken.tif"),
        (["--map", str(town / "map.tif"), "--model", str(tmp_path / "missing.pt")], "missing.pt"),
        (["--map", str(town / "map.tif"), "--priors", str(tmp_path / "nope.csv")], "nope.csv"),
        (["--map", str(town / "map.tif"), "--top-k", "0"], "--top-k"),
    ]
    for options, named in cases:
        code = cli_main(["locate", str(image), "--out", str(out), "--workers", "0", *options])
        err = capsys.readouterr().err
        assert code in (1, 2) and named in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists() and not sidecar_path(out).exists()
    assert cli_main(["locate", str(tmp_path / "nothing"), "--map", str(town / "map.tif"), "--out", str(out)]) == 1
    assert "nothing: no such file or folder" in capsys.readouterr().err


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_interrupted_run_resumes_to_the_same_file(town, tmp_path, capsys):
    inputs = [str(town / "panorama"), str(town / "pinhole")]
    priors = str(town.parent.parent / "priors.csv")
    common = ["--map", str(town / "map.tif"), "--priors", priors, "--workers", "0", "--top-k", "2"]
    out = tmp_path / "run.geojson"
    argv = [sys.executable, "-m", "crossview", "locate", *inputs, "--out", str(out), *common, "--batch-size", "1"]
    process = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sidecar = sidecar_path(out)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if sidecar.is_file() and len(read_jsonl(sidecar)) >= 2:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[1].decode()[-2000:]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 130
    partial, _ = read_results(out)  # written on SIGTERM with the images done so far
    assert 2 <= len(partial) < 8
    assert subprocess.run([*argv, "--resume"], env=_env(), capture_output=True, timeout=600).returncode == 0
    resumed, meta = read_results(out)
    assert sorted(r.image for r in resumed) == sorted({r.image for r in resumed}) and len(resumed) == 8
    assert len(read_jsonl(sidecar)) == 8  # every image exactly once
    fresh = tmp_path / "fresh.geojson"
    assert _locate(town, fresh, *inputs, extra=("--top-k", "2", "--batch-size", "1")) == 0
    uninterrupted, _ = read_results(fresh)
    assert [r.to_dict() for r in resumed] == [r.to_dict() for r in uninterrupted]
    state = json.loads(run_state_path(out).read_text())
    assert meta["time"] == state["time"]  # the first run's start time is kept
    assert cli_main([*argv[3:], "--resume", "--top-k", "4"]) == 2  # a resume with other settings is refused
    assert "other settings (top_k)" in capsys.readouterr().err

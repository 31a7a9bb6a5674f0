"""``crossview bench`` through the real entry points (tiny batches so the test stays fast)."""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossview import __version__
from crossview.bench import STAGES
from crossview.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "crossview", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_dense_search_stage_times_the_fft_search_against_direct_correlation(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--stages", "dense_search", "--out", str(out)]) == 0
    figures = json.loads(out.read_text(encoding="utf-8"))["stages"]["dense_search"]
    assert set(figures["variants"]) == {"fft_search", "direct_conv2d_correlation_only"}
    assert figures["settings"]["cells"] == 2 * (math.ceil(50.0 / figures["settings"]["cell_m"]) + 1) + 1
    fft, direct = figures["variants"]["fft_search"], figures["variants"]["direct_conv2d_correlation_only"]
    assert fft["ms_per_batch"] > 0 and direct["ms_per_batch"] > 0
    assert figures["ratios"]["fft_search_over_direct"] == pytest.approx(
        direct["ms_per_batch"] / fft["ms_per_batch"], rel=0.01
    )


def test_bench_quick_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    stages = ["polar_transform", "tile_fetch"]  # the slow stages (a synthetic town, Monaco) are run by hand
    assert main(["bench", "--quick", "--batch", "2", "--stages", ",".join(stages), "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary file left behind

    assert set(report["stages"]) == set(stages) and set(STAGES) >= {*stages, "osm_rasterize", "synth"}
    tiles = report["stages"]["tile_fetch"]
    assert set(tiles["variants"]) == {"download_1_workers", "download_16_workers", "cache_hit"}
    assert tiles["settings"]["latency_ms"] == 20 and tiles["settings"]["speedup_16_vs_1"] > 0
    polar = report["stages"]["polar_transform"]
    assert polar["settings"]["chip"] == [3, 640, 640] and polar["settings"]["output"] == [128, 512]
    assert set(polar["variants"]) == {"uint8", "float32"}
    for figures in polar["variants"].values():
        assert figures["batch"] == 2 and figures["repeats"] >= 1
        assert figures["ms_per_batch"] > 0 and figures["per_s"] > 0
        # rates are rounded to 0.1/s and times to 1 us: compare within both roundings
        rate = pytest.approx(2 / (figures["ms_per_batch"] / 1000), rel=1e-3, abs=0.051)  # the same median
        assert figures["per_s"] == rate
        assert figures["best_per_s"] == pytest.approx(2 / (figures["best_ms_per_batch"] / 1000), rel=1e-3, abs=0.051)
        assert figures["best_ms_per_batch"] <= figures["ms_per_batch"]

    machine = report["machine"]
    assert machine["crossview"] == __version__ == report["crossview"]["version"]
    assert machine["torch"] == torch.__version__
    assert machine["logical_cores"] == os.cpu_count() and machine["torch_threads"] == torch.get_num_threads()
    assert machine["cpu"] and machine["device"] == "cpu" and "gpu" not in machine
    date = datetime.datetime.fromisoformat(machine["date_utc"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - date) < datetime.timedelta(minutes=10)

    table = capsys.readouterr().out
    assert "polar_transform" in table and "uint8" in table and "float32" in table and "chips/s" in table


def test_bench_cuda_without_cuda_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "crossview bench: error: --device cuda: CUDA is not available"
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stages", "polar_transform,nope"], "unknown stage(s) ['nope']"),
        (["--out", "{tmp}/missing/bench.json"], "does not exist"),
    ],
)
def test_bench_bad_options_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [arg.format(tmp=tmp_path) for arg in args]
    assert main(["bench", "--quick", "--batch", "1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_module_entry_version_and_help() -> None:
    version = run_module("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"crossview {__version__}"
    usage = run_module("--help")
    assert usage.returncode == 0 and "bench" in usage.stdout
    bench_help = run_module("bench", "--help")
    assert bench_help.returncode == 0 and "crossview bench --quick" in bench_help.stdout
    assert "--batch" not in bench_help.stdout  # a hidden test option


def test_locate_stage_reads_the_seconds_spent_on_images_from_locates_summary_line() -> None:
    from crossview.bench_pipeline import summary_seconds
    from crossview.locate import LocateSummary

    summary = LocateSummary(total=40, ok=39, failed=1, seconds=9.83)
    stderr = f"locate: 100%|####| 40/40\n{summary.line()}\n  a.jpg: not an image\n"
    assert summary_seconds(stderr) == 9.8
    with pytest.raises(RuntimeError, match="no summary line"):
        summary_seconds("Traceback (most recent call last):\n")


def test_locate_stage_measures_the_peak_memory_of_its_own_command_only() -> None:
    from crossview.bench_pipeline import run_measured

    def child(megabytes: int) -> list[str]:
        code = (
            f"import sys, time; block = bytearray({megabytes} << 20); print('held', file=sys.stderr); time.sleep(0.5)"
        )
        return [sys.executable, "-c", code]

    if not Path("/proc").is_dir():
        pytest.skip("the peak memory is read from /proc (Linux)")
    stderr, big_kb = run_measured(child(300), dict(os.environ))
    assert stderr == "held\n" and 300 * 1024 < big_kb < 400 * 1024
    # a later, smaller command gets its own figure, not the largest of this process's children so far
    _, small_kb = run_measured(child(10), dict(os.environ))
    assert small_kb < 100 * 1024
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_measured([sys.executable, "-c", "import sys; sys.exit('no such map')"], dict(os.environ))
    assert failed.value.returncode == 1 and "no such map" in failed.value.stderr

"""The refiner's benchmark stage: figures, sizes pinned to the shipped model's config."""

from __future__ import annotations

import time

import pytest

from crossview.bench import BenchConfig
from crossview.refinement import benchmark
from crossview.refinement.benchmark import BENCH_SIZES, bench_refiner

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def time_once(fn, config):
    """One timed call instead of warm-up + repeats: the figures' structure, not their values, is tested here."""
    start = time.perf_counter()
    fn()
    return [time.perf_counter() - start]


def test_bench_refiner_reports_per_candidate_figures_and_accuracy(monkeypatch):
    monkeypatch.setattr(benchmark, "time_call", time_once)
    report = bench_refiner(BenchConfig(quick=True, batch=2))
    assert report["unit"] == "candidates"
    assert set(report["variants"]) == {"batched_analytic", "batched_autograd", "single_analytic"}
    for figures in report["variants"].values():
        assert figures["batch"] == 2 and figures["repeats"] == 1
        assert figures["ms_per_candidate"] == pytest.approx(figures["ms_per_batch"] / 2, abs=1e-3)
    settings = report["settings"]
    assert settings["levels_ground_hw"] == [[4, 16], [8, 32], [16, 64]]
    assert settings["levels_chip_px"] == [8, 16, 32]
    # 3 m / 8° starts end within a decimetre and a tenth of a degree (2.25 m chip cells at the finest level).
    assert settings["success_rate_10cm_0.1deg"] == 1.0
    assert settings["speedup_batched_vs_single"] > 0


def test_bench_sizes_are_those_of_the_shipped_model():
    checkpoints = pytest.importorskip("crossview.checkpoints")
    try:
        config = checkpoints.load_checkpoint("synth-v1").model_config
    except Exception as error:  # a clone without the shipped model
        pytest.skip(f"synth-v1 not available: {error}")
    assert BENCH_SIZES["pano_hw"] == (config["pano_height"], config["pano_width"])
    assert BENCH_SIZES["aerial_size"] == config["aerial_size"]
    assert list(BENCH_SIZES["refine_channels"]) == list(config["refine_channels"])

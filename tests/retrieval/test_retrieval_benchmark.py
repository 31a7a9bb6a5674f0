"""The chip-index benchmarks: the synthetic descriptors match what synth-v1 produces, and the stage functions
return the figures ``crossview bench`` tabulates.

Reference for the descriptor statistics: synth-v1 descriptors of 9,025 chips of a synthetic town on a 5 m
lattice (measured once, numbers in crossview/retrieval/benchmark.py): mean similarity 0.54 at 5 m, 0.50 at
10 m, 0.12 beyond 80 m; PCA participation ratio 32.
"""

from __future__ import annotations

import numpy as np
import pytest
from retrieval_fixtures import tiny_model

from crossview.bench import BenchConfig
from crossview.retrieval.benchmark import (
    bench_index_build,
    bench_index_query,
    recall_at_k,
    spatial_descriptors,
    square_lattice,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_spatial_descriptors_resemble_real_chip_descriptors():
    lattice = square_lattice(2500, 5.0)  # 250 m square, 5 m steps
    (descriptors,) = spatial_descriptors([lattice], 512, seed=0)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(lattice), 200, replace=False)
    similarity = descriptors[chosen] @ descriptors.T
    distance = np.linalg.norm(lattice[chosen][:, None] - lattice[None], axis=-1)
    near = similarity[(distance > 0) & (distance <= 5.0)].mean()
    far = similarity[distance > 80.0].mean()
    assert 0.45 < near < 0.62  # synth-v1: 0.54
    assert 0.08 < far < 0.18  # synth-v1: 0.12
    centred = descriptors - descriptors.mean(axis=0)
    variance = np.clip(np.linalg.eigvalsh(centred.T.astype(np.float64) @ centred), 0.0, None)  # PCA spectrum
    variance /= variance.sum()
    assert 20 < 1.0 / np.sum(variance**2) < 45  # participation ratio, synth-v1: 32
    # uniform random unit vectors, for contrast, are all nearly orthogonal
    uniform = rng.standard_normal((300, 512))
    uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
    assert abs((uniform @ uniform.T)[np.triu_indices(300, 1)].mean()) < 0.01


def test_spatial_descriptors_are_reproducible_and_chunking_does_not_matter():
    points = square_lattice(500)
    first = spatial_descriptors([points], 16, seed=3)[0]
    again = spatial_descriptors([points], 16, seed=3)[0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, spatial_descriptors([points], 16, seed=4)[0])


def test_bench_index_query_reports_latency_recall_and_memory():
    figures = bench_index_query(BenchConfig(quick=True), sizes=(3000,))
    variants = figures["variants"]
    assert figures["unit"] == "queries" and figures["settings"]["sizes"] == [3000]
    assert variants["flat_3000"]["recall@10"] == 1.0 and variants["flat_3000"]["nearest_in_top10"] == 1.0
    assert variants["hnsw_ef1024_3000"]["recall@10"] >= 0.95
    ivf = [v for name, v in variants.items() if name.startswith("ivf_")]
    assert len(ivf) == 3 and ivf[0]["recall@10"] <= ivf[-1]["recall@10"]
    for values in variants.values():
        assert values["ms_per_query"] > 0 and values["per_s"] > 0 and values["batch"] == 32
    flat_mb = variants["flat_3000"]["memory_mb"]
    assert flat_mb == pytest.approx(3000 * 512 * 4 / 1e6, rel=0.01)  # float32 vectors
    assert variants["hnsw_ef128_3000"]["memory_mb"] > flat_mb  # plus the graph
    assert "flat_prior100m_3000" in variants


def test_bench_index_build_reports_chips_per_second():
    """With a tiny model for speed (the stage's default model, synth-v1, is tested by tests/test_index_command.py)."""
    figures = bench_index_build(BenchConfig(quick=True), side_m=50.0, model=tiny_model())
    build = figures["variants"]["build_save"]
    assert figures["unit"] == "chips" and figures["settings"]["model"] == "safa-resnet18-lite"
    assert build["batch"] == figures["settings"]["chips"] > 0
    assert build["per_s"] == pytest.approx(build["batch"] / (build["ms_per_batch"] / 1000), rel=0.01)


def test_recall_at_k_counts_overlap_and_the_nearest_chip():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 9], [6, 7, 8, 5]])  # query 0: 2 of 4, nearest (1) missed; query 1: all
    overlap, nearest = recall_at_k(found, truth)
    assert overlap == pytest.approx((2 / 4 + 4 / 4) / 2)
    assert nearest == pytest.approx(0.5)

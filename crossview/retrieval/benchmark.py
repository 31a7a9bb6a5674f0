"""Benchmarks of the chip index: building one from a map with a model, and querying FAISS indexes of 1e4-1e6 chips.

Synthetic descriptors (:func:`spatial_descriptors`): uniform random unit vectors in 512 dimensions are all
nearly orthogonal (similarities ~N(0, 1/512)), a case where every approximate index fails and which no model
produces. Real chip descriptors vary smoothly with position, because neighbouring chips overlap, and share a
common direction. Measured on synth-v1 descriptors of 9,025 chips of a synthetic town (5 m lattice): mean
descriptor of norm 0.35, PCA participation ratio 32 (10 components hold 46% of the variance, 50 hold 64%),
mean similarity 0.54 for chips 5 m apart, 0.50 at 10 m, 0.38 at 11-20 m, 0.25 at 21-40 m, 0.16 at 41-80 m and
0.12 beyond. The generator reproduces these (0.38 / 33 / 42% / 69% and 0.54, 0.52, 0.44, 0.30, 0.21, 0.14):
per-dimension scales ``i^-1/2`` (i = 1..D), a shared mean direction, and half of the variance from two
smooth random fields over the map (bilinear interpolation of Gaussian vectors on 25 m and 80 m grids), half
independent per chip. Queries are descriptors of random off-lattice positions from the same fields.

Such descriptors make large indexes hard for approximate search, as a weak model's would: at 1e6 chips the
exact top-1, top-10 and top-100 similarities of a query average 0.64, 0.57 and 0.53 (near ties), and only a
third of its exact top 10 lie within 30 m of its position (the rest are look-alikes kilometres away).
Recall figures: ``recall@10`` is the overlap of the 10 chips found with the exact top 10, ``nearest_in_top10``
the fraction of queries whose exact best chip is among them.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossview.bench import BenchConfig, batch_figures, time_call

DESCRIPTOR_DIM = 512
"""Descriptor length of synth-v1 (``safa-resnet18-lite``: 8 SAFA maps x 64 channels)."""

LATTICE_STRIDE_M = 10.0
FIELD_SCALES = ((25.0, 0.6), (80.0, 0.4))
"""(grid spacing in metres, share of the spatial variance) of the smooth fields."""
SPATIAL_SHARE = 0.5
MEAN_SHARE = 1.0 / 7.0
"""Squared norm of the common direction relative to the varying part: mean pairwise similarity ~1/8."""

QUERY_SIZES_FULL = (10_000, 100_000, 1_000_000)
QUERY_SIZES_QUICK = (10_000, 100_000)
RECALL_QUERIES = 200
TIMED_QUERIES = 32
RECALL_K = 10
PRIOR_RADIUS_M = 100.0
HNSW_EF_SWEEP = (128, 256, 512, 768, 1024, 1536)
IVF_PROBE_SWEEP = (1 / 16, 1 / 8, 1 / 4)


# ---- synthetic descriptors ---------------------------------------------------------------------------------


class _SmoothField:
    """Gaussian vectors on a square grid, bilinearly interpolated (and renormalised to unit variance)."""

    def __init__(self, low: np.ndarray, high: np.ndarray, spacing_m: float, dim: int, rng: np.random.Generator):
        self.low, self.spacing_m = low, spacing_m
        cols, rows = (np.floor((high - low) / spacing_m).astype(int) + 2).tolist()
        self.nodes = rng.standard_normal((cols, rows, dim), dtype=np.float32)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        grid = (points - self.low) / self.spacing_m
        first = np.floor(grid).astype(np.int64)
        fx, fy = (grid - first).astype(np.float32).T
        weights = ((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)
        values = np.zeros((len(points), self.nodes.shape[2]), dtype=np.float32)
        for (dx, dy), weight in zip(((0, 0), (1, 0), (0, 1), (1, 1)), weights, strict=True):
            values += weight[:, None] * self.nodes[first[:, 0] + dx, first[:, 1] + dy]
        return values / np.sqrt(sum(w * w for w in weights))[:, None]


def spatial_descriptors(
    points_xy: Sequence[np.ndarray], dim: int = DESCRIPTOR_DIM, *, seed: int = 0, chunk: int = 65_536
) -> list[np.ndarray]:
    """Unit descriptors that vary smoothly with position, like those of overlapping map chips (module docstring).

    Args:
        points_xy: groups of (N_i, 2) positions in metres (e.g. the lattice and the queries), drawn from the
            same fields.
        dim: descriptor length D.
        seed: random seed.
        chunk: positions generated at once (bounds the memory).

    Returns:
        One (N_i, D) float32 array of unit vectors per group.
    """
    rng = np.random.default_rng(seed)
    every = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in points_xy])
    low, high = every.min(axis=0), every.max(axis=0)
    fields = [(_SmoothField(low, high, spacing, dim, rng), share) for spacing, share in FIELD_SCALES]
    scale = np.arange(1, dim + 1, dtype=np.float64) ** -1.0
    scale = np.sqrt(scale / scale.sum()).astype(np.float32)
    mean = rng.standard_normal(dim)
    mean = (mean * math.sqrt(MEAN_SHARE) / np.linalg.norm(mean)).astype(np.float32)
    groups = []
    for points in points_xy:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        out = np.empty((len(points), dim), dtype=np.float32)
        for start in range(0, len(points), chunk):
            part = points[start : start + chunk]
            values = np.float32(math.sqrt(1 - SPATIAL_SHARE)) * rng.standard_normal((len(part), dim), np.float32)
            for field, share in fields:
                values += np.float32(math.sqrt(SPATIAL_SHARE * share)) * field(part)
            values = values * scale + mean
            out[start : start + len(part)] = values / np.linalg.norm(values, axis=1, keepdims=True)
        groups.append(out)
    return groups


def square_lattice(count: int, stride_m: float = LATTICE_STRIDE_M) -> np.ndarray:
    """(count, 2) positions filling a square lattice of step ``stride_m`` row by row."""
    side = math.ceil(math.sqrt(count))
    ids = np.arange(count)
    return np.stack([(ids % side) * stride_m, (ids // side) * stride_m], axis=-1).astype(np.float64)


# ---- query benchmark ---------------------------------------------------------------------------------------


def _size_label(count: int) -> str:
    """``1e4`` for 10000, else the number."""
    exponent = round(math.log10(count)) if count > 0 else 0
    return f"1e{exponent}" if 10**exponent == count else str(count)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Recall of approximate (Q, k) results against exact ones.

    Returns:
        (``k``-recall@k: mean fraction of the exact top-k that was found; 1-recall@k: fraction of queries whose
        exact nearest chip is among the k found, the "R@k" of FAISS's benchmarks).
    """
    overlap = [len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist(), strict=True)]
    nearest = [b[0] in a for a, b in zip(found.tolist(), truth.tolist(), strict=True)]
    return float(np.mean(overlap)), float(np.mean(nearest))


def _query_figures(index: Any, queries: np.ndarray, truth: np.ndarray, config: BenchConfig, prior=None) -> dict:
    """ms per query (one query per call, ``TIMED_QUERIES`` in a row), recall@10 (overlap of the top 10 with the
    exact top 10) and nearest_in_top10 (exact nearest chip among the 10 found) against ``truth``."""
    timed = queries[:TIMED_QUERIES]

    def one_by_one() -> None:
        for q in range(len(timed)):
            index.search(timed[q : q + 1], RECALL_K, prior=None if prior is None else prior(q))

    seconds = time_call(one_by_one, config)
    figures: dict[str, Any] = batch_figures(seconds, len(timed))
    figures["ms_per_query"] = round(figures["ms_per_batch"] / len(timed), 3)
    if truth is not None:
        overlap, nearest = recall_at_k(index.search(queries, RECALL_K).ids, truth)
        figures[f"recall@{RECALL_K}"] = round(overlap, 4)
        figures[f"nearest_in_top{RECALL_K}"] = round(nearest, 4)
    return figures


def _geometry():
    from crossview.geometry.frames import LocalFrame
    from crossview.retrieval.chips import ChipGeometry

    return ChipGeometry(LocalFrame.from_center(lat=52.5, lon=13.4), 128, 58.0, "user")


def _index_variants(count: int, config: BenchConfig) -> dict[str, dict[str, Any]]:
    """Flat, HNSW and IVF on ``count`` synthetic descriptors: build time, memory, latency and recall@10."""
    from crossview.retrieval.ann import HNSW_EF_SEARCH, index_memory_bytes
    from crossview.retrieval.chip_index import ChipIndex, SearchPrior

    lattice = square_lattice(count)
    origin = np.array([390_000.0, 5_820_000.0])  # metres: Berlin, in the UTM zone of the geometry
    rng = np.random.default_rng(1)
    query_xy = rng.uniform(lattice.min(axis=0), lattice.max(axis=0), (RECALL_QUERIES, 2))
    descriptors, queries = spatial_descriptors([lattice, query_xy], seed=count)
    timing = BenchConfig(config.device, quick=True)  # 1 warm-up, 3 repeats: a 1e6 flat query takes ~0.3 s
    variants: dict[str, dict[str, Any]] = {}
    truth = None
    for kind in ("flat", "hnsw", "ivf"):
        start = time.perf_counter()
        index = ChipIndex.from_descriptors(
            descriptors, lattice + origin, geometry=_geometry(), index_type=kind, stride_m=LATTICE_STRIDE_M
        )
        build_s = round(time.perf_counter() - start, 2)
        memory_mb = round(index_memory_bytes(index.faiss_index) / 1e6, 1)
        if kind == "flat":
            truth = index.search(queries, RECALL_K).ids

            def prior(q: int) -> SearchPrior:
                x, y = query_xy[q] + origin
                return SearchPrior.at_xy(x_m=x, y_m=y, radius_m=PRIOR_RADIUS_M)

            figures = _query_figures(index, queries, None, timing, prior)
            variants[f"flat_prior{PRIOR_RADIUS_M:g}m_{_size_label(count)}"] = {**figures, "build_s": build_s}
        sweep = {"flat": [None], "hnsw": HNSW_EF_SWEEP, "ivf": IVF_PROBE_SWEEP}[kind]
        for setting in sweep:
            name = f"{kind}_{_size_label(count)}"
            if kind == "hnsw":
                index.set_search_params(ef_search=setting)
                name = f"hnsw_ef{setting}_{_size_label(count)}"
            elif kind == "ivf":
                nprobe = max(1, round(index.params["nlist"] * setting))
                index.set_search_params(nprobe=nprobe)
                name = f"ivf_{index.params['nlist']}lists_probe{nprobe}_{_size_label(count)}"
            figures = _query_figures(index, queries, truth, timing)
            variants[name] = {**figures, "build_s": build_s, "memory_mb": memory_mb}
        if kind == "hnsw":
            index.set_search_params(ef_search=HNSW_EF_SEARCH)
        del index
    return variants


def bench_index_query(config: BenchConfig, *, sizes: Sequence[int] | None = None) -> dict[str, Any]:
    """Chip-index queries: ms per query (one at a time) and recall@10 against exact search, for flat, HNSW
    (efSearch sweep) and IVF (nprobe sweep) at 1e4, 1e5 and 1e6 chips (quick: 1e4 and 1e5), plus a flat search
    restricted to a 100 m prior; build seconds and index memory (MB) of each. ``sizes`` overrides the counts."""
    import faiss

    if sizes is None:
        sizes = QUERY_SIZES_QUICK if config.quick else QUERY_SIZES_FULL
    variants: dict[str, dict[str, Any]] = {}
    for count in sizes:
        variants.update(_index_variants(count, config))
    settings = {
        "sizes": list(sizes),
        "dim": DESCRIPTOR_DIM,
        "descriptors": "spatially smooth synthetic (crossview.retrieval.benchmark.spatial_descriptors)",
        "timed_queries": TIMED_QUERIES,
        "recall_queries": RECALL_QUERIES,
        "k": RECALL_K,
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "device": "cpu",
    }
    return {"unit": "queries", "settings": settings, "variants": variants}


# ---- build benchmark ---------------------------------------------------------------------------------------

BUILD_MODEL = "synth-v1"
BUILD_MAP_SIDE_M = (160.0, 100.0)
"""Side of the random map, metres (full, quick): 289 and 121 chips at the default 10 m stride."""
BUILD_MAP_GSD_M = 0.3


def random_map(side_m: float, *, gsd_m: float = BUILD_MAP_GSD_M, seed: int = 0):
    """A uint8 RGB GeoRaster of smooth random texture, ``side_m`` square in UTM 33N near Berlin."""
    import torch
    import torch.nn.functional as F
    from affine import Affine

    from crossview.maps.raster import GeoRaster

    size = round(side_m / gsd_m)
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, size // 16), max(2, size // 16), generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
    fine = torch.rand(3, size, size, generator=generator)
    array = (255 * (0.8 * smooth + 0.2 * fine)).round().to(torch.uint8).numpy()
    transform = Affine(gsd_m, 0.0, 390_000.0, 0.0, -gsd_m, 5_820_000.0 + side_m)
    return GeoRaster(array=array, crs="EPSG:32633", transform=transform)


def bench_index_build(config: BenchConfig, *, side_m: float | None = None, model: Any = BUILD_MODEL) -> dict[str, Any]:
    """Chips per second to build an index (cut, encode with synth-v1, index, save) from a random 160 m map
    (quick: 100 m) at the default stride, on ``config.device``. ``side_m`` and ``model`` (anything
    ``build_index`` takes) override the map size and the model."""
    import torch

    from crossview.retrieval.build import build_index, resolve_model_source
    from crossview.retrieval.chips import DEFAULT_STRIDE_M

    if side_m is None:
        side_m = BUILD_MAP_SIDE_M[1] if config.quick else BUILD_MAP_SIDE_M[0]
    raster = random_map(side_m)
    source = resolve_model_source(model, config.device)  # loaded once: the figure is about chips
    batch = config.batch_size(full=64, quick=64)
    counts: list[int] = []

    def build() -> None:
        index = build_index(
            raster, source, stride_m=DEFAULT_STRIDE_M, batch_size=batch, device=config.device, progress=False
        )
        counts.append(len(index))
        with tempfile.TemporaryDirectory() as folder:
            index.save(Path(folder) / "bench.idx")

    seconds = time_call(build, BenchConfig(config.device, quick=True, batch=config.batch))
    settings = {
        "model": source.name,
        "map_side_m": side_m,
        "map_gsd_m": BUILD_MAP_GSD_M,
        "stride_m": DEFAULT_STRIDE_M,
        "chips": counts[-1],
        "batch_size": batch,
        "torch_threads": torch.get_num_threads(),
        "device": config.device,
    }
    return {"unit": "chips", "settings": settings, "variants": {"build_save": batch_figures(seconds, counts[-1])}}

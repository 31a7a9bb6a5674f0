"""FAISS indexes of chip descriptors: exact inner product (flat) for small areas, HNSW or IVF for large ones.

Descriptors are unit-norm, so inner product is cosine similarity; every index type uses
``METRIC_INNER_PRODUCT`` and stores the full float32 vectors (no compression), which also lets the index score
any subset of chips exactly (a search restricted to a small prior disc).

Choosing the type (``auto``): flat up to ``AUTO_FLAT_MAX_CHIPS`` = 50,000 chips, HNSW above. Measured on the
2-core reference machine (faiss 1.15 CPU, 512-d ``spatial_descriptors``, one query at a time on one thread,
median of 3 x 32 queries): an exact flat search takes 0.68 ms over 1e4 chips, 2.1 ms over 2e4, 5.5 ms over 5e4,
11.9 ms over 1e5 and 22.7 ms over 2e5 (about 0.11 us a chip: it streams 2 KB a chip from memory). At 5e4 chips
(5 km^2 at the default 10 m stride) it uses half of a 10 ms budget; above, HNSW answers in 1-5 ms. Building HNSW
over 5e4 chips takes about 25 s (48 s for 1e5), little next to encoding them (about 100 chips/s with synth-v1 on
the same cores: 8 minutes).

HNSW beats IVF on these descriptors: they vary smoothly with position (neighbouring chips overlap), so k-means
cells cut through neighbourhoods and IVF needs many probes (1e5 chips, 256 lists: recall@10 0.62 with 8 probes,
0.87 with 32), where HNSW (M 64) reaches 0.97-0.98 at ``efSearch`` 128-256 in 1-2 ms. See
``crossview.retrieval.benchmark`` for the figures at 1e4-1e6 chips.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np

from crossview.errors import ConfigError

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf")

AUTO_FLAT_MAX_CHIPS = 50_000
"""``auto`` builds an exact flat index up to this many chips, HNSW above (see the module docstring)."""

HNSW_M = 64
"""Graph degree of HNSW (128 links per node on the base layer: 512 bytes per chip next to its 2 KB vector).
Measured at 3e5 chips: M = 64 raises recall@10 at efSearch 512 from 0.93 (M = 32) to 0.97 at the same latency
for a 23% longer build."""

HNSW_EF_CONSTRUCTION = 40
"""Build-time beam of HNSW: modest, so that 1e6 chips build in about 15 minutes on 2 cores (efConstruction 80
doubled the build time at 1e6 chips for no gain in recall)."""

HNSW_EF_SEARCH = 1024
"""Search-time beam of HNSW: at 1e6 chips recall@10 0.95 in about 12 ms a query on one core (768: 0.93 in 9 ms);
at 1e5 chips 0.995 in 5 ms."""

IVF_TRAIN_POINTS_PER_LIST = 64
"""k-means of IVF trains on at most this many chips per list (a random, seeded sample)."""

IVF_PROBE_FRACTION = 1.0 / 8.0
"""Fraction of IVF lists probed per query by default."""

SEED = 0

PARALLEL_MIN_QUERIES = 32
"""Smaller query batches search on one OpenMP thread. On the 2-core reference machine one flat query over 1e4
chips takes 0.68 ms on one thread and 15.7 ms on two (OpenMP start-up and spin-waiting dominate such short
parallel sections); even 64 queries at once are no faster on two threads (0.61 vs 0.82 ms a query)."""


@contextmanager
def faiss_threads(count: int | None) -> Iterator[None]:
    """Run FAISS on ``count`` OpenMP threads inside the block (None: leave the setting alone), then restore."""
    if count is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def resolve_index_type(index_type: str, count: int) -> str:
    """The concrete type (``flat``, ``hnsw``, ``ivf``) for ``index_type`` and ``count`` chips.

    Raises:
        ConfigError: an unknown type.
    """
    if index_type not in INDEX_TYPES:
        raise ConfigError(f"index type {index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
    if index_type != "auto":
        return index_type
    return "flat" if count <= AUTO_FLAT_MAX_CHIPS else "hnsw"


def ivf_list_count(count: int) -> int:
    """Number of IVF lists for ``count`` chips: the power of two nearest sqrt(N), at least 1, at most N / 39
    (faiss wants >= 39 training points per list)."""
    if count < 1:
        return 1
    lists = 2 ** round(math.log2(max(math.sqrt(count), 1.0)))
    return int(max(1, min(lists, count // 39)))


def build_faiss_index(descriptors: np.ndarray, index_type: str) -> tuple[faiss.Index, dict[str, Any]]:
    """A FAISS index of unit-norm descriptors, with the chips' ids 0..N-1.

    Args:
        descriptors: (N, D) float32, unit L2 norm.
        index_type: ``flat``, ``hnsw`` or ``ivf`` (see :func:`resolve_index_type` for ``auto``).

    Returns:
        (index, params): params are the JSON-ready settings (``M``, ``ef_construction``, ``ef_search``;
        ``nlist``, ``nprobe``) stored with the index and applied again when it is loaded.
    """
    vectors = np.ascontiguousarray(descriptors, dtype=np.float32)
    dim = vectors.shape[1]
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
        params: dict[str, Any] = {}
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        params = {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}
    elif index_type == "ivf":
        index, params = _trained_ivf(vectors)
    else:
        raise ConfigError(f"index type {index_type!r}: choose one of flat, hnsw, ivf")
    index.add(vectors)
    apply_search_params(index, index_type, params)
    return index, params


def _trained_ivf(vectors: np.ndarray) -> tuple[faiss.Index, dict[str, Any]]:
    count, dim = vectors.shape
    lists = ivf_list_count(count)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = SEED
    sample = min(count, IVF_TRAIN_POINTS_PER_LIST * lists)
    chosen = np.sort(np.random.default_rng(SEED).choice(count, sample, replace=False))
    index.train(vectors[chosen])
    params = {"nlist": lists, "nprobe": max(1, round(lists * IVF_PROBE_FRACTION))}
    return index, params


def apply_search_params(index: faiss.Index, index_type: str, params: dict[str, Any]) -> None:
    """Set the search-time settings (``ef_search`` of HNSW, ``nprobe`` of IVF) on an index."""
    if index_type == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = int(params["ef_search"])
    elif index_type == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = int(params["nprobe"])
        if ivf.direct_map.type == faiss.DirectMap.NoMap:
            ivf.make_direct_map()  # reconstruct(): exact scores of a prior's chips


def search_parameters(index_type: str, params: dict[str, Any], selector: Any = None) -> Any:
    """FAISS ``SearchParameters`` for one search: the type's settings and an optional ``IDSelector``."""
    if index_type == "hnsw":
        return faiss.SearchParametersHNSW(sel=selector, efSearch=int(params["ef_search"]))
    if index_type == "ivf":
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(params["nprobe"]))
    return faiss.SearchParameters(sel=selector)


def index_memory_bytes(index: faiss.Index) -> int:
    """Size of the index's serialised form, bytes (vectors + graph or lists), about its memory footprint."""
    writer = faiss.VectorIOWriter()
    faiss.write_index(index, writer)
    return int(writer.data.size())

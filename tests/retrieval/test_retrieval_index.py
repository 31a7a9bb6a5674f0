"""ChipIndex on descriptor arrays: search, prior discs, padding, ANN recall, the file format and its errors.

References: brute-force numpy inner products and distances; pyproj (geodesic distances, UTM -> WGS84); faiss
exact search for the recall of HNSW and IVF.
"""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import CRS, Geod, Transformer

from crossview.errors import CrossviewError
from crossview.geometry.frames import LocalFrame
from crossview.retrieval import chip_index as chip_index_module
from crossview.retrieval.ann import AUTO_FLAT_MAX_CHIPS, resolve_index_type
from crossview.retrieval.benchmark import spatial_descriptors, square_lattice
from crossview.retrieval.chip_index import (
    ChipIndex,
    ChipIndexError,
    IndexFileError,
    IndexMismatchError,
    SearchPrior,
)
from crossview.retrieval.chips import ChipGeometry

GEOD = Geod(ellps="WGS84")
EPSG = 32632
ORIGIN = np.array([600_000.0, 5_300_000.0])  # UTM 32N, 47.8N 10.3E: scale factor ~0.9997
STRIDE_M = 10.0
DIM = 32


def geometry() -> ChipGeometry:
    return ChipGeometry(LocalFrame(CRS.from_epsg(EPSG)), 64, 64.0, "user")


def make_index(count: int = 900, *, index_type: str = "flat", seed: int = 0, dim: int = DIM):
    centers = square_lattice(count, STRIDE_M) + ORIGIN
    (descriptors,) = spatial_descriptors([centers - ORIGIN], dim, seed=seed)
    model = {"name": "test-model", "sha256": "a" * 64, "sha256_of": "weights"}
    map_info = {"fingerprint": "sha256:" + "b" * 64, "path": "map.tif"}
    index = ChipIndex.from_descriptors(
        descriptors,
        centers,
        geometry=geometry(),
        index_type=index_type,
        stride_m=STRIDE_M,
        model=model,
        map_info=map_info,
    )
    return index, descriptors, centers


@pytest.fixture(scope="module")
def flat():
    return make_index()


# ---- search -------------------------------------------------------------------------------------------------


def test_own_descriptors_find_their_own_chip_first(flat):
    index, descriptors, centers = flat
    result = index.search(descriptors, 5)
    np.testing.assert_array_equal(result.ids[:, 0], np.arange(len(descriptors)))
    np.testing.assert_allclose(result.scores[:, 0], 1.0, atol=1e-5)
    np.testing.assert_array_equal(result.centers_xy[:, 0], centers)
    assert (np.diff(result.scores, axis=1) <= 1e-7).all()  # best first


def test_search_matches_brute_force_inner_products(flat):
    index, descriptors, _ = flat
    queries = spatial_descriptors([np.random.default_rng(3).uniform(0, 290, (20, 2))], DIM, seed=9)[0]
    result = index.search(queries, 7)
    reference = queries @ descriptors.T
    expected = np.argsort(-reference, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(result.ids, expected)
    np.testing.assert_allclose(result.scores, np.take_along_axis(reference, expected, axis=1), atol=1e-5)


def test_convention_result_latlon_are_wgs84_of_the_utm_centres(flat):
    index, descriptors, _ = flat
    result = index.search(descriptors[:30], 3)
    lon, lat = Transformer.from_crs(f"EPSG:{EPSG}", "EPSG:4326", always_xy=True).transform(result.x_m, result.y_m)
    np.testing.assert_allclose(result.lat, lat, atol=1e-9)
    np.testing.assert_allclose(result.lon, lon, atol=1e-9)


def test_batches_and_single_queries_agree_and_thread_settings_are_restored(flat):
    import faiss

    index, descriptors, _ = flat
    before = faiss.omp_get_max_threads()
    batch = index.search(descriptors[:40], 5)  # >= PARALLEL_MIN_QUERIES: FAISS's own threads
    singles = np.concatenate([index.search(descriptors[i], 5).ids for i in range(40)])  # one thread each
    np.testing.assert_array_equal(batch.ids, singles)
    assert faiss.omp_get_max_threads() == before


def test_k_larger_than_the_index_pads_with_minus_one_and_nan():
    index, descriptors, _ = make_index(12)
    result = index.search(descriptors[:2], 20)
    assert (result.ids[:, :12] >= 0).all() and (result.ids[:, 12:] == -1).all()
    assert np.isnan(result.scores[:, 12:]).all() and np.isnan(result.lat[:, 12:]).all()
    assert np.isnan(result.x_m[:, 12:]).all() and np.isfinite(result.x_m[:, :12]).all()
    assert sorted(result.ids[0, :12].tolist()) == list(range(12))


def test_bad_queries_are_one_line_errors(flat):
    index, descriptors, _ = flat
    with pytest.raises(ChipIndexError, match="dimension 5"):
        index.search(np.zeros((1, 5), np.float32), 3)
    with pytest.raises(ChipIndexError, match="k=0"):
        index.search(descriptors[:1], 0)
    with pytest.raises(ChipIndexError, match="NaN"):
        index.search(np.full((1, DIM), np.nan), 3)
    with pytest.raises(ChipIndexError, match="radius"):
        SearchPrior.at_xy(x_m=0.0, y_m=0.0, radius_m=-1.0)
    with pytest.raises(ChipIndexError, match="3 discs for 2 queries"):
        index.search(descriptors[:2], 3, prior=SearchPrior.at_xy(x_m=[1.0, 2.0, 3.0], y_m=0.0, radius_m=5.0))
    assert issubclass(ChipIndexError, CrossviewError) and issubclass(ChipIndexError, ValueError)
    with pytest.raises(ChipIndexError, match="unit L2 norm; row 3"):
        scaled = descriptors[:5] * np.array([[1.0], [1.0], [1.0], [2.0], [1.0]], dtype=np.float32)
        ChipIndex.from_descriptors(scaled, index.centers_xy[:5], geometry=geometry())


# ---- priors -------------------------------------------------------------------------------------------------


def _brute_force_prior(descriptors, centers, query, x, y, radius_grid, k):
    inside = np.flatnonzero(np.hypot(centers[:, 0] - x, centers[:, 1] - y) <= radius_grid)
    scores = descriptors[inside] @ query
    order = np.lexsort((inside, -scores))[:k]
    return inside[order], scores[order]


@settings(max_examples=60, deadline=None)
@given(
    offset=st.tuples(st.floats(-50, 350), st.floats(-50, 350)),
    radius=st.floats(0.0, 120.0),
    k=st.integers(1, 15),
)
def test_prior_search_is_exact_against_brute_force(flat, offset, radius, k):
    index, descriptors, centers = flat
    x, y = ORIGIN + offset
    query = spatial_descriptors([np.array([offset])], DIM, seed=11)[0][0]
    result = index.search(query, k, prior=SearchPrior.at_xy(x_m=x, y_m=y, radius_m=radius))
    lat, lon = LocalFrame(CRS.from_epsg(EPSG)).to_latlon(x, y)
    scale = LocalFrame(CRS.from_epsg(EPSG)).scale_factor(lat=lat, lon=lon)
    ids, scores = _brute_force_prior(descriptors, centers, query, x, y, radius * scale, k)
    np.testing.assert_array_equal(result.ids[0, : len(ids)], ids)
    np.testing.assert_allclose(result.scores[0, : len(ids)], scores, atol=1e-6)
    assert (result.ids[0, len(ids) :] == -1).all() and np.isnan(result.scores[0, len(ids) :]).all()


def test_prior_results_lie_within_the_ground_radius(flat):
    index, descriptors, centers = flat
    rng = np.random.default_rng(5)
    to_wgs84 = Transformer.from_crs(f"EPSG:{EPSG}", "EPSG:4326", always_xy=True)
    for _ in range(20):
        x, y = ORIGIN + rng.uniform(0, 290, 2)
        radius = rng.uniform(10, 80)
        prior = SearchPrior.at_xy(x_m=x, y_m=y, radius_m=radius)
        result = index.search(descriptors[rng.integers(len(descriptors))], 300, prior=prior)  # k > any disc
        found = result.ids[0] >= 0
        lon0, lat0 = to_wgs84.transform(x, y)
        _, _, distance = GEOD.inv(np.full(found.sum(), lon0), np.full(found.sum(), lat0), result.lon[0, found],
                                  result.lat[0, found])  # fmt: skip
        assert (distance <= radius + 1e-3).all()
        # and every chip inside the ground radius was found (1 mm tolerance on the boundary)
        lon_all, lat_all = to_wgs84.transform(centers[:, 0], centers[:, 1])
        _, _, all_distance = GEOD.inv(np.full(len(centers), lon0), np.full(len(centers), lat0), lon_all, lat_all)
        assert (all_distance <= radius - 1e-3).sum() <= found.sum() <= (all_distance <= radius + 1e-3).sum()
        assert found.sum() < 300


def test_latlon_priors_equal_xy_priors_and_infinite_radius_is_unconstrained(flat):
    index, descriptors, _ = flat
    x, y = ORIGIN + np.array([[100.0, 120.0], [40.0, 200.0]]).T
    lon, lat = Transformer.from_crs(f"EPSG:{EPSG}", "EPSG:4326", always_xy=True).transform(x, y)
    radius = np.array([35.0, np.inf])
    by_xy = index.search(descriptors[:2], 6, prior=SearchPrior.at_xy(x_m=x, y_m=y, radius_m=radius))
    by_latlon = index.search(descriptors[:2], 6, prior=SearchPrior.at_latlon(lat=lat, lon=lon, radius_m=radius))
    np.testing.assert_array_equal(by_xy.ids, by_latlon.ids)
    np.testing.assert_array_equal(by_xy.ids[1], index.search(descriptors[1], 6).ids[0])


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_large_prior_discs_go_through_faiss_selectors(monkeypatch, index_type):
    index, descriptors, centers = make_index(900, index_type=index_type)
    monkeypatch.setattr(chip_index_module, "EXACT_SUBSET_MAX", 10)
    x, y = ORIGIN + 150.0
    query = descriptors[455]
    result = index.search(query, 10, prior=SearchPrior.at_xy(x_m=x, y_m=y, radius_m=60.0))
    ids, _ = _brute_force_prior(descriptors, centers, query, x, y, 60.0 * 0.99975, 10)
    inside = np.hypot(centers[result.ids[0], 0] - x, centers[result.ids[0], 1] - y) <= 60.0
    assert inside.all()
    assert len(set(result.ids[0].tolist()) & set(ids.tolist())) >= (10 if index_type == "flat" else 9)


# ---- index types ----------------------------------------------------------------------------------------------


def test_auto_type_switches_from_flat_to_hnsw_at_the_measured_size():
    assert resolve_index_type("auto", AUTO_FLAT_MAX_CHIPS) == "flat"
    assert resolve_index_type("auto", AUTO_FLAT_MAX_CHIPS + 1) == "hnsw"
    assert resolve_index_type("ivf", 10) == "ivf"
    with pytest.raises(CrossviewError, match="annoy"):
        resolve_index_type("annoy", 10)


def _recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist(), strict=True)]))


def test_hnsw_and_ivf_recall_against_flat():
    count = 4000
    lattice = square_lattice(count, STRIDE_M)
    queries_xy = np.random.default_rng(2).uniform(0, lattice.max(), (100, 2))
    descriptors, queries = spatial_descriptors([lattice, queries_xy], 64, seed=4)
    kwargs = {"geometry": geometry(), "stride_m": STRIDE_M}
    truth = ChipIndex.from_descriptors(descriptors, lattice + ORIGIN, index_type="flat", **kwargs).search(queries, 10)
    hnsw = ChipIndex.from_descriptors(descriptors, lattice + ORIGIN, index_type="hnsw", **kwargs)
    assert _recall_at_10(hnsw.search(queries, 10).ids, truth.ids) >= 0.95
    ivf = ChipIndex.from_descriptors(descriptors, lattice + ORIGIN, index_type="ivf", **kwargs)
    recalls = []
    for nprobe in (1, 4, ivf.params["nlist"]):
        ivf.set_search_params(nprobe=nprobe)
        recalls.append(_recall_at_10(ivf.search(queries, 10).ids, truth.ids))
    assert recalls[0] < recalls[1] < recalls[2] == 1.0  # probing every list is exact
    with pytest.raises(ChipIndexError, match="ef_search applies to hnsw"):
        ivf.set_search_params(ef_search=10)


# ---- files ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip(tmp_path, index_type):
    index, descriptors, centers = make_index(600, index_type=index_type)
    path = index.save(tmp_path / "area.idx")
    assert zipfile.ZipFile(path).namelist() == list(chip_index_module.MEMBERS)
    loaded = ChipIndex.load(path, model_sha256="a" * 64, map_fingerprint="sha256:" + "b" * 64)
    assert (len(loaded), loaded.dim, loaded.index_type) == (600, DIM, index_type)
    assert loaded.meta == index.meta and loaded.geometry == index.geometry
    np.testing.assert_array_equal(loaded.centers_xy, centers)
    np.testing.assert_array_equal(loaded.latlon, index.latlon)
    np.testing.assert_array_equal(loaded.vectors(np.arange(600)), index.vectors(np.arange(600)))
    prior = SearchPrior.at_xy(x_m=ORIGIN[0] + 100, y_m=ORIGIN[1] + 100, radius_m=[50.0, np.inf])
    before, after = index.search(descriptors[:2], 8, prior=prior), loaded.search(descriptors[:2], 8, prior=prior)
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_array_equal(before.scores, after.scores)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind


def test_metadata_records_what_the_index_was_built_from(tmp_path, flat):
    index, _, _ = flat
    meta = json.loads(zipfile.ZipFile(index.save(tmp_path / "a.idx")).read("meta.json"))
    assert meta["format"] == "crossview-chip-index" and meta["format_version"] == 1
    assert meta["chips"]["frame_epsg"] == EPSG and meta["chips"]["stride_m"] == STRIDE_M
    assert meta["chips"]["orientation"] == "true-north-up"
    assert meta["model"]["sha256"] == "a" * 64 and meta["map"]["fingerprint"] == "sha256:" + "b" * 64
    assert meta["index"] == {"type": "flat", "requested": "flat", "metric": "inner_product", "params": {}}


def test_model_and_map_mismatches_name_the_file(tmp_path, flat):
    path = flat[0].save(tmp_path / "area.idx")
    with pytest.raises(IndexMismatchError, match=r"area\.idx was built with model test-model") as error:
        ChipIndex.load(path, model_sha256="c" * 64)
    assert "\n" not in str(error.value) and "aaaaaaaaaaaa" in str(error.value)
    with pytest.raises(IndexMismatchError, match=r"area\.idx was built from another map \(map\.tif"):
        ChipIndex.load(path, map_fingerprint="sha256:" + "d" * 64)


def _rewrite_member(path, name, data: bytes, *, meta=None):
    members = {n: zipfile.ZipFile(path).read(n) for n in zipfile.ZipFile(path).namelist()}
    members[name] = data
    if meta is not None:
        members["meta.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)


def test_corrupt_files_are_index_file_errors(tmp_path, flat):
    index = flat[0]
    good = index.save(tmp_path / "good.idx").read_bytes()
    cases = {}
    cases["truncated"] = good[: len(good) // 2]
    cases["garbage"] = np.random.default_rng(0).bytes(5000)
    flipped = bytearray(good)
    offset = good.index(b"IxF")  # faiss's flat index header, inside index.faiss (stored, not compressed)
    flipped[offset + 4000] ^= 0xFF
    cases["flipped"] = bytes(flipped)
    messages = {}
    for name, content in cases.items():
        path = tmp_path / f"{name}.idx"
        path.write_bytes(content)
        with pytest.raises(IndexFileError) as error:
            ChipIndex.load(path)
        messages[name] = str(error.value)
        assert str(path) in messages[name] and "\n" not in messages[name]
    assert "CRC" in messages["flipped"]
    with pytest.raises(IndexFileError, match="not found"):
        ChipIndex.load(tmp_path / "missing.idx")
    assert issubclass(IndexFileError, OSError)


def test_foreign_newer_and_pickled_files_are_refused(tmp_path, flat):
    index = flat[0]
    path = index.save(tmp_path / "area.idx")
    newer = dict(index.meta, format_version=99)
    _rewrite_member(path, "meta.json", b"", meta=newer)
    with pytest.raises(IndexFileError, match=r"format 99.*upgrade crossview"):
        ChipIndex.load(path)
    path = index.save(tmp_path / "area.idx")
    _rewrite_member(path, "meta.json", b"", meta={"format": "something-else"})
    with pytest.raises(IndexFileError, match="not a crossview chip index"):
        ChipIndex.load(path)
    # an object array (a pickle inside the .npy) is never unpickled
    path = index.save(tmp_path / "area.idx")
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}] * len(index), dtype=object), allow_pickle=True)
    _rewrite_member(path, "centers_xy.npy", buffer.getvalue())
    with pytest.raises(IndexFileError, match="pickle"):
        ChipIndex.load(path)


def test_save_errors_are_index_file_errors(tmp_path, flat):
    with pytest.raises(IndexFileError, match="cannot write"):
        flat[0].save(tmp_path / "missing-folder" / "area.idx")


def test_radius_is_in_ground_metres_not_grid_metres(flat):
    """At 600 km easting the UTM scale factor is 0.99975: a 100.00 m ground radius is 99.975 grid metres."""
    index, descriptors, centers = flat
    frame = LocalFrame(CRS.from_epsg(EPSG))
    x, y = centers[0]
    lat, lon = frame.to_latlon(x, y)
    scale = float(frame.scale_factor(lat=lat, lon=lon))
    assert math.isclose(scale, 0.99975, abs_tol=5e-5)
    # a chip 100 grid metres east: outside a 100 m ground disc (100 grid m = 100.025 ground m), inside 100.03 m
    target = int(np.flatnonzero((centers[:, 0] == x + 100.0) & (centers[:, 1] == y))[0])
    for radius, inside in ((100.0, False), (100.03, True)):
        result = index.search(descriptors[target], 100, prior=SearchPrior.at_xy(x_m=x, y_m=y, radius_m=radius))
        assert (target in result.ids[0]) is inside

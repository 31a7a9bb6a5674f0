"""Evaluation: VIGOR metrics on hand-built score matrices, evaluate() against a brute-force reference, the CLI."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from pyproj import Geod
from train_fixtures import build_tree, run_cli, tiny_model

from crossview.checkpoints import MODELS_DIR_ENV, register_model, save_checkpoint
from crossview.encoders import AerialEncoding, GroundEncoding
from crossview.errors import ConfigError
from crossview.evaluate import (
    build_eval_dataset,
    evaluate,
    format_table,
    heading_error_deg,
    heading_error_stats,
    one_percent_k,
    rank_queries,
    retrieval_metrics,
)

GEOD = Geod(ellps="WGS84")

# Hand-built: 4 queries x 6 tiles. Positives 0, 1, 0, 1; q1's semi-positives hold tile 4 (its top-1).
SCORES = np.array(
    [
        [0.9, 0.1, 0.2, 0.3, 0.0, 0.5],  # positive 0 on top: correct at 1
        [0.8, 0.7, 0.6, 0.1, 0.95, 0.2],  # positive 1 behind tiles 4 and 0: rank 2; top-1 is semi-positive 4
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # positive 0 last: rank 5; top-1 tile 5 is no semi-positive
        [0.5, 0.5, 0.2, 0.1, 0.0, 0.3],  # positive 1 tied with tile 0: ties favour the positive, rank 0
    ]
)
POSITIVE = np.array([0, 1, 0, 1])
SEMI = np.array([[1, 2, 3], [4, 3, 5], [1, 2, 3], [2, 3, 4]])
GALLERY_LATLON = np.array(
    [[40.0, -74.0], [40.001, -74.0], [40.0, -74.001], [40.002, -74.002], [40.01, -74.0], [41, -74]]
)
QUERY_LATLON = np.array([[40.0001, -74.0001], [40.0011, -74.0002], [40.0002, -73.9999], [40.0009, -74.0001]])


def _geodesic(a: np.ndarray, b: np.ndarray) -> float:
    return GEOD.inv(a[1], a[0], b[1], b[0])[2]


def test_recalls_and_hit_rate_on_a_hand_built_matrix():
    metrics = retrieval_metrics(SCORES, POSITIVE, SEMI, QUERY_LATLON, GALLERY_LATLON)
    assert metrics["num_queries"] == 4 and metrics["gallery_size"] == 6 and metrics["one_percent_k"] == 1
    assert metrics["recall@1"] == 0.5  # q0, q3
    assert metrics["recall@5"] == 0.75  # + q1 (rank 2)
    assert metrics["recall@10"] == 1.0  # + q2 (rank 5 < 10)
    assert metrics["recall@1%"] == 0.5  # k = 1
    assert metrics["hit_rate"] == 0.75  # q0, q3 (positive), q1 (semi-positive 4)
    assert metrics["num_top1_correct"] == 2


def test_rank_queries_outcomes():
    outcomes = rank_queries(SCORES, POSITIVE, SEMI)
    np.testing.assert_array_equal(outcomes["positive_rank"], [0, 2, 5, 0])
    np.testing.assert_array_equal(outcomes["top1_index"], [0, 4, 5, 1])
    np.testing.assert_array_equal(outcomes["hit"], [True, True, False, True])


def test_ties_at_the_top_favour_semi_positives_over_other_tiles():
    scores = np.array([[0.2, 0.9, 0.9, 0.9]])  # tiles 1, 2, 3 tied; tile 2 is a semi-positive
    outcomes = rank_queries(scores, np.array([0]), np.array([[2, -1, -1]]))
    assert outcomes["top1_index"][0] == 2 and outcomes["hit"][0] and outcomes["positive_rank"][0] == 3


def test_metre_errors_of_the_top1_tile_against_pyproj():
    metrics = retrieval_metrics(SCORES, POSITIVE, SEMI, QUERY_LATLON, GALLERY_LATLON)
    top1 = [0, 4, 5, 1]
    errors = [_geodesic(GALLERY_LATLON[t], QUERY_LATLON[q]) for q, t in enumerate(top1)]
    assert metrics["top1_error_m_mean"] == pytest.approx(np.mean(errors), rel=1e-9)
    assert metrics["top1_error_m_median"] == pytest.approx(np.median(errors), rel=1e-9)
    correct = [errors[0], errors[3]]
    assert metrics["top1_error_m_mean_correct"] == pytest.approx(np.mean(correct), rel=1e-9)
    assert metrics["top1_error_m_median_correct"] == pytest.approx(np.median(correct), rel=1e-9)
    # sanity of the reference: 0.0001 deg of latitude and longitude at 40 N is about 14 m
    assert 13.0 < errors[0] < 15.0


def test_positive_only_errors_are_null_when_no_query_is_correct():
    metrics = retrieval_metrics(SCORES[2:3], POSITIVE[2:3], SEMI[2:3], QUERY_LATLON[2:3], GALLERY_LATLON)
    assert metrics["recall@1"] == 0.0 and metrics["num_top1_correct"] == 0
    assert metrics["top1_error_m_mean_correct"] is None and metrics["top1_error_m_median_correct"] is None
    assert "-" in format_table(metrics)  # shown as a dash, not NaN


@pytest.mark.parametrize(("gallery", "k"), [(6, 1), (99, 1), (100, 2), (199, 2), (200, 3), (90618, 907)])
def test_one_percent_k_follows_vigor(gallery, k):
    """VIGOR's code: top1_percent = int(G * 0.01) + 1."""
    assert one_percent_k(gallery) == k


def test_recall_at_one_percent_counts_the_first_k_tiles():
    gallery = 200  # k = 3
    scores = np.linspace(1.0, 0.0, gallery)[None, :].repeat(2, axis=0)  # tile i has rank i
    positive = np.array([2, 3])  # ranks 2 (inside the top 3) and 3 (outside)
    latlon = np.column_stack([np.linspace(40, 40.1, gallery), np.full(gallery, -74.0)])
    metrics = retrieval_metrics(scores, positive, None, latlon[:2], latlon)
    assert metrics["one_percent_k"] == 3 and metrics["recall@1%"] == 0.5


def test_convention_heading_error_is_the_wrapped_absolute_angle():
    errors = heading_error_deg(np.array([350.0, 10.0, 0.0, 90.0, 359.0]), np.array([10.0, 350.0, 180.0, 90.0, 1.0]))
    np.testing.assert_allclose(errors, [20.0, 20.0, 180.0, 0.0, 2.0])
    stats = heading_error_stats(np.array([350.0, 10.0, 0.0, 90.0]), np.array([10.0, 350.0, 180.0, 93.0]))
    assert stats["heading_error_deg_mean"] == pytest.approx((20 + 20 + 180 + 3) / 4)
    assert stats["heading_error_deg_median"] == pytest.approx(20.0)
    assert stats["heading_within_5deg"] == 0.25 and stats["heading_within_10deg"] == 0.25


# ---- evaluate() on a tiny VIGOR tree -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("vigor")
    build_tree(root, cities=2)
    return root


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=1).eval()


def _tile_latlon(name: str) -> tuple[float, float]:
    match = re.fullmatch(r"satellite_([-0-9.]+)_([-0-9.]+)\.png", name)
    return float(match[1]), float(match[2])


def _brute_force(model, dataset, unknown_heading: bool):
    """Encode everything at once and score the full matrix: the reference for evaluate()."""
    names = dataset.satellite_names
    with torch.no_grad():
        aerial = model.encode_aerial(torch.stack([dataset.load_satellite(n) for n in names]))
        items = [dataset[i] for i in range(len(dataset))]
        ground = model.encode_ground(torch.stack([item["pano"] for item in items]), camera="panorama")
        scores, heading = model.similarity(ground, aerial, unknown_heading=unknown_heading)
    index = {n: i for i, n in enumerate(names)}
    positive = np.array([index[r.sat_names[0]] for r in dataset.records])
    semi = np.array([[index[n] for n in r.sat_names[1:]] for r in dataset.records])
    query_latlon = np.array([(r.lat, r.lon) for r in dataset.records])
    gallery_latlon = np.array([_tile_latlon(n) for n in names])
    metrics = retrieval_metrics(scores.numpy(), positive, semi, query_latlon, gallery_latlon)
    if unknown_heading:
        pred = heading.numpy()[np.arange(len(items)), positive]
        metrics.update(heading_error_stats(pred, np.array([item["heading_deg"] for item in items])))
    return metrics


@pytest.mark.parametrize("unknown_heading", [False, True])
def test_evaluate_matches_the_brute_force_reference(tree, model, unknown_heading):
    dataset = build_eval_dataset(tree, model.config, split="same", cities=None, unknown_heading=unknown_heading)
    assert len(dataset) == 4 and len(dataset.satellite_names) > 4  # 2 test panoramas per city
    calls = []
    encode_aerial = model.encode_aerial

    def counting(chips):
        calls.append(chips.shape[0])
        return encode_aerial(chips)

    model.encode_aerial = counting
    try:
        metrics = evaluate(model, dataset, unknown_heading=unknown_heading, batch_size=3, gallery_chunk=5)
    finally:
        del model.encode_aerial
    assert sum(calls) == len(dataset.satellite_names)  # every tile encoded exactly once
    reference = _brute_force(model, dataset, unknown_heading)
    for key, value in reference.items():
        if isinstance(value, float):
            # the two encode in batches of different sizes, which float32 convolutions round differently, and the
            # heading's sub-column interpolation turns score differences of 1e-7 into 1e-4 degrees
            assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        else:
            assert metrics[key] == value, key
    assert ("heading_error_deg_mean" in metrics) == unknown_heading
    assert metrics["timing"]["images_per_s"] > 0


class _OracleModel(torch.nn.Module):
    """Scores chosen per (query, tile) from the labels: top-1 = the first semi-positive, positive second.

    It recognises images by their bytes, so it needs no learning; headings at the positive are truth + 7 deg.
    """

    def __init__(self, dataset):
        super().__init__()
        self.config = {"name": "oracle"}
        self.tile_id = {self._key(dataset.load_satellite(n)): i for i, n in enumerate(dataset.satellite_names)}
        items = [dataset[i] for i in range(len(dataset))]
        self.pano_id = {self._key(item["pano"]): i for i, item in enumerate(items)}
        gallery = {n: i for i, n in enumerate(dataset.satellite_names)}
        self.scores = np.zeros((len(items), len(gallery)))
        self.heading = np.zeros((len(items), len(gallery)))
        for q, record in enumerate(dataset.records):
            self.scores[q, gallery[record.sat_names[1]]] = 1.0
            self.scores[q, gallery[record.sat_names[0]]] = 0.5
            self.heading[q, gallery[record.sat_names[0]]] = (items[q]["heading_deg"] + 7.0) % 360.0

    @staticmethod
    def _key(image: torch.Tensor) -> bytes:
        return image.numpy().tobytes()

    def encode_aerial(self, chips):
        ids = torch.tensor([[float(self.tile_id[self._key(c)])] for c in chips])
        return AerialEncoding(descriptor=ids, columns=torch.zeros(len(chips), 1, 4))

    def encode_ground(self, images, *, camera="panorama"):
        ids = torch.tensor([[float(self.pano_id[self._key(p)])] for p in images])
        return GroundEncoding(ids, torch.zeros(len(images), 1, 4), torch.ones(len(images)), True)

    def similarity(self, ground, aerial, *, unknown_heading=False):
        q, g = ground.descriptor[:, 0].long().numpy(), aerial.descriptor[:, 0].long().numpy()
        scores = torch.from_numpy(self.scores[np.ix_(q, g)]).float()
        return scores, (torch.from_numpy(self.heading[np.ix_(q, g)]).float() if unknown_heading else None)


def test_convention_vigor_first_tile_is_positive_the_others_semi_positives(tree):
    """DESIGN: the first tile of a label line is the positive, the other three semi-positives; tile names carry
    the tile centre, from which the metre error is measured."""
    dataset = build_eval_dataset(tree, {"aerial_size": 64}, split="same", cities=None, unknown_heading=True)
    metrics = evaluate(_OracleModel(dataset), dataset, unknown_heading=True, batch_size=2, gallery_chunk=3)
    assert metrics["recall@1"] == 0.0 and metrics["recall@5"] == 1.0  # the positive is second everywhere
    assert metrics["hit_rate"] == 1.0  # the top-1 is a semi-positive
    errors = [_geodesic(np.array(_tile_latlon(r.sat_names[1])), np.array([r.lat, r.lon])) for r in dataset.records]
    assert metrics["top1_error_m_mean"] == pytest.approx(np.mean(errors), rel=1e-9)
    assert 20.0 < metrics["top1_error_m_mean"] < 100.0  # a neighbouring tile's centre, tens of metres away
    assert metrics["heading_error_deg_mean"] == pytest.approx(7.0, abs=1e-4)
    assert metrics["heading_within_10deg"] == 1.0 and metrics["heading_within_5deg"] == 0.0


def test_evaluating_an_empty_split_is_an_error(tmp_path, model):
    build_tree(tmp_path, cities=1, train_fraction=1.0)  # no test panoramas
    dataset = build_eval_dataset(tmp_path, model.config, split="same", cities=None, unknown_heading=False)
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        evaluate(model, dataset)


# ---- the command line --------------------------------------------------------------------------------------


def test_eval_cli_writes_json_with_settings_and_prints_a_table(tree, model, tmp_path, capsys, monkeypatch):
    checkpoint = save_checkpoint(tmp_path / "models" / "tiny-v1.pt", model=model, half=True)
    register_model("tiny-v1", checkpoint, description="test", directory=tmp_path / "models")
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))
    out = tmp_path / "out" / "metrics.json"
    code = run_cli(["eval", "--data", str(tree), "--model", "tiny-v1", "--out", str(out), "--batch-size", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "recall@1" in printed and "hit rate" in printed and f"wrote {out}" in printed
    report = json.loads(out.read_text())
    assert report["model"]["name"] == "tiny-v1" and len(report["model"]["sha256"]) == 64
    assert report["model"]["config"]["aerial_size"] == 64
    settings = report["settings"]
    assert settings["split"] == "same" and settings["cities"] == ["Alpha", "Bravo"]
    assert settings["unknown_heading"] is False and settings["pano_size"] == [32, 64] and settings["aerial_size"] == 64
    assert report["crossview_version"] and re.match(r"\d{4}-\d\d-\d\dT", report["date"])
    # the same numbers as evaluate() on the same model (weights rounded to float16 by the shipped file)
    from crossview.checkpoints import load_model

    dataset = build_eval_dataset(tree, model.config, split="same", cities=None, unknown_heading=False)
    expected = evaluate(load_model("tiny-v1"), dataset, batch_size=3)
    for key in ("recall@1", "recall@5", "recall@10", "recall@1%", "hit_rate", "top1_error_m_mean"):
        assert report["metrics"][key] == pytest.approx(expected[key]), key
    assert not any(isinstance(v, float) and math.isnan(v) for v in report["metrics"].values())


def test_eval_cli_unknown_model_is_a_one_line_error(tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    assert run_cli(["eval", "--data", str(tree), "--model", "no-such-model"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("crossview eval: error: unknown model 'no-such-model'") and "\n" not in error
    assert run_cli(["eval", "--data", str(tmp_path / "absent"), "--model", "x"]) == 2
    assert "folder not found" in capsys.readouterr().err


# ---- OSM maps (--map osm) ----------------------------------------------------------------------------------------


def _add_osm_tiles(root) -> None:
    """osm/ tiles beside satellite/: class indices quantised from the aerial tiles' colours."""
    from PIL import Image

    from crossview.data.vigor import class_tile_png_bytes
    from crossview.maps.osm import BAND_NAMES, CLASS_NAMES

    legend = json.dumps({band: list(CLASS_NAMES[band]) for band in BAND_NAMES})
    for satellite in root.glob("*/satellite"):
        (satellite.parent / "osm").mkdir(exist_ok=True)
        for path in satellite.iterdir():
            rgb = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
            classes = np.stack([rgb[0] // 37, rgb[1] // 26, (rgb[2] > 127) * 3]).astype(np.uint8)
            (satellite.parent / "osm" / path.name).write_bytes(class_tile_png_bytes(classes, legend))


@pytest.fixture(scope="module")
def osm_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("vigor-osm")
    build_tree(root, cities=1)
    _add_osm_tiles(root)
    return root


@pytest.fixture(scope="module")
def osm_checkpoint(tmp_path_factory):
    from crossview.encoders import get_model

    torch.manual_seed(2)
    sizes = {"aerial_size": 64, "polar_height": 32, "polar_width": 64, "pano_height": 32, "pano_width": 64}
    model = get_model("safa-resnet18-lite-osm", **sizes).eval()
    return save_checkpoint(tmp_path_factory.mktemp("osm-model") / "osm-tiny.pt", model=model)


def test_eval_cli_takes_an_osm_model_to_the_osm_tiles(osm_tree, osm_checkpoint, tmp_path, capsys):
    from crossview.checkpoints import load_model

    out = tmp_path / "metrics.json"
    assert run_cli(["eval", "--data", str(osm_tree), "--model", str(osm_checkpoint), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["map"] == "osm"  # the model's modality chose the folder
    dataset = build_eval_dataset(osm_tree, report["model"]["config"], split="same", cities=None, unknown_heading=False)
    assert dataset.map == "osm" and dataset.load_satellite(dataset.satellite_names[0]).dtype == torch.uint8
    expected = evaluate(load_model(osm_checkpoint), dataset, batch_size=32)
    for key in ("recall@1", "recall@5", "hit_rate", "top1_error_m_mean"):
        assert report["metrics"][key] == pytest.approx(expected[key]), key
    assert run_cli(["eval", "--data", str(osm_tree), "--model", str(osm_checkpoint), "--map", "osm"]) == 0
    capsys.readouterr()


def test_eval_refuses_maps_of_another_kind(osm_tree, osm_checkpoint, model, capsys):
    from crossview.encoders import MapModalityError

    assert run_cli(["eval", "--data", str(osm_tree), "--model", str(osm_checkpoint), "--map", "satellite"]) == 2
    error = capsys.readouterr().err.strip()
    assert "osm-tiny.pt expects OSM class rasters; data.map=satellite gives aerial RGB maps" in error
    assert "\n" not in error
    osm_dataset = build_eval_dataset(
        osm_tree, {"map_modality": "osm"}, split="same", cities=None, unknown_heading=False
    )
    with pytest.raises(MapModalityError, match=r"expects aerial RGB maps; data\.map=osm gives OSM class rasters"):
        evaluate(model, osm_dataset)  # an aerial model on OSM tiles
    with pytest.raises(MapModalityError, match="expects aerial RGB maps"):
        build_eval_dataset(osm_tree, model.config, split="same", cities=None, unknown_heading=False, data_map="osm")

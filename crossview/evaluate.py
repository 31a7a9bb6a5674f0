"""``crossview eval``: cross-view retrieval metrics of a model on a VIGOR-layout dataset (VIGOR protocol).

Protocol (VIGOR, Zhu et al., CVPR 2021): every panorama of the evaluated split is a query; the gallery is every
aerial tile of the evaluated cities (their ``satellite_list.txt``), each encoded once. For a query:

- its positive is the first tile of its label line, its semi-positives the other three (tiles that also hold it);
- the positive's rank is the number of gallery tiles scoring strictly higher than it (ties favour the positive,
  as in VIGOR's code); the query is correct at k when that rank is below k;
- recall@1%: k = ``floor(G / 100) + 1`` for a gallery of G tiles (VIGOR's code: ``int(G * 0.01) + 1``, which
  is ``ceil(G / 100)`` unless G is a multiple of 100);
- hit rate: the top-1 tile is the positive or a semi-positive;
- metre error: geodesic distance from the top-1 tile's centre (the lat/lon in its name) to the panorama, over
  all queries and over the queries whose top-1 is the positive;
- heading error (``--unknown-heading``: panoramas rolled by a random, seeded number of columns): the absolute
  angle between the heading the model finds against the positive tile and the true one.

Recalls and the hit rate are fractions in [0, 1] in JSON and percentages on the terminal.

The gallery tiles come from the folder the model's map modality reads (``satellite/`` for aerial models,
``osm/`` for OSM models; ``--map`` names it, and a folder of another kind is refused).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossview import __version__
from crossview.cli import Command
from crossview.errors import ConfigError
from crossview.fsio import atomic_write_text

RECALL_KS = (1, 5, 10)
EVAL_SEED = 0
"""Seed of the panorama rolls of an unknown-heading evaluation (the same rolls for every model)."""


# ---- metrics on score matrices (pure) ----------------------------------------------------------------------


def one_percent_k(gallery_size: int) -> int:
    """k of recall@1% for a gallery of ``gallery_size`` tiles: ``floor(G / 100) + 1`` (VIGOR's code)."""
    return int(gallery_size) // 100 + 1


def rank_queries(
    scores: np.ndarray, positive_index: np.ndarray, semi_positive_indices: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-query outcomes of a block of queries against the whole gallery.

    Ties are resolved in favour of the positive, then of the semi-positives (VIGOR's rank counts only tiles
    scoring strictly higher), so that recall@1, the hit rate and the top-1 tile always agree.

    Args:
        scores: (Q, G) similarities, higher is better.
        positive_index: (Q,) gallery index of each query's positive.
        semi_positive_indices: (Q, K) gallery indices of the semi-positives (-1 for none), or None.

    Returns:
        ``positive_rank`` (Q,) int: tiles scoring strictly higher than the positive; ``top1_index`` (Q,) int;
        ``hit`` (Q,) bool: the top-1 is the positive or a semi-positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive_index, dtype=np.int64)
    rows = np.arange(scores.shape[0])
    positive_rank = (scores > scores[rows, positive][:, None]).sum(axis=1)
    at_top = scores >= scores.max(axis=1, keepdims=True)
    positive_top = at_top[rows, positive]
    if semi_positive_indices is None:
        semi = np.full((len(rows), 1), -1, dtype=np.int64)
    else:
        semi = np.asarray(semi_positive_indices, dtype=np.int64).reshape(len(rows), -1)
    semi_top = at_top[rows[:, None], np.maximum(semi, 0)] & (semi >= 0)
    first_semi = semi[rows, np.argmax(semi_top, axis=1)] if semi.shape[1] else positive
    top1 = np.where(positive_top, positive, np.where(semi_top.any(axis=1), first_semi, np.argmax(scores, axis=1)))
    return {"positive_rank": positive_rank, "top1_index": top1, "hit": positive_top | semi_top.any(axis=1)}


def summarize_retrieval(
    outcomes: Mapping[str, np.ndarray],
    positive_index: np.ndarray,
    query_latlon: np.ndarray,
    gallery_latlon: np.ndarray,
) -> dict[str, Any]:
    """Recall@1/5/10/1%, hit rate and top-1 metre errors from :func:`rank_queries` outcomes.

    Args:
        outcomes: ``positive_rank``, ``top1_index``, ``hit`` of Q queries.
        positive_index: (Q,) gallery index of each query's positive.
        query_latlon: (Q, 2) panorama (lat, lon), degrees.
        gallery_latlon: (G, 2) tile centre (lat, lon), degrees.

    Returns:
        A flat dict: ``num_queries``, ``gallery_size``, ``one_percent_k``, ``recall@1``, ``recall@5``,
        ``recall@10``, ``recall@1%``, ``hit_rate`` (fractions), ``top1_error_m_mean``, ``top1_error_m_median``
        (all queries), ``top1_error_m_mean_correct``, ``top1_error_m_median_correct`` (queries whose top-1 is
        the positive; None when there is none), ``num_top1_correct``.
    """
    from crossview.geometry.frames import geodesic_distance_m

    rank = np.asarray(outcomes["positive_rank"])
    top1 = np.asarray(outcomes["top1_index"])
    gallery_latlon = np.asarray(gallery_latlon, dtype=np.float64)
    query_latlon = np.asarray(query_latlon, dtype=np.float64).reshape(-1, 2)
    gallery_size = len(gallery_latlon)
    k_one_percent = one_percent_k(gallery_size)
    metrics: dict[str, Any] = {
        "num_queries": len(rank),
        "gallery_size": gallery_size,
        "one_percent_k": k_one_percent,
    }
    for k in RECALL_KS:
        metrics[f"recall@{k}"] = float(np.mean(rank < k)) if len(rank) else None
    metrics["recall@1%"] = float(np.mean(rank < k_one_percent)) if len(rank) else None
    metrics["hit_rate"] = float(np.mean(outcomes["hit"])) if len(rank) else None
    error_m = np.asarray(
        geodesic_distance_m(
            lat1=gallery_latlon[top1, 0], lon1=gallery_latlon[top1, 1], lat2=query_latlon[:, 0], lon2=query_latlon[:, 1]
        ),
        dtype=np.float64,
    ).reshape(-1)
    correct = top1 == np.asarray(positive_index)
    metrics["num_top1_correct"] = int(correct.sum())
    metrics.update(_stats(error_m, "top1_error_m"))
    metrics.update(_stats(error_m[correct], "top1_error_m", suffix="_correct"))
    return metrics


def _stats(values: np.ndarray, name: str, suffix: str = "") -> dict[str, float | None]:
    if len(values) == 0:
        return {f"{name}_mean{suffix}": None, f"{name}_median{suffix}": None}
    return {f"{name}_mean{suffix}": float(np.mean(values)), f"{name}_median{suffix}": float(np.median(values))}


def retrieval_metrics(
    scores: np.ndarray,
    positive_index: np.ndarray,
    semi_positive_indices: np.ndarray | None,
    query_latlon: np.ndarray,
    gallery_latlon: np.ndarray,
) -> dict[str, Any]:
    """VIGOR retrieval metrics of a full (Q, G) score matrix (see the module docstring and
    :func:`summarize_retrieval` for the keys)."""
    outcomes = rank_queries(scores, positive_index, semi_positive_indices)
    return summarize_retrieval(outcomes, positive_index, query_latlon, gallery_latlon)


def heading_error_deg(pred_deg: np.ndarray, true_deg: np.ndarray) -> np.ndarray:
    """Absolute angle between headings, degrees in [0, 180] (wrap-around aware)."""
    difference = np.mod(np.asarray(pred_deg, dtype=np.float64) - np.asarray(true_deg, dtype=np.float64), 360.0)
    return np.minimum(difference, 360.0 - difference)


def heading_error_stats(pred_deg: np.ndarray, true_deg: np.ndarray) -> dict[str, float | None]:
    """``heading_error_deg_mean``, ``_median``, ``heading_within_5deg``, ``heading_within_10deg`` (fractions)."""
    errors = heading_error_deg(pred_deg, true_deg).reshape(-1)
    if len(errors) == 0:
        keys = ("heading_error_deg_mean", "heading_error_deg_median", "heading_within_5deg", "heading_within_10deg")
        return dict.fromkeys(keys)
    return {
        "heading_error_deg_mean": float(np.mean(errors)),
        "heading_error_deg_median": float(np.median(errors)),
        "heading_within_5deg": float(np.mean(errors < 5.0)),
        "heading_within_10deg": float(np.mean(errors < 10.0)),
    }


# ---- encodings ---------------------------------------------------------------------------------------------


def _map_batch_tensors(encoding: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to the per-item tensors (leading dim = batch) of an encoding dataclass; keep other fields."""
    batch = encoding.descriptor.shape[0]
    changes = {}
    for item in dataclasses.fields(encoding):
        value = getattr(encoding, item.name)
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == batch:
            changes[item.name] = fn(value)
    return dataclasses.replace(encoding, **changes)


def concat_encodings(encodings: Sequence[Any]) -> Any:
    """Concatenate encodings (``AerialEncoding`` or ``GroundEncoding``) along the batch dimension."""
    first = encodings[0]
    changes = {}
    for item in dataclasses.fields(first):
        value = getattr(first, item.name)
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == first.descriptor.shape[0]:
            changes[item.name] = torch.cat([getattr(e, item.name) for e in encodings], dim=0)
    return dataclasses.replace(first, **changes)


def slice_encoding(encoding: Any, start: int, stop: int) -> Any:
    """Items ``start:stop`` of an encoding."""
    return _map_batch_tensors(encoding, lambda t: t[start:stop])


# ---- evaluation --------------------------------------------------------------------------------------------


Progress = Callable[[str, int, int], None]


def _autocast(device: torch.device, amp: bool) -> Any:
    enabled = amp and device.type == "cuda"
    dtype = torch.bfloat16 if enabled and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


def encode_gallery(
    model: torch.nn.Module,
    dataset: Any,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    progress: Progress | None = None,
) -> Any:
    """``AerialEncoding`` of every tile of ``dataset.satellite_names``, in that order (float32, on ``device``)."""
    names = dataset.satellite_names
    parts = []
    for start in range(0, len(names), batch_size):
        chips = torch.stack([dataset.load_satellite(n) for n in names[start : start + batch_size]]).to(device)
        with _autocast(device, amp):
            encoding = model.encode_aerial(chips)
        parts.append(_map_batch_tensors(encoding, lambda t: t.float()))
        if progress is not None:
            progress("tiles", min(start + batch_size, len(names)), len(names))
    return concat_encodings(parts)


def _scores_against_gallery(
    model: torch.nn.Module, ground: Any, gallery: Any, *, unknown_heading: bool, chunk: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(Bq, G) scores (and headings) in gallery chunks, bounding the memory of orientation-aware matching."""
    size = gallery.descriptor.shape[0]
    scores, headings = [], []
    for start in range(0, size, chunk):
        part = slice_encoding(gallery, start, min(start + chunk, size))
        score, heading = model.similarity(ground, part, unknown_heading=unknown_heading)
        scores.append(score.float().cpu())
        if heading is not None:
            headings.append(heading.float().cpu())
    return torch.cat(scores, dim=1), (torch.cat(headings, dim=1) if headings else None)


def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    *,
    unknown_heading: bool = False,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    max_queries: int | None = None,
    amp: bool = False,
    gallery_chunk: int = 4096,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Retrieval metrics of ``model`` on a :class:`~crossview.data.vigor.VigorDataset` (VIGOR protocol).

    Args:
        model: an encoders ``CrossViewModel``.
        dataset: the evaluated split (``random_roll=True`` for an unknown-heading evaluation); its
            ``satellite_names`` are the gallery.
        unknown_heading: score with the orientation-aware similarity and report heading errors.
        batch_size: panoramas / tiles per forward pass.
        device: where the model runs.
        num_workers: DataLoader workers for the panoramas.
        max_queries: evaluate only the first N panoramas (quick checks); the gallery stays complete.
        amp: mixed precision on CUDA.
        gallery_chunk: tiles scored at once against a batch of queries.
        progress: called with (stage, done, total).

    Returns:
        The metrics of :func:`summarize_retrieval`, plus with ``unknown_heading`` those of
        :func:`heading_error_stats`, and ``timing`` (seconds, images/s).
    """
    if len(dataset) == 0:
        raise ConfigError(f"nothing to evaluate: the split has no panoramas in {list(dataset.cities)}")
    _check_maps(getattr(model, "config", {}), dataset)
    device = torch.device(device)
    model = model.to(device).eval()
    index = dataset.satellite_index
    started = time.perf_counter()
    with torch.inference_mode():
        gallery = encode_gallery(model, dataset, batch_size=batch_size, device=device, amp=amp, progress=progress)
        gallery_seconds = time.perf_counter() - started
        settings = _QuerySettings(unknown_heading, batch_size, device, num_workers, max_queries, amp, gallery_chunk)
        outcomes, headings = _encode_and_rank(model, dataset, gallery, settings, progress)
    total_seconds = time.perf_counter() - started
    queries = outcomes["record_index"]
    records = [dataset.records[i] for i in queries]
    positive = np.array([index[r.sat_names[0]] for r in records], dtype=np.int64)
    gallery_latlon = np.array([_tile_latlon(n) for n in dataset.satellite_names], dtype=np.float64)
    query_latlon = np.array([(r.lat, r.lon) for r in records], dtype=np.float64).reshape(-1, 2)
    metrics = summarize_retrieval(outcomes, positive, query_latlon, gallery_latlon)
    if unknown_heading:
        metrics.update(heading_error_stats(headings["pred"], headings["true"]))
    images = len(dataset.satellite_names) + len(queries)
    metrics["timing"] = {
        "seconds": total_seconds,
        "gallery_seconds": gallery_seconds,
        "images_per_s": images / max(total_seconds, 1e-9),
    }
    return metrics


def _check_maps(model_config: Mapping[str, Any], dataset: Any) -> None:
    """The dataset's tiles (``dataset.map``, and their legend) must be of the model's map modality.

    Raises:
        MapModalityError: aerial model on OSM tiles or the reverse, or OSM tiles of another legend.
    """
    from crossview.encoders import check_data_map, check_map_modality

    data_map = getattr(dataset, "map", "satellite")
    check_data_map(model_config, data_map)
    map_tags = getattr(dataset, "map_tags", None)
    if map_tags is not None:
        check_map_modality(model_config, map_tags(), map_name=f"{data_map}/ tiles of {dataset.root}")


def _tile_latlon(name: str) -> tuple[float, float]:
    from crossview.data.vigor import parse_satellite_name

    centre = parse_satellite_name(name)
    return centre.lat, centre.lon


@dataclasses.dataclass(frozen=True)
class _QuerySettings:
    unknown_heading: bool
    batch_size: int
    device: torch.device
    num_workers: int
    max_queries: int | None
    amp: bool
    gallery_chunk: int


def _encode_and_rank(
    model: torch.nn.Module, dataset: Any, gallery: Any, settings: _QuerySettings, progress: Progress | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Encode the panoramas batch by batch and rank each batch against the gallery (scores are not kept)."""
    count = len(dataset) if settings.max_queries is None else min(len(dataset), settings.max_queries)
    subset = torch.utils.data.Subset(dataset, range(count))
    loader = torch.utils.data.DataLoader(
        subset, batch_size=settings.batch_size, shuffle=False, num_workers=settings.num_workers
    )
    index = dataset.satellite_index
    parts: dict[str, list[np.ndarray]] = {"positive_rank": [], "top1_index": [], "hit": [], "record_index": []}
    pred, true = [], []
    for batch in loader:
        rows = [int(i) for i in batch["index"]]
        tiles = [dataset.records[i].sat_names for i in rows]
        positive = np.array([index[t[0]] for t in tiles], dtype=np.int64)
        semi = np.array([[index.get(n, -1) for n in t[1:]] for t in tiles], dtype=np.int64)
        with _autocast(settings.device, settings.amp):
            ground = model.encode_ground(batch["pano"].to(settings.device), camera="panorama")
        ground = _map_batch_tensors(ground, lambda t: t.float())
        scores, heading = _scores_against_gallery(
            model, ground, gallery, unknown_heading=settings.unknown_heading, chunk=settings.gallery_chunk
        )
        for key, value in rank_queries(scores.numpy(), positive, semi).items():
            parts[key].append(value)
        parts["record_index"].append(np.array(rows, dtype=np.int64))
        if heading is not None:
            pred.append(heading.numpy()[np.arange(len(rows)), positive])
            true.append(np.asarray(batch["heading_deg"], dtype=np.float64))
        if progress is not None:
            progress("panoramas", min(rows[-1] + 1, count), count)
    outcomes = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in parts.items()}
    headings = {"pred": np.concatenate(pred) if pred else np.zeros(0), "true": np.concatenate(true) if true else []}
    return outcomes, headings


# ---- output ------------------------------------------------------------------------------------------------


def format_table(metrics: Mapping[str, Any], title: str = "") -> str:
    """An aligned two-column table: recalls and hit rate in %, errors in metres and degrees."""
    rows: list[tuple[str, str]] = [
        ("queries", str(metrics["num_queries"])),
        ("gallery tiles", f"{metrics['gallery_size']} (1% = top {metrics['one_percent_k']})"),
    ]
    for key in ("recall@1", "recall@5", "recall@10", "recall@1%", "hit_rate"):
        rows.append((key.replace("_", " "), _percent(metrics.get(key))))
    rows += [
        ("top-1 error mean", _metres(metrics.get("top1_error_m_mean"))),
        ("top-1 error median", _metres(metrics.get("top1_error_m_median"))),
        ("  (top-1 correct) mean", _metres(metrics.get("top1_error_m_mean_correct"))),
        ("  (top-1 correct) median", _metres(metrics.get("top1_error_m_median_correct"))),
    ]
    if "heading_error_deg_mean" in metrics:
        rows += [
            ("heading error mean", _degrees(metrics.get("heading_error_deg_mean"))),
            ("heading error median", _degrees(metrics.get("heading_error_deg_median"))),
            ("heading within 5 deg", _percent(metrics.get("heading_within_5deg"))),
            ("heading within 10 deg", _percent(metrics.get("heading_within_10deg"))),
        ]
    timing = metrics.get("timing")
    if timing:
        rows.append(("images/s", f"{timing['images_per_s']:.1f}"))
    width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    lines = [title] if title else []
    lines += [f"{name.ljust(width)}  {value.rjust(value_width)}" for name, value in rows]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.2f} %"


def _metres(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} m"


def _degrees(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} deg"


def _json_ready(value: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(data: Mapping[str, Any], path: Path) -> None:
    """Strict JSON (NaN written as null) to ``path``, atomically: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(_json_ready(data), indent=2, allow_nan=False) + "\n")


# ---- command line ------------------------------------------------------------------------------------------


def build_eval_dataset(
    root: str | os.PathLike[str],
    model_config: Mapping[str, Any],
    *,
    split: str,
    cities: Sequence[str] | None,
    unknown_heading: bool,
    corrected: bool = False,
    data_map: str | None = None,
) -> Any:
    """The test part of a split at the model's image sizes; seeded rolls for an unknown-heading evaluation.

    ``data_map``: the tile folder (``satellite`` or ``osm``); None: the one of the model's map modality.

    Raises:
        MapModalityError: ``data_map`` holds tiles of another kind than the model takes.
    """
    from crossview.data.vigor import VigorDataset
    from crossview.encoders import check_data_map
    from crossview.encoders.modalities import MAP_FOLDERS
    from crossview.train import _pano_size, split_cities

    if data_map is None:
        data_map = MAP_FOLDERS.get(model_config.get("map_modality", "aerial"), "satellite")
    check_data_map(model_config, data_map)

    return VigorDataset(
        root,
        split=split,
        train=False,
        cities=split_cities(root, split, train=False, cities=cities),
        corrected=corrected,
        pano_size=_pano_size(model_config),
        aerial_size=model_config.get("aerial_size"),
        random_roll=unknown_heading,
        seed=EVAL_SEED,
        map=data_map,
    )


def _select_device(requested: str) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available")
    return torch.device(requested)


def _terminal_progress() -> Progress | None:
    if not sys.stderr.isatty():
        return None

    def report(stage: str, done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\r\033[Kencoding {stage}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="VIGOR-layout dataset (real or synthetic)")
    parser.add_argument("--model", required=True, metavar="NAME|CKPT", help="registry name or checkpoint file")
    parser.add_argument("--split", choices=("same", "cross"), default="same", help="default: same")
    parser.add_argument("--out", metavar="METRICS.json", help="also write the metrics and settings as JSON")
    parser.add_argument("--cities", metavar="A,B", help="comma-separated cities instead of the split's")
    parser.add_argument("--unknown-heading", action="store_true", help="roll panoramas randomly, search the heading")
    parser.add_argument("--corrected", action="store_true", help="SliceMatch's corrected labels")
    parser.add_argument(
        "--map",
        choices=("satellite", "osm"),
        help="tile folder: satellite (aerial RGB) or osm (OSM class tiles); default: the one the model takes",
    )
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per forward (default 32)")
    parser.add_argument("--max-queries", type=int, metavar="N", help="only the first N panoramas (quick check)")
    parser.add_argument("--num-workers", type=int, default=0, metavar="N", help="data loader workers (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if present")


def _check_args(args: argparse.Namespace) -> None:
    if not Path(args.data).is_dir():
        raise ConfigError(f"--data {args.data}: folder not found")
    for option, value in (("--batch-size", args.batch_size), ("--max-queries", args.max_queries)):
        if value is not None and value < 1:
            raise ConfigError(f"{option} {value}: must be at least 1")
    if args.num_workers < 0:
        raise ConfigError(f"--num-workers {args.num_workers}: must be >= 0")
    if args.out is not None and Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: is a folder, expected a .json file path")


def run(args: argparse.Namespace) -> int:
    """``crossview eval``: print the table; write JSON with ``--out``."""
    from crossview.checkpoints import load_checkpoint
    from crossview.encoders import check_data_map, check_map_modality

    _check_args(args)
    device = _select_device(args.device)
    checkpoint = load_checkpoint(args.model)
    model_name = checkpoint.name or str(checkpoint.path)
    if args.map is not None:
        check_data_map(checkpoint.model_config, args.map, model_name=model_name)
    model = checkpoint.build_model(device)
    cities = [c.strip() for c in args.cities.split(",") if c.strip()] if args.cities else None
    dataset = build_eval_dataset(
        args.data,
        checkpoint.model_config,
        split=args.split,
        cities=cities,
        unknown_heading=args.unknown_heading,
        corrected=args.corrected,
        data_map=args.map,
    )
    tiles = f"{dataset.map}/ tiles of {args.data}"
    check_map_modality(checkpoint.model_config, dataset.map_tags(), map_name=tiles, model_name=model_name)
    metrics = evaluate(
        model,
        dataset,
        unknown_heading=args.unknown_heading,
        batch_size=args.batch_size,
        device=device,
        num_workers=args.num_workers,
        max_queries=args.max_queries,
        amp=device.type == "cuda",
        progress=_terminal_progress(),
    )
    title = f"{checkpoint.name or checkpoint.path} on {args.data} ({args.split}-area, {', '.join(dataset.cities)})"
    print(format_table(metrics, title))
    if args.out is not None:
        report = {
            "crossview_version": __version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": {
                "name": checkpoint.name,
                "path": str(checkpoint.path),
                "sha256": checkpoint.sha256,
                "config": checkpoint.model_config,
            },
            "settings": {
                "data": str(args.data),
                "split": args.split,
                "cities": list(dataset.cities),
                "corrected": args.corrected,
                "map": dataset.map,
                "unknown_heading": args.unknown_heading,
                "roll_seed": EVAL_SEED if args.unknown_heading else None,
                "max_queries": args.max_queries,
                "batch_size": args.batch_size,
                "device": str(device),
                "pano_size": list(dataset.pano_size) if dataset.pano_size else None,
                "aerial_size": dataset.aerial_size,
            },
            "metrics": {k: v for k, v in metrics.items() if k != "timing"},
            "timing": metrics["timing"],
        }
        write_json_atomic(report, Path(args.out))
        print(f"wrote {args.out}")
    return 0


DESCRIPTION = """\
Evaluate cross-view retrieval on a VIGOR-layout dataset with VIGOR's protocol: every panorama of the split's
test part against every aerial tile of its cities. Reports recall@1/5/10/1%, hit rate (top-1 is the positive or
a semi-positive), the top-1 tile's distance to the panorama (all queries and correct ones) and, with
--unknown-heading (seeded random panorama rolls), heading errors.

examples:
  crossview eval --data world/ --model synth-v1
  crossview eval --data VIGOR/ --split cross --model runs/vigor/last.pt --out metrics.json
  crossview eval --data world/ --model synth-v1 --unknown-heading --max-queries 200
  crossview eval --data world/ --model runs/synth-osm-v1/last.pt --map osm     # an OSM model on osm/ tiles
"""

COMMAND = Command(
    name="eval",
    description=DESCRIPTION,
    add_arguments=add_arguments,
    run=run,
)

"""Accuracy of located poses against known ones (a synthetic world's ``poses.csv``): errors and their summary."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import Geod

from crossview.export.records import ImageResult

_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class PoseError:
    """Error of one located image.

    Attributes:
        image: the image as given to locate.
        camera: ``panorama`` or ``pinhole`` (None when the record has no camera).
        position_m: geodesic distance to the true position, metres (NaN when not located).
        heading_deg: absolute heading difference in [0, 180] degrees (NaN when unknown).
        score: the record's score (NaN when absent).
    """

    image: str
    camera: str | None
    position_m: float
    heading_deg: float
    score: float


def pose_errors(results: Sequence[ImageResult], truth_csv: str | os.PathLike[str]) -> list[PoseError]:
    """Errors of ``results`` against the poses of ``truth_csv`` (matched by image path, see ``crossview plot``).

    Results without a true pose are left out; failed ones count with NaN errors.
    """
    from crossview.plot import match_truth, read_truth

    truth = match_truth(results, read_truth(truth_csv), truth_dir=Path(truth_csv).parent)
    errors = []
    for result, pose in zip(results, truth, strict=True):
        if pose is None:
            continue
        camera = result.camera.model if result.camera is not None else None
        if not result.ok:
            errors.append(PoseError(result.image, camera, math.nan, math.nan, math.nan))
            continue
        _, _, distance = _GEOD.inv(result.lon, result.lat, pose.lon, pose.lat)
        heading = math.nan
        if pose.heading_deg is not None and result.heading_deg is not None:
            heading = abs((result.heading_deg - pose.heading_deg + 180.0) % 360.0 - 180.0)
        score = math.nan if result.score is None else float(result.score)
        errors.append(PoseError(result.image, camera, float(distance), heading, score))
    return errors


def summarize(errors: Sequence[PoseError], *, within_m: float = 5.0, seconds: float | None = None) -> dict:
    """Median and 90th percentile position error, median heading error, recall within ``within_m`` (of all
    images, failures count as misses), images/s when ``seconds`` is given, and the Spearman rank correlation
    between score and position error (negative: higher scores, smaller errors)."""
    position = np.array([e.position_m for e in errors], dtype=float)
    heading = np.array([e.heading_deg for e in errors], dtype=float)
    located = np.isfinite(position)
    summary = {
        "images": len(errors),
        "located": int(located.sum()),
        f"recall_{within_m:g}m": float(np.mean(np.nan_to_num(position, nan=np.inf) <= within_m)) if errors else 0.0,
        "median_position_error_m": _stat(np.median, position[located]),
        "p90_position_error_m": _stat(lambda a: np.percentile(a, 90), position[located]),
        "median_heading_error_deg": _stat(np.median, heading[np.isfinite(heading)]),
        "score_error_spearman": spearman([e.score for e in errors], list(position)),
    }
    if seconds is not None:
        summary["images_per_s"] = len(errors) / seconds if seconds > 0 else math.nan
    return summary


def _stat(fn, values: np.ndarray) -> float:
    return float(fn(values)) if len(values) else math.nan


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of the pairs where both values are finite (NaN with fewer than 3)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return math.nan
    rx, ry = _ranks(x[keep]), _ranks(y[keep])
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their ranks)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks

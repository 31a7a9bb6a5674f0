"""GeoJSON results (RFC 7946): what ``crossview locate`` writes and ``crossview plot`` reads.

Layout::

    {"type": "FeatureCollection",
     "bbox": [west, south, east, north],          # of every geometry below; absent when there is none
     "crossview": {"version", "time", "settings", ...},
     "features": [
        one "pose" Feature per input image, in input order (Point [lon, lat], null geometry when failed),
        then, with ellipses=True, for each located image in input order: an "ellipse" Polygon (the
        DEFAULT_ELLIPSE_CONFIDENCE region, 95 %) and a "heading" LineString (DEFAULT_HEADING_LINE_M metres)
     ]}

Convention:
    Coordinates are WGS84 [lon, lat] (RFC 7946 section 3.1.1) with 7 decimals (about 1 cm); polygon rings are
    closed and counter-clockwise (RFC 7946 section 3.1.6). Every Feature has a ``kind`` property (``pose``,
    ``ellipse`` or ``heading``); pose Features carry :meth:`ImageResult.to_dict` as their other properties.
    Antimeridian-crossing shapes are not split (located images span metres to kilometres, not the date line).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from crossview import __version__
from crossview.export.records import (
    LATLON_DECIMALS,
    METRE_DECIMALS,
    ImageResult,
    ResultsError,
    ResultsReadError,
)
from crossview.export.shapes import (
    DEFAULT_ELLIPSE_CONFIDENCE,
    DEFAULT_HEADING_LINE_M,
    confidence_scale,
    ellipse_ring_lonlat,
    heading_line_lonlat,
)
from crossview.fsio import atomic_write_text

MIN_DRAWN_SEMI_AXIS_M = 0.5
"""Smallest semi-axis of a drawn ellipse polygon, metres: thinner rings could collapse at 7-decimal precision."""

POSE, ELLIPSE, HEADING = "pose", "ellipse", "heading"
FEATURE_KINDS = (POSE, ELLIPSE, HEADING)


def complete_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """The top-level ``crossview`` member: ``meta`` with ``version``, ``time`` (UTC, ISO 8601) and ``settings``
    filled in where absent (values already there, e.g. from a file read back, are kept)."""
    completed = {"version": __version__, "time": _utc_now(), "settings": {}}
    completed.update(dict(meta or {}))
    return completed


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _position(lon: float, lat: float) -> list[float]:
    return [round(float(lon), LATLON_DECIMALS), round(float(lat), LATLON_DECIMALS)]


def _ring_positions(ring_lonlat: np.ndarray) -> list[list[float]]:
    """Rounded positions of a closed ring, without consecutive duplicates that rounding could create."""
    positions: list[list[float]] = []
    for lon, lat in ring_lonlat:
        position = _position(lon, lat)
        if not positions or position != positions[-1]:
            positions.append(position)
    return positions


def pose_feature(result: ImageResult) -> dict[str, Any]:
    """The Feature of one image: Point [lon, lat] (null when failed), properties ``kind`` + the record."""
    geometry = None
    if result.ok:
        geometry = {"type": "Point", "coordinates": _position(result.lon, result.lat)}
    return {"type": "Feature", "geometry": geometry, "properties": {"kind": POSE, **result.to_dict()}}


def ellipse_feature(result: ImageResult, index: int, *, confidence: float) -> dict[str, Any] | None:
    """The ``confidence`` uncertainty ellipse of a located image as a Polygon Feature (None without ellipse).

    Properties: ``kind`` 'ellipse', ``image``, ``index`` (of its pose Feature), ``confidence``, ``sigma_scale``
    and the region's own ``semi_major_m``/``semi_minor_m``/``azimuth_deg`` (before the drawing minimum).
    """
    if not result.ok or result.error_ellipse_m is None:
        return None
    scale = confidence_scale(confidence)
    ellipse = result.error_ellipse_m
    semi_major, semi_minor = scale * ellipse.semi_major_m, scale * ellipse.semi_minor_m
    ring = ellipse_ring_lonlat(
        lat=result.lat,
        lon=result.lon,
        semi_major_m=max(semi_major, MIN_DRAWN_SEMI_AXIS_M),
        semi_minor_m=max(semi_minor, MIN_DRAWN_SEMI_AXIS_M),
        azimuth_deg=ellipse.azimuth_deg,
    )
    properties = {
        "kind": ELLIPSE,
        "image": result.image,
        "index": index,
        "confidence": confidence,
        "sigma_scale": round(scale, 4),
        "semi_major_m": round(semi_major, METRE_DECIMALS),
        "semi_minor_m": round(semi_minor, METRE_DECIMALS),
        "azimuth_deg": ellipse.to_dict()["azimuth_deg"],
    }
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [_ring_positions(ring)]},
        "properties": properties,
    }


def heading_feature(result: ImageResult, index: int, *, length_m: float) -> dict[str, Any] | None:
    """A LineString Feature from a located image's position along its true heading (None when failed)."""
    if not result.ok:
        return None
    line = heading_line_lonlat(lat=result.lat, lon=result.lon, heading_deg=result.heading_deg, length_m=length_m)
    properties = {
        "kind": HEADING,
        "image": result.image,
        "index": index,
        "heading_deg": result.to_dict()["heading_deg"],
        "heading_std_deg": result.to_dict()["heading_std_deg"],
        "length_m": length_m,
    }
    coordinates = [_position(lon, lat) for lon, lat in line]
    return {"type": "Feature", "geometry": {"type": "LineString", "coordinates": coordinates}, "properties": properties}


def _geometry_positions(geometry: Mapping[str, Any] | None) -> Iterable[Sequence[float]]:
    if geometry is None:
        return []
    coordinates = geometry["coordinates"]
    if geometry["type"] == "Point":
        return [coordinates]
    if geometry["type"] == "LineString":
        return coordinates
    return [position for ring in coordinates for position in ring]


def collection_bbox(features: Sequence[Mapping[str, Any]]) -> list[float] | None:
    """[west, south, east, north] of every position of every geometry (None when all geometries are null)."""
    positions = [p for feature in features for p in _geometry_positions(feature.get("geometry"))]
    if not positions:
        return None
    lons, lats = [p[0] for p in positions], [p[1] for p in positions]
    return [min(lons), min(lats), max(lons), max(lats)]


def results_document(
    results: Sequence[ImageResult],
    *,
    meta: Mapping[str, Any] | None = None,
    ellipses: bool = False,
    confidence: float = DEFAULT_ELLIPSE_CONFIDENCE,
    heading_length_m: float = DEFAULT_HEADING_LINE_M,
) -> dict[str, Any]:
    """The FeatureCollection of ``results`` as a dict (see the module docstring for the layout).

    Args:
        results: one record per input image, in input order.
        meta: the ``crossview`` member (``settings``, ...; ``version`` and ``time`` are filled in when absent).
        ellipses: also add an uncertainty-ellipse Polygon and a heading LineString per located image.
        confidence: probability inside the ellipse polygons (default 0.95).
        heading_length_m: length of the heading lines, ground metres.
    """
    if not (math.isfinite(heading_length_m) and heading_length_m > 0):
        raise ResultsError(f"heading_length_m={heading_length_m!r} must be a finite number > 0")
    confidence_scale(confidence)  # validates
    features = [pose_feature(result) for result in results]
    crossview = complete_meta(meta)
    if ellipses:
        for index, result in enumerate(results):
            extra = [ellipse_feature(result, index, confidence=confidence)]
            extra.append(heading_feature(result, index, length_m=heading_length_m))
            features.extend(feature for feature in extra if feature is not None)
        crossview["ellipses"] = {
            "confidence": confidence,
            "sigma_scale": round(confidence_scale(confidence), 4),
            "min_semi_axis_m": MIN_DRAWN_SEMI_AXIS_M,
            "heading_line_m": heading_length_m,
        }
    document: dict[str, Any] = {"type": "FeatureCollection"}
    box = collection_bbox(features)
    if box is not None:
        document["bbox"] = box
    document["crossview"] = crossview
    document["features"] = features
    return document


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ResultsError(f"cannot write as JSON: {error}") from None


def write_geojson(
    results: Sequence[ImageResult],
    path: str | os.PathLike,
    *,
    meta: Mapping[str, Any] | None = None,
    ellipses: bool = False,
    confidence: float = DEFAULT_ELLIPSE_CONFIDENCE,
    heading_length_m: float = DEFAULT_HEADING_LINE_M,
) -> Path:
    """Write ``results`` as a GeoJSON FeatureCollection, atomically, one Feature per line.

    Args: see :func:`results_document`.

    Returns:
        ``path``.
    """
    document = results_document(
        results, meta=meta, ellipses=ellipses, confidence=confidence, heading_length_m=heading_length_m
    )
    head = {key: value for key, value in document.items() if key != "features"}
    lines = [_dumps(feature) for feature in document["features"]]
    body = ",\n".join(lines)
    text = _dumps(head)[:-1] + ', "features": [\n' + body + ("\n" if body else "") + "]}\n"
    path = Path(path)
    try:
        return atomic_write_text(path, text)
    except OSError as error:
        raise ResultsReadError(f"cannot write {path}: {error.strerror or error}") from None


def read_geojson(path: str | os.PathLike) -> tuple[list[ImageResult], dict[str, Any]]:
    """Read a crossview GeoJSON results file.

    Returns:
        (the records of the ``pose`` Features in file order, the ``crossview`` member).

    Raises:
        ResultsReadError: missing or unreadable file.
        ResultsError: not JSON, not a FeatureCollection, not written by crossview, or a bad record.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsReadError(f"cannot read results {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path} is not JSON: {error}") from None
    return parse_results_document(document, source=str(path))


def parse_results_document(document: Any, *, source: str = "GeoJSON") -> tuple[list[ImageResult], dict[str, Any]]:
    """The records and ``crossview`` member of a parsed results FeatureCollection (see :func:`read_geojson`)."""
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise ResultsError(f"{source} is not a GeoJSON FeatureCollection")
    meta = document.get("crossview")
    if not isinstance(meta, dict):
        raise ResultsError(f"{source} is not a crossview results file (no 'crossview' member)")
    features = document.get("features")
    if not isinstance(features, list):
        raise ResultsError(f"{source}: 'features' is not a list")
    results = []
    for number, feature in enumerate(features):
        properties = feature.get("properties") if isinstance(feature, dict) else None
        if not isinstance(properties, dict):
            raise ResultsError(f"{source}: feature {number} has no properties object")
        if properties.get("kind", POSE) != POSE:
            continue
        try:
            results.append(ImageResult.from_dict(properties))
        except ResultsError as error:
            raise ResultsError(f"{source}: feature {number}: {error}") from None
    return results, meta

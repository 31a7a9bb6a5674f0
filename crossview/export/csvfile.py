"""CSV results: one row per input image with the GeoJSON properties flattened, plus a JSON metadata sidecar.

Columns (:data:`CSV_COLUMNS`, in order)::

    image, status, lat, lon, heading_deg, position_std_m,
    error_ellipse_semi_major_m, error_ellipse_semi_minor_m, error_ellipse_azimuth_deg, heading_std_deg, score,
    prior_source, prior_radius_m, prior_lat, prior_lon, prior_heading_deg,
    camera_model, camera_hfov_deg, camera_height_m, model, map, error

Units and conventions are those of :class:`~crossview.export.records.ImageResult` (WGS84 degrees with 7
decimals; headings and azimuths clockwise from true north; 1-sigma ellipse in ground metres). Empty cells are
absent values. The ``crossview`` metadata (version, time, settings) that GeoJSON keeps in its top-level member
goes to ``<file>.meta.json`` beside the CSV (e.g. ``results.csv.meta.json``), so the CSV itself stays a plain
table that spreadsheets and GIS tools (GDAL's CSV driver, QGIS delimited text with X=lon, Y=lat) open as is.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crossview.export.geojson import complete_meta
from crossview.export.records import (
    DEGREE_DECIMALS,
    LATLON_DECIMALS,
    METRE_DECIMALS,
    SCORE_DECIMALS,
    ImageResult,
    ResultsError,
    ResultsReadError,
)
from crossview.fsio import atomic_write_json, atomic_write_text

# column -> (path in ImageResult.to_dict(), decimals for numbers or None for text)
_COLUMNS: dict[str, tuple[tuple[str, ...], int | None]] = {
    "image": (("image",), None),
    "status": (("status",), None),
    "lat": (("lat",), LATLON_DECIMALS),
    "lon": (("lon",), LATLON_DECIMALS),
    "heading_deg": (("heading_deg",), DEGREE_DECIMALS),
    "position_std_m": (("position_std_m",), METRE_DECIMALS),
    "error_ellipse_semi_major_m": (("error_ellipse_m", "semi_major"), METRE_DECIMALS),
    "error_ellipse_semi_minor_m": (("error_ellipse_m", "semi_minor"), METRE_DECIMALS),
    "error_ellipse_azimuth_deg": (("error_ellipse_m", "azimuth_deg"), DEGREE_DECIMALS),
    "heading_std_deg": (("heading_std_deg",), DEGREE_DECIMALS),
    "score": (("score",), SCORE_DECIMALS),
    "prior_source": (("prior", "source"), None),
    "prior_radius_m": (("prior", "radius_m"), METRE_DECIMALS),
    "prior_lat": (("prior", "lat"), LATLON_DECIMALS),
    "prior_lon": (("prior", "lon"), LATLON_DECIMALS),
    "prior_heading_deg": (("prior", "heading_deg"), DEGREE_DECIMALS),
    "camera_model": (("camera", "model"), None),
    "camera_hfov_deg": (("camera", "hfov_deg"), DEGREE_DECIMALS),
    "camera_height_m": (("camera", "height_m"), METRE_DECIMALS),
    "model": (("model",), None),
    "map": (("map",), None),
    "error": (("error",), None),
}

CSV_COLUMNS: tuple[str, ...] = tuple(_COLUMNS)
"""Header of the results CSV, in order."""

REQUIRED_COLUMNS = ("image", "status", "lat", "lon", "heading_deg")
META_SUFFIX = ".meta.json"


def meta_path(path: str | os.PathLike) -> Path:
    """The metadata sidecar of a results CSV: ``<path>.meta.json``."""
    path = Path(path)
    return path.with_name(path.name + META_SUFFIX)


def result_row(result: ImageResult) -> dict[str, str]:
    """One CSV row (column -> text; '' for absent values; numbers with fixed decimals)."""
    record = result.to_dict()
    row = {}
    for column, (keys, decimals) in _COLUMNS.items():
        value: Any = record
        for key in keys:
            value = None if value is None else value.get(key)
        if value is None:
            row[column] = ""
        elif decimals is None:
            row[column] = str(value)
        else:
            row[column] = f"{value:.{decimals}f}"
    return row


def row_result(row: Mapping[str, str]) -> ImageResult:
    """Inverse of :func:`result_row` (ResultsError on bad values)."""
    record: dict[str, Any] = {}
    for column, (keys, decimals) in _COLUMNS.items():
        text = row.get(column) or ""
        if text == "":
            continue
        value: Any = text
        if decimals is not None:
            try:
                value = float(text)
            except ValueError:
                raise ResultsError(f"column {column}: {text!r} is not a number") from None
        target = record
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    if "prior" in record and "source" not in record["prior"]:
        record["prior"]["source"] = "none"
    return ImageResult.from_dict(record)


def write_csv(results: Sequence[ImageResult], path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``results`` as CSV (header :data:`CSV_COLUMNS`) and ``meta`` to ``<path>.meta.json``, atomically.

    Returns:
        ``path``.
    """
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow(result_row(result))
    meta_text = complete_meta(meta)
    try:
        json.dumps(meta_text, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ResultsError(f"cannot write the metadata as JSON: {error}") from None
    try:
        atomic_write_json(meta_path(path), meta_text)
        return atomic_write_text(path, buffer.getvalue())
    except OSError as error:
        raise ResultsReadError(f"cannot write {path}: {error.strerror or error}") from None


def read_table(path: Path, required: Sequence[str], *, what: str, missing_message: str) -> csv.DictReader:
    """A ``csv.DictReader`` over the whole file once its ``required`` columns are checked.

    Raises:
        ResultsReadError: ``cannot read {what} {path}: ...`` for a missing or unreadable file.
        ResultsError: ``missing_message`` with ``{path}`` and ``{missing}`` filled in when columns are missing.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsReadError(f"cannot read {what} {path}: {getattr(error, 'strerror', None) or error}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [column for column in required if column not in (reader.fieldnames or [])]
    if missing:
        raise ResultsError(missing_message.format(path=path, missing=", ".join(missing)))
    return reader


def read_csv(path: str | os.PathLike) -> tuple[list[ImageResult], dict[str, Any]]:
    """Read a results CSV and its metadata sidecar (``{}`` when the sidecar is absent).

    Raises:
        ResultsReadError: missing or unreadable file.
        ResultsError: required columns missing or a bad row (named by its line number).
    """
    path = Path(path)
    reader = read_table(
        path,
        REQUIRED_COLUMNS,
        what="results",
        missing_message="{path} is not a crossview results CSV (no column {missing})",
    )
    results = []
    for row in reader:
        try:
            results.append(row_result(row))
        except ResultsError as error:
            raise ResultsError(f"{path}, line {reader.line_num}: {error}") from None
    return results, _read_meta(meta_path(path))


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultsError(f"cannot read the metadata {path}: {error}") from None
    if not isinstance(meta, dict):
        raise ResultsError(f"{path}: the metadata is not a JSON object")
    return meta

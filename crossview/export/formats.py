"""One entry point for results files: the format follows ``fmt`` or the file's extension."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from crossview.errors import ConfigError
from crossview.export.csvfile import read_csv, write_csv
from crossview.export.geojson import read_geojson, write_geojson
from crossview.export.records import ImageResult, ResultsReadError

ResultsFormat = Literal["geojson", "csv"]

FORMATS: tuple[str, ...] = ("geojson", "csv")
SUFFIX_FORMATS: dict[str, ResultsFormat] = {".geojson": "geojson", ".json": "geojson", ".csv": "csv"}


def results_format(path: str | os.PathLike, fmt: str | None = None) -> ResultsFormat:
    """``fmt`` ('geojson' or 'csv') when given, else the format of ``path``'s extension.

    Raises:
        ConfigError: unknown ``fmt``, or no ``fmt`` and an extension other than .geojson, .json or .csv.
    """
    if fmt is not None:
        lowered = fmt.lower()
        if lowered not in FORMATS:
            raise ConfigError(f"--format {fmt}: unknown results format (choose geojson or csv)")
        return lowered  # type: ignore[return-value]
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise ConfigError(
            f"{path}: cannot tell the results format from the extension {suffix or '(none)'!r} "
            "(use .geojson, .json or .csv, or --format geojson|csv)"
        )
    return SUFFIX_FORMATS[suffix]


def write_results(
    results: Sequence[ImageResult],
    path: str | os.PathLike,
    *,
    fmt: str | None = None,
    meta: Mapping[str, Any] | None = None,
    ellipses: bool = False,
) -> Path:
    """Write results as GeoJSON (:func:`write_geojson`) or CSV (:func:`write_csv`), atomically.

    Args:
        results: one record per input image, in input order.
        path: output file.
        fmt: 'geojson' or 'csv'; default from the extension (.geojson/.json -> GeoJSON, .csv -> CSV).
        meta: the ``crossview`` metadata (settings, ...; version and time are filled in when absent).
        ellipses: GeoJSON only: add 95 % uncertainty-ellipse Polygons and heading LineStrings.

    Returns:
        ``path``.
    """
    if results_format(path, fmt) == "csv":
        return write_csv(results, path, meta)
    return write_geojson(results, path, meta=meta, ellipses=ellipses)


def read_results(path: str | os.PathLike) -> tuple[list[ImageResult], dict[str, Any]]:
    """Read a results file written by :func:`write_results` (GeoJSON or CSV, told by extension or content).

    Returns:
        (records in file order, the ``crossview`` metadata; ``{}`` for a CSV without its sidecar).

    Raises:
        ResultsReadError: missing or unreadable file.
        ResultsError: not a crossview results file, or a bad record.
    """
    path = Path(path)
    fmt = SUFFIX_FORMATS.get(path.suffix.lower()) or ("geojson" if _first_character(path) in "{[" else "csv")
    return read_csv(path) if fmt == "csv" else read_geojson(path)


def _first_character(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(4096).lstrip()[:1] or " "
    except OSError as error:
        raise ResultsReadError(f"cannot read results {path}: {error.strerror or error}") from None

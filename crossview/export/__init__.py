"""Results of ``crossview locate``: records, GeoJSON (RFC 7946) and CSV writers/readers, uncertainty shapes.

See :mod:`crossview.export.records` for the record and its conventions, :mod:`crossview.export.geojson` and
:mod:`crossview.export.csvfile` for the file layouts.
"""

from crossview.export.csvfile import CSV_COLUMNS, read_csv, write_csv
from crossview.export.formats import read_results, results_format, write_results
from crossview.export.geojson import read_geojson, results_document, write_geojson
from crossview.export.records import (
    CameraInfo,
    ErrorEllipse,
    ImageResult,
    PoseUncertainty,
    Prior,
    ResultsError,
    ResultsReadError,
    append_jsonl,
    ellipse_from_covariance,
    pose_uncertainty,
    pose_uncertainty_in_frame,
    read_jsonl,
)
from crossview.export.shapes import DEFAULT_ELLIPSE_CONFIDENCE, DEFAULT_HEADING_LINE_M, confidence_scale

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_ELLIPSE_CONFIDENCE",
    "DEFAULT_HEADING_LINE_M",
    "CameraInfo",
    "ErrorEllipse",
    "ImageResult",
    "PoseUncertainty",
    "Prior",
    "ResultsError",
    "ResultsReadError",
    "append_jsonl",
    "confidence_scale",
    "ellipse_from_covariance",
    "pose_uncertainty",
    "pose_uncertainty_in_frame",
    "read_csv",
    "read_geojson",
    "read_jsonl",
    "read_results",
    "results_document",
    "results_format",
    "write_csv",
    "write_geojson",
    "write_results",
]

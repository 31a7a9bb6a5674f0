"""``ImageResult``: the outcome of locating one image, its uncertainty, and its JSONL sidecar line.

One ``ImageResult`` is one Feature of the GeoJSON written by ``crossview locate`` (DESIGN, "GeoJSON written by
locate"), one row of its CSV, and one line of the JSONL sidecar that ``locate`` appends to as images finish.
:meth:`ImageResult.to_dict` is the single serialised form shared by all three.

Convention:
    ``lat``/``lon`` are WGS84 degrees; ``heading_deg`` is clockwise from TRUE north in [0, 360).
    ``error_ellipse_m`` holds the 1-sigma ellipse of the horizontal position: ``semi_major``/``semi_minor`` are the
    standard deviations along its principal axes in ground metres (a 2-D Gaussian puts 39.3 % of its mass inside),
    ``azimuth_deg`` is the direction of the major axis, clockwise from TRUE north, in [0, 180).
    ``position_std_m`` is the root-mean-square horizontal position error, ``sqrt(trace(cov))`` =
    ``sqrt(semi_major**2 + semi_minor**2)`` (DRMS), comparable to a metre error against ground truth.
    Covariances come from the refiner in the metric map frame (x = east, y = north, GRID metres, heading
    clockwise from GRID north, radians): azimuths are turned to true north by adding the meridian convergence
    (``true = grid + convergence_deg``) and lengths to ground metres by dividing by the point scale factor.

Serialised precision (:meth:`ImageResult.to_dict`): latitudes and longitudes 7 decimals (about 1 cm),
metres and degrees 3 decimals, scores 6 decimals.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from crossview.errors import CrossviewError
from crossview.geometry.frames import LocalFrame

Status = Literal["ok", "failed"]
PriorSource = Literal["exif", "cli", "none"]
CameraModel = Literal["panorama", "pinhole"]

STATUSES: tuple[str, ...] = ("ok", "failed")
PRIOR_SOURCES: tuple[str, ...] = ("exif", "cli", "none")
CAMERA_MODELS: tuple[str, ...] = ("panorama", "pinhole")

LATLON_DECIMALS = 7
METRE_DECIMALS = 3
DEGREE_DECIMALS = 3
SCORE_DECIMALS = 6

# Symmetry and positive-semidefiniteness tolerance of covariances, relative to their largest entry.
_COVARIANCE_RTOL = 1e-9


class ResultsError(CrossviewError, ValueError):
    """A result record, covariance or results file is malformed (not crossview's, bad values, missing keys)."""


class ResultsReadError(CrossviewError, OSError):
    """A results (or truth) file could not be read or written."""


# ---- number helpers ----------------------------------------------------------------------------------------


def _optional_float(value: Any, name: str, *, minimum: float | None = None) -> float | None:
    """``None`` stays ``None``; anything else must be a finite number (>= ``minimum`` when given)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ResultsError(f"{name}={value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ResultsError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise ResultsError(f"{name}={value!r} is not finite")
    if minimum is not None and number < minimum:
        raise ResultsError(f"{name}={value!r} must be >= {minimum:g}")
    return number


def _wrap(value: float, period: float) -> float:
    """``value`` modulo ``period`` in [0, period) (never ``period`` itself, even after float rounding)."""
    wrapped = value % period
    return 0.0 if wrapped >= period else wrapped


def _round(value: float | None, decimals: int) -> float | None:
    return None if value is None else round(value, decimals)


def _round_wrapped(value: float | None, decimals: int, period: float) -> float | None:
    """Round, then wrap again: 359.9996 rounds to 360.0, which is 0.0 in [0, 360)."""
    return None if value is None else _wrap(round(value, decimals), period)


def _choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ResultsError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return str(value)


def _optional_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ResultsError(f"{name}={value!r} is not a string")
    return value


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ResultsError(f"{name}={value!r} is not an object")
    return value


# ---- value types -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorEllipse:
    """1-sigma horizontal position ellipse in ground metres.

    Attributes:
        semi_major_m: standard deviation along the major axis, metres (>= ``semi_minor_m``).
        semi_minor_m: standard deviation along the minor axis, metres (>= 0).
        azimuth_deg: direction of the major axis, degrees clockwise from TRUE north, in [0, 180).
    """

    semi_major_m: float
    semi_minor_m: float
    azimuth_deg: float

    def __post_init__(self) -> None:
        major = _optional_float(self.semi_major_m, "error_ellipse_m.semi_major", minimum=0.0)
        minor = _optional_float(self.semi_minor_m, "error_ellipse_m.semi_minor", minimum=0.0)
        azimuth = _optional_float(self.azimuth_deg, "error_ellipse_m.azimuth_deg")
        if major is None or minor is None or azimuth is None:
            raise ResultsError("error_ellipse_m needs semi_major, semi_minor and azimuth_deg")
        if minor > major:
            raise ResultsError(f"error_ellipse_m: semi_minor={minor!r} exceeds semi_major={major!r}")
        object.__setattr__(self, "semi_major_m", major)
        object.__setattr__(self, "semi_minor_m", minor)
        object.__setattr__(self, "azimuth_deg", _wrap(azimuth, 180.0))

    def to_dict(self) -> dict[str, float]:
        """``{"semi_major", "semi_minor", "azimuth_deg"}`` (DESIGN's keys), rounded to 3 decimals."""
        return {
            "semi_major": _round(self.semi_major_m, METRE_DECIMALS),
            "semi_minor": _round(self.semi_minor_m, METRE_DECIMALS),
            "azimuth_deg": _round_wrapped(self.azimuth_deg, DEGREE_DECIMALS, 180.0),
        }

    @classmethod
    def from_dict(cls, data: Any) -> ErrorEllipse:
        data = _mapping(data, "error_ellipse_m")
        missing = [key for key in ("semi_major", "semi_minor", "azimuth_deg") if key not in data]
        if missing:
            raise ResultsError(f"error_ellipse_m lacks {', '.join(missing)}")
        return cls(data["semi_major"], data["semi_minor"], data["azimuth_deg"])


@dataclass(frozen=True)
class Prior:
    """Where the search area came from.

    Attributes:
        source: ``exif`` (GPS in the image), ``cli`` (``--prior-*`` options) or ``none`` (the whole map).
        radius_m: search radius around the prior position, metres (None: unbounded / the whole map).
        lat, lon: prior position, WGS84 degrees (optional).
        heading_deg: prior heading, degrees clockwise from true north (optional).
    """

    source: str = "none"
    radius_m: float | None = None
    lat: float | None = None
    lon: float | None = None
    heading_deg: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", _choice(self.source, "prior.source", PRIOR_SOURCES))
        object.__setattr__(self, "radius_m", _optional_float(self.radius_m, "prior.radius_m", minimum=0.0))
        lat = _optional_float(self.lat, "prior.lat")
        lon = _optional_float(self.lon, "prior.lon")
        _check_latlon(lat, lon, "prior.")
        heading = _optional_float(self.heading_deg, "prior.heading_deg")
        object.__setattr__(self, "lat", lat)
        object.__setattr__(self, "lon", lon)
        object.__setattr__(self, "heading_deg", None if heading is None else _wrap(heading, 360.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "radius_m": _round(self.radius_m, METRE_DECIMALS),
            "lat": _round(self.lat, LATLON_DECIMALS),
            "lon": _round(self.lon, LATLON_DECIMALS),
            "heading_deg": _round_wrapped(self.heading_deg, DEGREE_DECIMALS, 360.0),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Prior:
        data = _mapping(data, "prior")
        return cls(
            source=data.get("source", "none"),
            radius_m=data.get("radius_m"),
            lat=data.get("lat"),
            lon=data.get("lon"),
            heading_deg=data.get("heading_deg"),
        )


@dataclass(frozen=True)
class CameraInfo:
    """The camera model used for an image.

    Attributes:
        model: ``panorama`` or ``pinhole``.
        hfov_deg: horizontal field of view, degrees (360 for panoramas; None when unknown).
        height_m: camera height above the ground used by the ground-plane geometry, metres.
    """

    model: str
    hfov_deg: float | None = None
    height_m: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", _choice(self.model, "camera.model", CAMERA_MODELS))
        object.__setattr__(self, "hfov_deg", _optional_float(self.hfov_deg, "camera.hfov_deg", minimum=0.0))
        object.__setattr__(self, "height_m", _optional_float(self.height_m, "camera.height_m", minimum=0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hfov_deg": _round(self.hfov_deg, DEGREE_DECIMALS),
            "height_m": _round(self.height_m, METRE_DECIMALS),
        }

    @classmethod
    def from_dict(cls, data: Any) -> CameraInfo:
        data = _mapping(data, "camera")
        if "model" not in data:
            raise ResultsError("camera lacks its model")
        return cls(model=data["model"], hfov_deg=data.get("hfov_deg"), height_m=data.get("height_m"))


def _check_latlon(lat: float | None, lon: float | None, prefix: str = "") -> None:
    if (lat is None) != (lon is None):
        raise ResultsError(f"{prefix}lat and {prefix}lon must be given together (got lat={lat!r}, lon={lon!r})")
    if lat is not None and not -90.0 <= lat <= 90.0:
        raise ResultsError(f"{prefix}lat={lat!r} is outside [-90, 90] degrees")
    if lon is not None and not -180.0 <= lon <= 180.0:
        raise ResultsError(f"{prefix}lon={lon!r} is outside [-180, 180] degrees")


# ---- the record --------------------------------------------------------------------------------------------

RESULT_KEYS: tuple[str, ...] = (
    "image",
    "status",
    "lat",
    "lon",
    "heading_deg",
    "position_std_m",
    "error_ellipse_m",
    "heading_std_deg",
    "score",
    "prior",
    "camera",
    "model",
    "map",
    "error",
)
"""Keys of :meth:`ImageResult.to_dict`, in order (the GeoJSON properties of DESIGN)."""


@dataclass(frozen=True)
class ImageResult:
    """The result of locating one image (one GeoJSON Feature, CSV row, or JSONL sidecar line).

    Attributes:
        image: the image's path as given on the command line.
        status: ``ok`` (located) or ``failed`` (see ``error``).
        lat, lon: estimated position, WGS84 degrees (required when ``ok``).
        heading_deg: estimated heading, degrees clockwise from true north in [0, 360) (required when ``ok``).
        position_std_m: RMS horizontal position error ``sqrt(trace(cov))``, ground metres.
        error_ellipse_m: 1-sigma position ellipse (see :class:`ErrorEllipse`).
        heading_std_deg: heading standard deviation, degrees.
        score: matching score of the pose (higher is better; model-specific scale).
        prior: where the search area came from.
        camera: camera model, field of view and height used.
        model: model name or checkpoint used.
        map: map (raster, index or source) searched.
        error: what went wrong, for ``failed``.
    """

    image: str
    status: str
    lat: float | None = None
    lon: float | None = None
    heading_deg: float | None = None
    position_std_m: float | None = None
    error_ellipse_m: ErrorEllipse | None = None
    heading_std_deg: float | None = None
    score: float | None = None
    prior: Prior = field(default_factory=Prior)
    camera: CameraInfo | None = None
    model: str | None = None
    map: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.image, str) or not self.image:
            raise ResultsError(f"image={self.image!r} must be a non-empty path string")
        set_ = object.__setattr__
        set_(self, "status", _choice(self.status, f"{self.image}: status", STATUSES))
        for name in ("lat", "lon", "heading_deg", "score"):
            set_(self, name, _optional_float(getattr(self, name), f"{self.image}: {name}"))
        for name in ("position_std_m", "heading_std_deg"):
            set_(self, name, _optional_float(getattr(self, name), f"{self.image}: {name}", minimum=0.0))
        _check_latlon(self.lat, self.lon, f"{self.image}: ")
        if self.heading_deg is not None:
            set_(self, "heading_deg", _wrap(self.heading_deg, 360.0))
        for name, kind in (("error_ellipse_m", ErrorEllipse), ("prior", Prior), ("camera", CameraInfo)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ResultsError(f"{self.image}: {name} must be a {kind.__name__}, got {value!r}")
        if self.prior is None:
            set_(self, "prior", Prior())
        for name in ("model", "map", "error"):
            _optional_text(getattr(self, name), f"{self.image}: {name}")
        if self.status == "ok" and (self.lat is None or self.heading_deg is None):
            raise ResultsError(f"{self.image}: status 'ok' needs lat, lon and heading_deg")
        if self.status == "failed" and not self.error:
            raise ResultsError(f"{self.image}: status 'failed' needs an error message")

    @property
    def ok(self) -> bool:
        """True when the image was located."""
        return self.status == "ok"

    @classmethod
    def failed(cls, image: str, error: str, **fields_: Any) -> ImageResult:
        """A ``failed`` result for ``image`` with message ``error`` (other fields by name: prior, camera, ...)."""
        return cls(image=image, status="failed", error=error, **fields_)

    def to_dict(self) -> dict[str, Any]:
        """The serialised record: :data:`RESULT_KEYS` in order, absent values as None, numbers rounded.

        Nested values: ``error_ellipse_m`` {semi_major, semi_minor, azimuth_deg}, ``prior`` {source, radius_m,
        lat, lon, heading_deg}, ``camera`` {model, hfov_deg, height_m}.
        """
        return {
            "image": self.image,
            "status": self.status,
            "lat": _round(self.lat, LATLON_DECIMALS),
            "lon": _round(self.lon, LATLON_DECIMALS),
            "heading_deg": _round_wrapped(self.heading_deg, DEGREE_DECIMALS, 360.0),
            "position_std_m": _round(self.position_std_m, METRE_DECIMALS),
            "error_ellipse_m": None if self.error_ellipse_m is None else self.error_ellipse_m.to_dict(),
            "heading_std_deg": _round(self.heading_std_deg, DEGREE_DECIMALS),
            "score": _round(self.score, SCORE_DECIMALS),
            "prior": self.prior.to_dict(),
            "camera": None if self.camera is None else self.camera.to_dict(),
            "model": self.model,
            "map": self.map,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ImageResult:
        """Inverse of :meth:`to_dict`; unknown keys (e.g. GeoJSON's ``kind``) are ignored.

        Raises:
            ResultsError: a required key is missing or a value is invalid.
        """
        data = _mapping(data, "result")
        for key in ("image", "status"):
            if key not in data:
                raise ResultsError(f"result record lacks {key!r}: {_preview(data)}")
        ellipse, camera = data.get("error_ellipse_m"), data.get("camera")
        prior = data.get("prior")
        known = {f.name for f in fields(cls)} - {"error_ellipse_m", "prior", "camera"}
        return cls(
            **{key: value for key, value in data.items() if key in known},
            error_ellipse_m=None if ellipse is None else ErrorEllipse.from_dict(ellipse),
            prior=Prior() if prior is None else Prior.from_dict(prior),
            camera=None if camera is None else CameraInfo.from_dict(camera),
        )


def _preview(data: Any, limit: int = 120) -> str:
    text = json.dumps(data, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- uncertainty from covariances --------------------------------------------------------------------------


class PoseUncertainty(NamedTuple):
    """Scalar summaries of a pose covariance, ready for :class:`ImageResult` (``**u.as_fields()``)."""

    position_std_m: float
    error_ellipse_m: ErrorEllipse
    heading_std_deg: float | None

    def as_fields(self) -> dict[str, Any]:
        return {
            "position_std_m": self.position_std_m,
            "error_ellipse_m": self.error_ellipse_m,
            "heading_std_deg": self.heading_std_deg,
        }


def _check_covariance(cov: npt.NDArray[np.float64], name: str) -> None:
    if not np.isfinite(cov).all():
        raise ResultsError(f"{name} has non-finite entries: {cov.tolist()}")
    scale = np.maximum(np.abs(cov).max(axis=(-2, -1)), np.finfo(np.float64).tiny)
    asymmetry = np.abs(cov - np.swapaxes(cov, -1, -2)).max(axis=(-2, -1))
    if (asymmetry > _COVARIANCE_RTOL * scale).any():
        raise ResultsError(f"{name} is not symmetric: {cov.tolist()}")
    if (np.diagonal(cov, axis1=-2, axis2=-1) < 0).any():
        raise ResultsError(f"{name} has negative variances: {cov.tolist()}")


def ellipse_from_covariance(
    cov_xy_m2: npt.ArrayLike, *, convergence_deg: npt.ArrayLike = 0.0, scale_factor: npt.ArrayLike = 1.0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Principal axes of position covariances given in a metric map frame.

    Convention:
        ``cov_xy_m2`` is over (x = east, y = north) of the map grid, in grid metres squared. The major axis's grid
        azimuth (clockwise from grid north) plus ``convergence_deg`` (clockwise from true north to grid north,
        ``LocalFrame.convergence_deg``) is its true azimuth; grid lengths divided by ``scale_factor``
        (``LocalFrame.scale_factor``) are ground lengths. A circular covariance has azimuth 0.

    Args:
        cov_xy_m2: (..., 2, 2) symmetric positive semi-definite covariances, m^2.
        convergence_deg: (...) meridian convergence at the points, degrees.
        scale_factor: (...) point scale factors of the map projection at the points.

    Returns:
        (semi_major_m, semi_minor_m, azimuth_deg), each (...): 1-sigma semi-axes in ground metres and the major
        axis's azimuth, degrees clockwise from TRUE north in [0, 180).

    Raises:
        ResultsError: wrong shape, non-finite, asymmetric or indefinite covariance.
    """
    cov = np.asarray(cov_xy_m2, dtype=np.float64)
    if cov.ndim < 2 or cov.shape[-2:] != (2, 2):
        raise ResultsError(f"a position covariance must be (..., 2, 2), got shape {cov.shape}")
    _check_covariance(cov, "position covariance")
    var_x, var_y, cov_xy = cov[..., 0, 0], cov[..., 1, 1], 0.5 * (cov[..., 0, 1] + cov[..., 1, 0])
    mean = 0.5 * (var_x + var_y)
    radius = np.hypot(0.5 * (var_x - var_y), cov_xy)
    if ((mean - radius) < -_COVARIANCE_RTOL * np.maximum(mean, np.finfo(np.float64).tiny)).any():
        raise ResultsError(f"position covariance is not positive semi-definite: {cov.tolist()}")
    # Closed-form eigen-decomposition of a symmetric 2x2 matrix: the major axis makes the angle
    # 0.5 * atan2(2 cov_xy, var_x - var_y) with +x (anticlockwise), i.e. grid azimuth 90 deg minus that.
    angle_from_east_deg = 0.5 * np.degrees(np.arctan2(2.0 * cov_xy, var_x - var_y))
    circular = radius <= _COVARIANCE_RTOL * np.maximum(mean, np.finfo(np.float64).tiny)
    grid_azimuth_deg = np.where(circular, np.zeros_like(mean), 90.0 - angle_from_east_deg)
    scale = np.asarray(scale_factor, dtype=np.float64)
    convergence = np.asarray(convergence_deg, dtype=np.float64)
    if not (np.isfinite(scale).all() and (scale > 0).all() and np.isfinite(convergence).all()):
        raise ResultsError(
            f"scale_factor={scale_factor!r} and convergence_deg={convergence_deg!r} must be finite, k > 0"
        )
    azimuth = np.where(circular, 0.0, np.mod(grid_azimuth_deg + convergence, 180.0))
    azimuth = np.where(azimuth >= 180.0, 0.0, azimuth)
    semi_major = np.sqrt(mean + radius) / scale
    semi_minor = np.sqrt(np.maximum(mean - radius, 0.0)) / scale
    return semi_major, semi_minor, azimuth


def pose_uncertainty(
    covariance: npt.ArrayLike,
    *,
    convergence_deg: float = 0.0,
    scale_factor: float = 1.0,
    heading_var_rad2: float | None = None,
) -> PoseUncertainty:
    """Position std, 1-sigma ellipse and heading std of one pose covariance in the map frame.

    Args:
        covariance: (2, 2) over (x_m, y_m) in grid m^2, or (3, 3) over (x_m, y_m, heading_rad) as the refiner
            estimates them (heading clockwise from grid north: the convergence is a constant offset, so the
            heading variance is the same about true north).
        convergence_deg: meridian convergence at the pose, degrees (``LocalFrame.convergence_deg``).
        scale_factor: the projection's point scale factor at the pose (``LocalFrame.scale_factor``).
        heading_var_rad2: heading variance, rad^2, with a (2, 2) ``covariance`` (None: heading std unknown).

    Returns:
        ``PoseUncertainty(position_std_m, error_ellipse_m, heading_std_deg)``; ``position_std_m`` is
        ``sqrt(semi_major^2 + semi_minor^2)`` (DRMS, ground metres), ``heading_std_deg`` ``degrees(sqrt(var))``.

    Raises:
        ResultsError: wrong shape, non-finite, asymmetric or indefinite covariance, or a heading variance twice.
    """
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape not in ((2, 2), (3, 3)):
        raise ResultsError(f"a pose covariance must be (2, 2) or (3, 3), got shape {cov.shape}")
    _check_covariance(cov, "pose covariance")
    if cov.shape == (3, 3):
        if heading_var_rad2 is not None:
            raise ResultsError("heading_var_rad2 given together with a (3, 3) covariance that holds it")
        heading_var_rad2 = float(cov[2, 2])
    major, minor, azimuth = ellipse_from_covariance(
        cov[:2, :2], convergence_deg=convergence_deg, scale_factor=scale_factor
    )
    ellipse = ErrorEllipse(float(major), float(minor), float(azimuth))
    heading_std = _optional_float(heading_var_rad2, "heading_var_rad2", minimum=0.0)
    return PoseUncertainty(
        position_std_m=math.hypot(ellipse.semi_major_m, ellipse.semi_minor_m),
        error_ellipse_m=ellipse,
        heading_std_deg=None if heading_std is None else math.degrees(math.sqrt(heading_std)),
    )


def pose_uncertainty_in_frame(
    covariance: npt.ArrayLike,
    frame: LocalFrame,
    *,
    lat: float,
    lon: float,
    heading_var_rad2: float | None = None,
) -> PoseUncertainty:
    """:func:`pose_uncertainty` with the convergence and scale factor of ``frame`` at (``lat``, ``lon``)."""
    return pose_uncertainty(
        covariance,
        convergence_deg=float(frame.convergence_deg(lat=lat, lon=lon)),
        scale_factor=float(frame.scale_factor(lat=lat, lon=lon)),
        heading_var_rad2=heading_var_rad2,
    )


# ---- JSONL sidecar -----------------------------------------------------------------------------------------


def result_to_json_line(result: ImageResult) -> str:
    """One sidecar line: ``result.to_dict()`` as compact JSON with a trailing newline."""
    return json.dumps(result.to_dict(), ensure_ascii=False, allow_nan=False) + "\n"


def result_from_json_line(line: str) -> ImageResult:
    """Inverse of :func:`result_to_json_line` (ResultsError on bad JSON or a bad record)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise ResultsError(f"not a JSON object: {error}") from None
    return ImageResult.from_dict(data)


def append_jsonl(path: str | os.PathLike, result: ImageResult) -> None:
    """Append ``result`` to a JSONL sidecar as one line, flushed to disk before returning.

    The sidecar is append-only (``locate --resume`` reads it back). A line cut short by a crash is the only
    possible damage; it is dropped here before appending, so it never ends up in the middle of the file.

    Raises:
        ResultsReadError: the file cannot be written.
    """
    path = Path(path)
    line = result_to_json_line(result).encode("utf-8")
    try:
        _drop_partial_tail(path)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        with os.fdopen(descriptor, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise ResultsReadError(f"cannot append to {path}: {error.strerror or error}") from None


def _drop_partial_tail(path: Path) -> None:
    """Truncate a file that does not end with a newline back to its last complete line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        data = handle.read()
        handle.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: str | os.PathLike) -> list[ImageResult]:
    """Read a JSONL sidecar: one :class:`ImageResult` per complete line, in file order.

    A last line without its newline (an append cut short) is ignored; any other bad line is an error.

    Raises:
        ResultsReadError: the file cannot be read.
        ResultsError: a complete line is not a valid record (the message names the line number).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsReadError(f"cannot read results {path}: {getattr(error, 'strerror', None) or error}") from None
    complete = text.split("\n")[:-1]  # drops '' after the final newline, or a line cut short
    results = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            results.append(result_from_json_line(line))
        except ResultsError as error:
            raise ResultsError(f"{path}, line {number}: {error}") from None
    return results

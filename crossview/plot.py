"""``crossview plot``: a figure of located images over their map, with uncertainty and (optionally) ground truth.

Each located image is an arrow along its heading from its estimated position, inside its 95 % uncertainty
ellipse; with ``--truth`` the true positions and a line from each estimate to its truth are added. Failed images
are skipped. Python entry points: :func:`plot_results` (files in, figure file out) and :func:`render_figure`.

Convention:
    The figure is drawn in the map raster's own CRS (no resampling of the map). Everything geographic is placed
    with that CRS's local ground-to-grid Jacobian (``crossview.maps.raster.ground_to_crs_jacobian``): a true
    heading ψ points along ``J @ (sin ψ, cos ψ)`` on the plot, which turns it by the meridian convergence in a
    UTM map and leaves it alone in Web Mercator; the north arrow is ``J @ (0, 1)``; the scale bar is in GROUND
    metres (``J`` holds the projection's scale factor: 1/cos(lat) in Web Mercator, k in UTM), and the axes get
    the aspect ratio that gives both directions the same ground scale. Ellipses are the geodesic rings of
    :mod:`crossview.export.shapes` projected vertex by vertex.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt
import pyproj

from crossview.cli import Command
from crossview.errors import ConfigError
from crossview.export.csvfile import read_table
from crossview.export.formats import read_results
from crossview.export.records import ImageResult, ResultsError
from crossview.export.shapes import DEFAULT_ELLIPSE_CONFIDENCE, confidence_scale, ellipse_ring_lonlat
from crossview.fsio import atomic_write_bytes
from crossview.geometry.frames import geodesic_distance_m
from crossview.maps.raster import GeoRaster, MapError, ground_to_crs_jacobian

DEFAULT_DPI = 150
FIGURE_WIDTH_IN = 8.0
ARROW_FRACTION = 0.07  # pose arrows: this fraction of the view's ground width
VIEW_PAD_FRACTION = 0.12  # margin around what is drawn, as a fraction of its extent
MIN_VIEW_M = 40.0  # smallest ground width/height of the view
MAX_DISPLAY_PX = 2048  # the map background is decimated to at most this many pixels on a side
OUT_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}

ESTIMATE_COLOR = "#e41a1c"
TRUTH_COLOR = "#00bfff"
ERROR_COLOR = "#ffff33"


# ---- ground truth ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TruthPose:
    """A true pose from a ``poses.csv`` (``crossview synth``): image path relative to the file's folder."""

    image: str
    lat: float
    lon: float
    heading_deg: float | None = None


def read_truth(path: str | os.PathLike) -> list[TruthPose]:
    """Read true poses: a CSV with columns ``image``, ``lat``, ``lon`` and optionally ``heading_deg``.

    Raises:
        ResultsReadError: missing or unreadable file.
        ResultsError: a required column is missing or a value is not a number in range.
    """
    path = Path(path)
    reader = read_table(
        path, ("image", "lat", "lon"), what="truth", missing_message="{path} is not a poses file: no column {missing}"
    )
    poses = []
    for row in reader:
        try:
            lat, lon = float(row["lat"]), float(row["lon"])
            heading = float(row["heading_deg"]) if row.get("heading_deg") else None
        except (TypeError, ValueError):
            raise ResultsError(f"{path}, line {reader.line_num}: lat/lon/heading_deg are not numbers") from None
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ResultsError(f"{path}, line {reader.line_num}: lat={lat!r}, lon={lon!r} out of range")
        poses.append(TruthPose(image=row["image"], lat=lat, lon=lon, heading_deg=heading))
    return poses


def _normalised(path_text: str) -> PurePosixPath:
    return PurePosixPath(path_text.replace("\\", "/"))


def match_truth(
    results: Sequence[ImageResult], truth: Sequence[TruthPose], *, truth_dir: str | os.PathLike
) -> list[TruthPose | None]:
    """The true pose of each result, matched by image path (None where there is none).

    A result's ``image`` (a path as given to ``locate``) matches a truth ``image`` (relative to ``truth_dir``,
    the folder of poses.csv) when, in this order: the two are the same path; the result's path, made absolute,
    lies at that relative path inside ``truth_dir``; the truth path is a trailing part of the result's path
    (``.../Bergen/panorama/x.jpg`` ends with ``panorama/x.jpg``) for exactly one truth row; or the file names
    are equal for exactly one truth row.

    Returns:
        One entry per result, in order.
    """
    by_path = {_normalised(pose.image): pose for pose in truth}
    by_name: dict[str, list[TruthPose]] = defaultdict(list)
    for pose in truth:
        by_name[_normalised(pose.image).name].append(pose)
    roots = {Path(os.path.abspath(truth_dir)), Path(truth_dir).resolve()}
    return [_match_one(result.image, by_path, by_name, roots) for result in results]


def _match_one(
    image: str,
    by_path: dict[PurePosixPath, TruthPose],
    by_name: dict[str, list[TruthPose]],
    roots: set[Path],
) -> TruthPose | None:
    path = _normalised(image)
    if path in by_path:
        return by_path[path]
    for absolute in {Path(os.path.abspath(image)), Path(image).resolve()}:
        for root in roots:
            if absolute.is_relative_to(root):
                relative = PurePosixPath(absolute.relative_to(root).as_posix())
                if relative in by_path:
                    return by_path[relative]
    suffix_matches = [pose for key, pose in by_path.items() if path.parts[-len(key.parts) :] == key.parts]
    if len(suffix_matches) == 1:
        return suffix_matches[0]
    named = by_name.get(path.name, [])
    return named[0] if len(named) == 1 else None


# ---- geometry in the map's CRS -----------------------------------------------------------------------------


class MapGeometry:
    """Places WGS84 positions, true headings and ground lengths in a map CRS (see the module's Convention)."""

    def __init__(self, crs: Any) -> None:
        self.crs = crs
        self._to_map = pyproj.Transformer.from_crs(
            pyproj.CRS.from_epsg(4326), pyproj.CRS.from_wkt(crs.to_wkt()), always_xy=True
        )

    def to_map(self, *, lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 degrees -> (x, y) in the map CRS (non-finite where the CRS cannot hold the point)."""
        x, y = self._to_map.transform(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def jacobian(self, x: npt.ArrayLike, y: npt.ArrayLike) -> np.ndarray:
        """(N, 2, 2) ground (east_m, north_m) -> map (dx, dy) at map points."""
        return ground_to_crs_jacobian(self.crs, x, y)

    def heading_directions(self, x: npt.ArrayLike, y: npt.ArrayLike, heading_deg: npt.ArrayLike) -> np.ndarray:
        """(N, 2) map-CRS vectors of one ground metre along TRUE headings (degrees clockwise from true north)."""
        heading = np.radians(np.atleast_1d(np.asarray(heading_deg, dtype=np.float64)))
        ground = np.stack([np.sin(heading), np.cos(heading)], axis=-1)
        return np.einsum("nij,nj->ni", self.jacobian(x, y), ground)

    def units_per_ground_metre(self, x: float, y: float) -> tuple[float, float]:
        """Map units per ground metre along the map's x axis and along its y axis, at one map point."""
        inverse = np.linalg.inv(self.jacobian([x], [y])[0])  # map offsets -> ground metres
        return 1.0 / float(np.hypot(*inverse[:, 0])), 1.0 / float(np.hypot(*inverse[:, 1]))


# ---- figure ------------------------------------------------------------------------------------------------


@dataclass
class _Drawn:
    """Everything placed on the figure, in map coordinates."""

    positions: np.ndarray  # (N, 2) estimated positions
    tips: np.ndarray  # (N, 2) arrow ends
    rings: list[np.ndarray]  # (V, 2) ellipse rings
    truth: np.ndarray  # (M, 2) true positions of matched results
    truth_tips: np.ndarray  # (M, 2) true heading arrow ends (NaN without a heading)
    truth_of: np.ndarray  # (M,) index into positions


@dataclass(frozen=True)
class PlotSummary:
    """What :func:`plot_results` drew."""

    out: Path
    images: int
    located: int
    drawn: int
    matched: int
    median_error_m: float | None


def _check_map(raster: GeoRaster, path: str) -> None:
    if raster.crs is None:
        raise MapError(f"--map {path}: the raster has no CRS (it is not georeferenced)")
    if raster.transform.b != 0 or raster.transform.d != 0:
        raise MapError(f"--map {path}: rotated rasters are not supported (expected a north-up grid)")


def read_map(path: str | os.PathLike) -> GeoRaster:
    """Read a georeferenced, north-up map raster (MapError when it has no CRS or is rotated)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as source:
                has_crs = source.crs is not None
    except RasterioError:
        has_crs = True  # GeoRaster.read reports the unreadable file
    if not has_crs:
        raise MapError(f"--map {path}: the raster has no CRS (it is not georeferenced)")
    raster = GeoRaster.read(path)
    _check_map(raster, str(path))
    return raster


def _drawn_items(
    results: Sequence[ImageResult],
    truth: Sequence[TruthPose | None],
    geometry: MapGeometry,
    arrow_m: float,
    confidence: float,
) -> _Drawn:
    located = [i for i, result in enumerate(results) if result.ok]
    lat = np.array([results[i].lat for i in located], dtype=np.float64)
    lon = np.array([results[i].lon for i in located], dtype=np.float64)
    x, y = geometry.to_map(lat=lat, lon=lon)
    inside = np.isfinite(x) & np.isfinite(y)
    located = [i for i, ok in zip(located, inside, strict=True) if ok]
    positions = np.stack([x[inside], y[inside]], axis=-1).reshape(-1, 2)
    headings = np.array([results[i].heading_deg for i in located], dtype=np.float64)
    tips = positions + arrow_m * _directions(geometry, positions, headings)
    rings = [_ring(results[i], geometry, confidence) for i in located if results[i].error_ellipse_m is not None]
    truth_rows = [(k, truth[i]) for k, i in enumerate(located) if truth and truth[i] is not None]
    truth_xy, truth_tips = np.zeros((0, 2)), np.zeros((0, 2))
    if truth_rows:
        tx, ty = geometry.to_map(lat=[t.lat for _, t in truth_rows], lon=[t.lon for _, t in truth_rows])
        truth_xy = np.stack([tx, ty], axis=-1)
        truth_headings = np.array([np.nan if t.heading_deg is None else t.heading_deg for _, t in truth_rows])
        truth_tips = truth_xy + arrow_m * _directions(geometry, truth_xy, np.nan_to_num(truth_headings))
        truth_tips[np.isnan(truth_headings)] = np.nan
    return _Drawn(
        positions=positions,
        tips=tips,
        rings=[ring for ring in rings if np.isfinite(ring).all()],
        truth=truth_xy,
        truth_tips=truth_tips,
        truth_of=np.array([k for k, _ in truth_rows], dtype=int),
    )


def _directions(geometry: MapGeometry, xy: np.ndarray, heading_deg: np.ndarray) -> np.ndarray:
    if len(xy) == 0:
        return np.zeros((0, 2))
    return geometry.heading_directions(xy[:, 0], xy[:, 1], heading_deg)


def _ring(result: ImageResult, geometry: MapGeometry, confidence: float) -> np.ndarray:
    scale = confidence_scale(confidence)
    ellipse = result.error_ellipse_m
    ring = ellipse_ring_lonlat(
        lat=result.lat,
        lon=result.lon,
        semi_major_m=scale * ellipse.semi_major_m,
        semi_minor_m=scale * ellipse.semi_minor_m,
        azimuth_deg=ellipse.azimuth_deg,
    )
    x, y = geometry.to_map(lat=ring[:, 1], lon=ring[:, 0])
    return np.stack([x, y], axis=-1)


def _view(drawn: _Drawn, raster: GeoRaster, geometry: MapGeometry, full_map: bool) -> tuple[float, ...]:
    """(left, bottom, right, top) in map units: what is drawn plus a margin (at least MIN_VIEW_M of ground),
    joined with the map's bounds when ``full_map`` or when nothing is drawn."""
    points = np.concatenate(
        [np.zeros((0, 2)), drawn.positions, drawn.tips, *drawn.rings, drawn.truth, drawn.truth_tips], axis=0
    )
    points = points[np.isfinite(points).all(axis=1)]
    boxes = []
    if len(points):
        (left, bottom), (right, top) = points.min(axis=0), points.max(axis=0)
        center_x, center_y = 0.5 * (left + right), 0.5 * (bottom + top)
        per_m_x, per_m_y = geometry.units_per_ground_metre(center_x, center_y)
        half_w = max(0.5 * (right - left) * (1 + 2 * VIEW_PAD_FRACTION), 0.5 * MIN_VIEW_M * per_m_x)
        half_h = max(0.5 * (top - bottom) * (1 + 2 * VIEW_PAD_FRACTION), 0.5 * MIN_VIEW_M * per_m_y)
        boxes.append((center_x - half_w, center_y - half_h, center_x + half_w, center_y + half_h))
    if full_map or not boxes:
        boxes.append(tuple(raster.bounds()))
    corners = np.array(boxes, dtype=np.float64)
    return (*corners[:, :2].min(axis=0).tolist(), *corners[:, 2:].max(axis=0).tolist())


def _display_rgba(bands: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(C, h, w) map bands -> (h, w, 4) float RGBA in [0, 1]: RGB from the first three bands (or grey from the
    first), 8-bit data as is, other data stretched between its 2nd and 98th percentiles; invalid pixels clear."""
    picked = bands[:3] if bands.shape[0] >= 3 else np.repeat(bands[:1], 3, axis=0)
    values = picked.astype(np.float64)
    if bands.dtype == np.uint8:
        values = values / 255.0
    else:
        sample = values[:, valid] if valid.any() else values.reshape(3, -1)
        low, high = np.percentile(sample, [2, 98]) if sample.size else (0.0, 1.0)
        values = (values - low) / max(high - low, 1e-12)
    rgba = np.concatenate([np.clip(values, 0.0, 1.0), valid[None].astype(np.float64)], axis=0)
    return np.moveaxis(rgba, 0, -1)


def _background(raster: GeoRaster, view: tuple[float, ...]) -> tuple[np.ndarray, tuple[float, ...]] | None:
    """The map pixels under ``view`` (decimated to MAX_DISPLAY_PX) as RGBA and their extent (l, r, b, t)."""
    left, bottom, right, top = view
    cols, rows = raster.world_to_pixel(np.array([left, right]), np.array([top, bottom]))
    col0, col1 = (int(np.clip(v, 0, raster.width)) for v in (math.floor(cols.min()), math.ceil(cols.max())))
    row0, row1 = (int(np.clip(v, 0, raster.height)) for v in (math.floor(rows.min()), math.ceil(rows.max())))
    if col1 <= col0 or row1 <= row0:
        return None
    step = max(1, math.ceil(max(col1 - col0, row1 - row0) / MAX_DISPLAY_PX))
    bands = raster.array[:, row0:row1:step, col0:col1:step]
    valid = raster.valid_mask[row0:row1:step, col0:col1:step]
    xs, ys = raster.pixel_to_world(
        np.array([col0, col0 + bands.shape[2] * step]), np.array([row0, row0 + bands.shape[1] * step])
    )
    return _display_rgba(bands, valid), (float(xs[0]), float(xs[1]), float(ys[1]), float(ys[0]))


def _nice_length_m(target_m: float) -> float:
    """The largest of 1, 2, 5 x 10^n metres not above ``target_m``."""
    power = 10.0 ** math.floor(math.log10(target_m))
    return next((m * power for m in (5.0, 2.0) if m * power <= target_m), power)


def _scale_bar(ax: Any, view: tuple[float, ...], geometry: MapGeometry) -> float:
    """Draw a ground-metre scale bar in the lower left; returns its length in metres."""
    left, bottom, right, top = view
    per_m_x, _ = geometry.units_per_ground_metre(0.5 * (left + right), 0.5 * (bottom + top))
    length_m = _nice_length_m(0.25 * (right - left) / per_m_x)
    x0, y0 = left + 0.05 * (right - left), bottom + 0.05 * (top - bottom)
    x1 = x0 + length_m * per_m_x
    for width, color in ((6, "black"), (3, "white")):
        ax.plot([x0, x1], [y0, y0], color=color, linewidth=width, solid_capstyle="butt", zorder=6)
    label = f"{length_m:g} m" if length_m < 1000 else f"{length_m / 1000:g} km"
    ax.text(0.5 * (x0 + x1), y0 + 0.015 * (top - bottom), label, ha="center", va="bottom", zorder=6, **_halo())
    return length_m


def _north_arrow(ax: Any, view: tuple[float, ...], geometry: MapGeometry) -> np.ndarray:
    """Draw a true-north arrow in the upper right; returns its map direction (unit vector)."""
    left, bottom, right, top = view
    x0, y0 = right - 0.07 * (right - left), top - 0.16 * (top - bottom)
    north = geometry.heading_directions([x0], [y0], [0.0])[0]
    north = north / np.hypot(*north)
    tip = np.array([x0, y0]) + 0.08 * (right - left) * north
    arrow = {"arrowstyle": "-|>", "color": "black", "lw": 2.0, "mutation_scale": 16, "shrinkA": 0, "shrinkB": 0}
    ax.annotate("", xy=tuple(tip), xytext=(x0, y0), arrowprops=arrow, zorder=6)
    ax.text(*tip, "N", ha="center", va="bottom", fontweight="bold", zorder=6, **_halo())
    return north


def _halo() -> dict[str, Any]:
    from matplotlib import patheffects

    return {"color": "black", "path_effects": [patheffects.withStroke(linewidth=3, foreground="white")]}


def render_figure(
    results: Sequence[ImageResult],
    raster: GeoRaster,
    *,
    truth: Sequence[TruthPose | None] | None = None,
    dpi: int = DEFAULT_DPI,
    full_map: bool = False,
    confidence: float = DEFAULT_ELLIPSE_CONFIDENCE,
    title: str | None = None,
) -> Any:
    """Draw ``results`` over ``raster`` (see the module docstring) on a new Agg figure.

    Args:
        results: located and failed images (failed ones are skipped).
        raster: the map, in any CRS (drawn in it).
        truth: one true pose (or None) per result, e.g. from :func:`match_truth`.
        dpi: figure resolution.
        full_map: show the whole map rather than the area around the poses.
        confidence: probability inside the drawn ellipses.
        title: figure title (default: counts, and the median error with truth).

    Returns:
        A ``matplotlib.figure.Figure`` with an Agg canvas (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_map(raster, "map")
    geometry = MapGeometry(raster.crs)
    # the arrows' length follows the view, which in turn must hold the arrows: size them on the positions first
    rough = _view(_drawn_items(results, [], geometry, 0.0, confidence), raster, geometry, full_map)
    per_m_x, per_m_y = geometry.units_per_ground_metre(0.5 * (rough[0] + rough[2]), 0.5 * (rough[1] + rough[3]))
    arrow_m = ARROW_FRACTION * (rough[2] - rough[0]) / per_m_x
    drawn = _drawn_items(results, truth or [], geometry, arrow_m, confidence)
    view = _view(drawn, raster, geometry, full_map)
    left, bottom, right, top = view
    ground_aspect = ((top - bottom) / per_m_y) / ((right - left) / per_m_x)
    height_in = float(np.clip(FIGURE_WIDTH_IN * ground_aspect, 3.0, 14.0)) + 0.8  # + title and caption
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.set_facecolor("#d9d9d9")  # where the map has no pixels
    background = _background(raster, view)
    if background is not None:
        ax.imshow(background[0], extent=background[1], interpolation="antialiased", zorder=0)
    _draw_poses(ax, drawn)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect(per_m_x / per_m_y)  # the same ground scale along both axes
    ax.set_xticks([])
    ax.set_yticks([])
    _scale_bar(ax, view, geometry)
    _north_arrow(ax, view, geometry)
    _legend(ax, with_truth=len(drawn.truth) > 0, confidence=confidence)
    ax.set_title(title if title is not None else _default_title(results, truth or []), fontsize=10)
    crs_name = raster.crs.to_string() or "custom CRS"
    ax.set_xlabel(f"map CRS {crs_name}; ellipses: {confidence:.0%} confidence", fontsize=8)
    return figure


def _draw_poses(ax: Any, drawn: _Drawn) -> None:
    """Ellipses, error lines, true poses, then the estimates on top."""
    from matplotlib.patches import Polygon

    for ring in drawn.rings:
        patch = Polygon(ring, closed=True, facecolor=ESTIMATE_COLOR + "33", edgecolor=ESTIMATE_COLOR, lw=1.2)
        ax.add_patch(patch).set_zorder(2)
    for k in range(len(drawn.truth)):
        start = drawn.positions[drawn.truth_of[k]]
        ax.plot(*np.stack([start, drawn.truth[k]]).T, color=ERROR_COLOR, lw=1.5, zorder=3)
        if np.isfinite(drawn.truth_tips[k]).all():
            _arrow(ax, drawn.truth[k], drawn.truth_tips[k], TRUTH_COLOR, 1.4)
    if len(drawn.truth):
        ax.scatter(*drawn.truth.T, s=30, color=TRUTH_COLOR, edgecolors="black", linewidths=0.6, zorder=4)
    for start, tip in zip(drawn.positions, drawn.tips, strict=True):
        _arrow(ax, start, tip, ESTIMATE_COLOR, 2.0)
    if len(drawn.positions):
        ax.scatter(*drawn.positions.T, s=22, color=ESTIMATE_COLOR, edgecolors="white", linewidths=0.6, zorder=5)


def _legend(ax: Any, *, with_truth: bool, confidence: float) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=ESTIMATE_COLOR, marker="o", lw=2, label="estimate and heading"),
        Line2D([], [], color=ESTIMATE_COLOR, lw=1.2, label=f"{confidence:.0%} uncertainty ellipse"),
    ]
    if with_truth:
        handles += [
            Line2D([], [], color=TRUTH_COLOR, marker="o", markeredgecolor="black", lw=1.4, label="truth"),
            Line2D([], [], color=ERROR_COLOR, lw=1.5, label="error"),
        ]
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.85)


def _arrow(ax: Any, start: np.ndarray, tip: np.ndarray, color: str, width: float) -> None:
    style = {"arrowstyle": "-|>", "color": color, "lw": width, "mutation_scale": 12, "shrinkA": 0, "shrinkB": 0}
    ax.annotate("", xy=tuple(tip), xytext=tuple(start), arrowprops=style, zorder=5)


def _errors_m(results: Sequence[ImageResult], truth: Sequence[TruthPose | None]) -> np.ndarray:
    pairs = [(r, t) for r, t in zip(results, truth, strict=False) if r.ok and t is not None]
    if not pairs:
        return np.zeros(0)
    return np.atleast_1d(
        geodesic_distance_m(
            lat1=[r.lat for r, _ in pairs],
            lon1=[r.lon for r, _ in pairs],
            lat2=[t.lat for _, t in pairs],
            lon2=[t.lon for _, t in pairs],
        )
    )


def _default_title(results: Sequence[ImageResult], truth: Sequence[TruthPose | None]) -> str:
    located = sum(r.ok for r in results)
    title = f"{located} of {len(results)} images located"
    errors = _errors_m(results, truth)
    if len(errors):
        title += f"; median error {np.median(errors):.1f} m over {len(errors)} with truth"
    return title


# ---- files in, figure out ----------------------------------------------------------------------------------


def output_format(out: str | os.PathLike) -> str:
    """'png', 'pdf' or 'svg' from the output's extension (ConfigError otherwise)."""
    suffix = Path(out).suffix.lower()
    if suffix not in OUT_FORMATS:
        raise ConfigError(f"--out {out}: unsupported figure type {suffix or '(none)'!r} (use .png, .pdf or .svg)")
    return OUT_FORMATS[suffix]


def plot_results(
    results_path: str | os.PathLike,
    map_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    truth_path: str | os.PathLike | None = None,
    dpi: int = DEFAULT_DPI,
    full_map: bool = False,
) -> PlotSummary:
    """Read results (GeoJSON or CSV), a map raster and optionally true poses, and write the figure atomically.

    Raises:
        ResultsReadError / MapReadError: a file is missing or unreadable (nothing is written).
        ResultsError / MapError / ConfigError: a file is not what it should be, or a bad option.
    """
    out = Path(out)
    fmt = output_format(out)
    if not 10 <= dpi <= 1200:
        raise ConfigError(f"--dpi {dpi}: must lie in [10, 1200]")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder, expected a figure file path")
    if not out.parent.exists():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist")
    results, _ = read_results(results_path)
    truth: list[TruthPose | None] = []
    if truth_path is not None:
        truth = match_truth(results, read_truth(truth_path), truth_dir=Path(truth_path).parent)
    raster = read_map(map_path)
    figure = render_figure(results, raster, truth=truth, dpi=dpi, full_map=full_map)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=dpi)
    atomic_write_bytes(out, buffer.getvalue())
    errors = _errors_m(results, truth)
    return PlotSummary(
        out=out,
        images=len(results),
        located=sum(r.ok for r in results),
        drawn=len(_drawn_positions(results, raster)),
        matched=len(errors),
        median_error_m=float(np.median(errors)) if len(errors) else None,
    )


def _drawn_positions(results: Sequence[ImageResult], raster: GeoRaster) -> np.ndarray:
    located = [r for r in results if r.ok]
    x, y = MapGeometry(raster.crs).to_map(lat=[r.lat for r in located], lon=[r.lon for r in located])
    return np.flatnonzero(np.isfinite(x) & np.isfinite(y))


# ---- command line ------------------------------------------------------------------------------------------

EXAMPLES = """\
examples:
  crossview plot results.geojson --map map.tif --out figure.png
  crossview plot results.geojson --map world/Bergen/map.tif --truth world/Bergen/poses.csv --out bergen.png
  crossview plot results.csv --map map.tif --out figure.pdf --dpi 300 --full-map

Each located image is an arrow along its heading with its 95 % uncertainty ellipse; failed images are skipped.
With --truth (a poses.csv as written by 'crossview synth': image,lat,lon,heading_deg,...), results are matched to
true poses by image path (relative to the poses file's folder, else by file name) and error lines are drawn.
The map is drawn in its own CRS; the scale bar is in ground metres and the arrow points to true north.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + "\n\n" + EXAMPLES
    parser.add_argument("results", type=Path, help="results of 'crossview locate' (.geojson or .csv)")
    parser.add_argument("--map", required=True, type=Path, help="map raster (GeoTIFF with a CRS)")
    parser.add_argument("--out", required=True, type=Path, help="figure file (.png, .pdf or .svg)")
    parser.add_argument("--truth", type=Path, metavar="POSES.csv", help="true poses (image,lat,lon,heading_deg)")
    parser.add_argument("--dpi", type=int, default=DEFAULT_DPI, help=f"figure resolution (default {DEFAULT_DPI})")
    parser.add_argument("--full-map", action="store_true", help="show the whole map, not just the poses' area")


def run(args: argparse.Namespace) -> int:
    summary = plot_results(
        args.results, args.map, args.out, truth_path=args.truth, dpi=args.dpi, full_map=args.full_map
    )
    text = f"wrote {summary.out}: {summary.drawn} of {summary.images} images drawn"
    if args.truth is not None:
        text += f", {summary.matched} matched to truth"
        if summary.median_error_m is not None:
            text += f" (median error {summary.median_error_m:.2f} m)"
    print(text)
    return 0


COMMAND = Command(
    name="plot",
    description="Plot located images (position, heading, uncertainty) over their map, optionally with truth.",
    add_arguments=add_arguments,
    run=run,
)

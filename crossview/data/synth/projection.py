"""Between a town's local metric frame and the global zoom-20 Web-Mercator pixel grid of its aerial image.

A town is laid out in its *local frame*: the UTM (or UPS) frame of the town centre
(:meth:`crossview.geometry.frames.LocalFrame.from_center`) shifted so that the centre is at (0, 0): x = east,
y = grid north, metres. Its aerial image lives on the global zoom-20 pixel grid of EPSG:3857 (DESIGN's
edge-based pixel convention). The exact chain between the two is

    local (x, y) -> UTM (x + x0, y + y0) -> WGS84 (lat, lon) -> global zoom-20 pixel (col, row)

(``LocalFrame.to_latlon`` then ``webmercator.latlon_to_pixel``, and the reverse with ``pixel_to_latlon`` and
``LocalFrame.to_xy``). Over a town both directions are smooth to far below a millimetre, so
:class:`TownProjection` evaluates them through cubic polynomials fitted to the exact chain on a grid of points and
*checked* against it on a denser grid (residual below ``MAX_FIT_ERROR_PX``); that lets the renderers map tens of
millions of pixels or ray hits without millions of PROJ calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine

from crossview.geometry.frames import LocalFrame
from crossview.geometry.webmercator import EARTH_EQUATOR_M, latlon_to_pixel, meters_per_pixel, pixel_to_latlon

ZOOM = 20
PIXEL_SIZE_M = EARTH_EQUATOR_M / (256 * 2**ZOOM)
"""Size of a zoom-20 pixel in EPSG:3857 metres (about 0.149 m)."""

MAX_FIT_ERROR_PX = 1e-3
"""Largest allowed difference between the fitted polynomials and the exact chain, zoom-20 pixels (< 0.15 mm)."""

_FIT_SAMPLES = 25
_CHECK_SAMPLES = 37


@dataclass(frozen=True)
class PixelGrid:
    """A block of the global zoom-20 pixel grid, possibly coarser by an integer ``step``.

    Grid pixel (i, j) covers global pixels [col0 + j * step, col0 + (j + 1) * step) x [row0 + i * step, ...).

    Attributes:
        col0, row0: global zoom-20 pixel of the top-left corner (multiples of ``step``).
        width, height: size in grid pixels.
        step: global pixels per grid pixel (1 for the aerial image itself).
    """

    col0: int
    row0: int
    width: int
    height: int
    step: int = 1

    @property
    def transform(self) -> Affine:
        """Affine from grid (col, row) to EPSG:3857 metres (north-up)."""
        size = PIXEL_SIZE_M * self.step
        left = self.col0 * PIXEL_SIZE_M - EARTH_EQUATOR_M / 2
        top = EARTH_EQUATOR_M / 2 - self.row0 * PIXEL_SIZE_M
        return Affine(size, 0.0, left, 0.0, -size, top)

    def coarsened(self, factor: int) -> PixelGrid:
        """The same area on pixels ``factor`` times larger (sizes must divide)."""
        if self.width % factor or self.height % factor:
            raise ValueError(f"{self} cannot be coarsened by {factor}")
        return PixelGrid(self.col0, self.row0, self.width // factor, self.height // factor, self.step * factor)

    def to_grid(self, col_px: np.ndarray, row_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global pixel coordinates -> continuous grid coordinates (edge-based)."""
        return (col_px - self.col0) / self.step, (row_px - self.row0) / self.step


def _monomials(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., 10) cubic monomials of two normalised variables."""
    return np.stack([np.ones_like(a), a, b, a * a, a * b, b * b, a**3, a * a * b, a * b * b, b**3], axis=-1)


@dataclass(frozen=True)
class _Cubic:
    """Two cubic polynomials of (u, v) = ((p - p0) / scale, (q - q0) / scale)."""

    p0: float
    q0: float
    scale: float
    coef: np.ndarray  # (10, 2)

    def __call__(self, p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = (np.asarray(p, dtype=np.float64) - self.p0) / self.scale
        v = (np.asarray(q, dtype=np.float64) - self.q0) / self.scale
        c = self.coef
        # Horner-like evaluation without materialising the monomial stack (millions of points).
        out = []
        for k in range(2):
            value = c[0, k] + u * (c[1, k] + u * (c[3, k] + u * c[6, k]) + v * (c[4, k] + u * c[7, k]))
            value = value + v * (c[2, k] + v * (c[5, k] + u * c[8, k] + v * c[9, k]))
            out.append(value)
        return out[0], out[1]


def _fit(p: np.ndarray, q: np.ndarray, out_a: np.ndarray, out_b: np.ndarray, p0: float, q0: float, scale: float):
    design = _monomials((p - p0) / scale, (q - q0) / scale).reshape(-1, 10)
    target = np.stack([out_a.ravel(), out_b.ravel()], axis=-1)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return _Cubic(p0, q0, scale, coef)


class TownProjection:
    """Local town metres <-> global zoom-20 pixels (see the module docstring).

    Args:
        lat, lon: the town centre, degrees; the local frame is its UTM zone shifted to put it at (0, 0).
        half_extent_m: the maps are fitted and checked over [-half_extent_m, half_extent_m]^2 (local metres).

    Raises:
        RuntimeError: the polynomials do not reproduce the exact chain to ``MAX_FIT_ERROR_PX`` (cannot happen for
            towns of a few kilometres away from the poles; guards the shortcut).
    """

    def __init__(self, *, lat: float, lon: float, half_extent_m: float) -> None:
        self.lat, self.lon = float(lat), float(lon)
        self.frame = LocalFrame.from_center(lat=self.lat, lon=self.lon)
        x0, y0 = self.frame.to_xy(lat=self.lat, lon=self.lon)
        self.origin_xy_m = (float(x0), float(y0))
        self.half_extent_m = float(half_extent_m)
        col_c, row_c = latlon_to_pixel(lat=self.lat, lon=self.lon, zoom=ZOOM)
        self.center_px = (float(col_c), float(row_c))
        self.gsd_m = float(meters_per_pixel(lat=self.lat, zoom=ZOOM))
        self._to_px = self._fit_forward()
        self._to_local = self._fit_inverse()
        self._check()

    # ---- exact chain -----------------------------------------------------------------------------------
    def exact_to_px(self, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local metres -> global zoom-20 pixels through PROJ (exact, slow)."""
        lat, lon = self.frame.to_latlon(np.asarray(x_m) + self.origin_xy_m[0], np.asarray(y_m) + self.origin_xy_m[1])
        col, row = latlon_to_pixel(lat=lat, lon=lon, zoom=ZOOM)
        return np.asarray(col), np.asarray(row)

    def exact_to_local(self, col_px: np.ndarray, row_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global zoom-20 pixels -> local metres through PROJ (exact, slow)."""
        lat, lon = pixel_to_latlon(col_px, row_px, zoom=ZOOM)
        x, y = self.frame.to_xy(lat=lat, lon=lon)
        return np.asarray(x) - self.origin_xy_m[0], np.asarray(y) - self.origin_xy_m[1]

    def latlon_of(self, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local metres -> WGS84 (lat, lon) degrees (exact)."""
        lat, lon = self.frame.to_latlon(np.asarray(x_m) + self.origin_xy_m[0], np.asarray(y_m) + self.origin_xy_m[1])
        return np.asarray(lat), np.asarray(lon)

    def local_of(self, *, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 (lat, lon) degrees -> local metres (exact)."""
        x, y = self.frame.to_xy(lat=lat, lon=lon)
        return np.asarray(x) - self.origin_xy_m[0], np.asarray(y) - self.origin_xy_m[1]

    def convergence_deg(self, *, lat: float, lon: float) -> float:
        """Clockwise angle from true north to the local frame's grid north at a point, degrees."""
        return float(self.frame.convergence_deg(lat=lat, lon=lon))

    # ---- fitted maps -----------------------------------------------------------------------------------
    def _sample_local(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        axis = np.linspace(-self.half_extent_m, self.half_extent_m, count)
        return np.meshgrid(axis, axis, indexing="xy")

    def _fit_forward(self) -> _Cubic:
        x, y = self._sample_local(_FIT_SAMPLES)
        col, row = self.exact_to_px(x, y)
        return _fit(x, y, col, row, 0.0, 0.0, self.half_extent_m)

    def _fit_inverse(self) -> _Cubic:
        x, y = self._sample_local(_FIT_SAMPLES)
        col, row = self.exact_to_px(x, y)
        # Refit on pixels spread over the same area: the inverse's natural variables are pixels.
        half_px = 1.2 * self.half_extent_m / self.gsd_m
        c_axis = np.linspace(self.center_px[0] - half_px, self.center_px[0] + half_px, _FIT_SAMPLES)
        r_axis = np.linspace(self.center_px[1] - half_px, self.center_px[1] + half_px, _FIT_SAMPLES)
        cols, rows = np.meshgrid(c_axis, r_axis, indexing="xy")
        xs, ys = self.exact_to_local(cols, rows)
        del col, row
        return _fit(cols, rows, xs, ys, self.center_px[0], self.center_px[1], half_px)

    def _check(self) -> None:
        axis = np.linspace(-self.half_extent_m, self.half_extent_m, _CHECK_SAMPLES) * 0.999
        x, y = np.meshgrid(axis, axis, indexing="xy")
        col, row = self.exact_to_px(x, y)
        col_fit, row_fit = self._to_px(x, y)
        error_px = max(float(np.abs(col_fit - col).max()), float(np.abs(row_fit - row).max()))
        x_back, y_back = self._to_local(col, row)
        error_m = max(float(np.abs(x_back - x).max()), float(np.abs(y_back - y).max()))
        if error_px > MAX_FIT_ERROR_PX or error_m > MAX_FIT_ERROR_PX * self.gsd_m:
            raise RuntimeError(
                f"town projection at ({self.lat}, {self.lon}) is not smooth enough over +/-{self.half_extent_m} m: "
                f"fit errors {error_px:.2e} px, {error_m:.2e} m"
            )

    def to_px(self, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local metres -> global zoom-20 pixel coordinates (continuous, edge-based), float64."""
        return self._to_px(x_m, y_m)

    def to_local(self, col_px: np.ndarray, row_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global zoom-20 pixel coordinates -> local metres, float64."""
        return self._to_local(col_px, row_px)

    def grid_azimuth_of_true_north_deg(self) -> float:
        """Angle of the Mercator image's up direction (true north) in the local frame at the centre, degrees."""
        return self.convergence_deg(lat=self.lat, lon=self.lon)

    def meters_per_px(self) -> float:
        """Ground size of a zoom-20 pixel at the town centre (local metres per pixel, isotropic: conformal maps)."""
        return math.sqrt(abs(self._jacobian_det()))

    def _jacobian_det(self) -> float:
        eps = 1.0
        x0, y0 = self.to_local(np.array(self.center_px[0]), np.array(self.center_px[1]))
        x1, y1 = self.to_local(np.array(self.center_px[0] + eps), np.array(self.center_px[1]))
        x2, y2 = self.to_local(np.array(self.center_px[0]), np.array(self.center_px[1] + eps))
        return float((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0))

"""Exhaustive dense matching: every position and heading of a ground image over a map area at once.

The ground image's finest refinement features are laid out on the ground plane around the camera, one
bird's-eye-view (BEV) template per candidate heading, through DESIGN's ground-plane geometry
(:func:`crossview.geometry.ground.ground_to_image`): template cell (row, col) is the ground point ``(east,
north) = ((col - k//2) * cell_m, (k//2 - row) * cell_m)`` from the camera, and holds the confidence-weighted
ground feature seen there. Correlating every template with the map's features of the same level (a north-up
feature raster of square ``cell_m`` cells) scores every (heading, cell) pose at once: the score is the mean
feature similarity over the template's ground points. This is OrienterNet's exhaustive matching (Sarlin et al.,
CVPR 2023) on our features; its peaks are the candidates the LM refiner (:mod:`crossview.refinement`) polishes.

Correlation runs through real FFTs (:func:`correlate`), equal to a direct ``conv2d`` with zero padding.

Frames: the feature raster is true-north-up, x (columns) east, y (rows) south; headings are clockwise from the
raster's north, radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from crossview.geometry.cameras import Camera
from crossview.geometry.ground import ground_to_image
from crossview.geometry.pose import Pose2

DEFAULT_MAX_RANGE_M = 30.0
"""Ground points farther than this from the camera are left out of the templates (measured best of 20, 30 and 40
m on a held-out synthetic town)."""
DEFAULT_MIN_RANGE_M = 2.0
"""Ground points nearer than this are left out (the camera's own footprint)."""
DEFAULT_HEADINGS = 64


@dataclass(frozen=True)
class BevTemplates:
    """Bird's-eye-view templates of one ground image, one per heading.

    Attributes:
        features: (N, C, k, k) ground features times their weights, laid out north-up around the camera.
        weights: (N, 1, k, k) confidence of each template cell, 0 where the camera does not see it.
        headings_rad: (N,) heading of each template, clockwise from north.
        cell_m: side of a template cell, metres.
        quarter_turns: True when template ``n + q * N / 4`` is template ``n`` turned clockwise ``q`` times by 90
            degrees (q = 1, 2, 3), as :func:`bev_templates` builds them for evenly spaced headings (N divisible by
            4); :func:`correlate` then transforms a quarter of them and turns the map instead.
    """

    features: Tensor
    weights: Tensor
    headings_rad: Tensor
    cell_m: float
    quarter_turns: bool = False

    @property
    def radius_cells(self) -> int:
        return self.features.shape[-1] // 2


def template_offsets_m(radius_cells: int, cell_m: float, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """(k, k, 2) (east, north) metres of every template cell from the camera, k = 2 * radius_cells + 1."""
    steps = (torch.arange(2 * radius_cells + 1, dtype=dtype) - radius_cells) * cell_m
    north, east = torch.meshgrid(-steps, steps, indexing="ij")
    return torch.stack([east, north], dim=-1)


def bev_templates(
    features: Tensor,
    confidence: Tensor,
    camera: Camera,
    height_m: float,
    *,
    cell_m: float,
    headings_rad: Tensor,
    max_range_m: float = DEFAULT_MAX_RANGE_M,
    min_range_m: float = DEFAULT_MIN_RANGE_M,
) -> BevTemplates:
    """Project one ground image's features onto the ground plane at every heading.

    Args:
        features: (C, H, W) or (1, C, H, W) ground features (one refinement level).
        confidence: (1, H, W) or (1, 1, H, W) their confidences in [0, 1].
        camera: the ground camera at the feature map's size (panoramas wrap around their seam).
        height_m: camera height above the ground, metres.
        cell_m: template cell side, metres (the map feature raster's cell).
        headings_rad: (N,) headings to build, clockwise from north.
        max_range_m, min_range_m: ground distances kept, metres.

    Returns:
        The templates, k = 2 * ceil(max_range_m / cell_m) + 1 cells wide.
    """
    features = features.reshape(1, *features.shape[-3:]).float()
    confidence = confidence.reshape(1, 1, *confidence.shape[-2:]).float()
    radius = max(1, math.ceil(max_range_m / cell_m))
    offsets = template_offsets_m(radius, cell_m).to(features.device)
    ring = offsets.norm(dim=-1)
    ring = (ring >= min_range_m) & (ring <= max_range_m)
    quarter = _quarter_of(headings_rad)
    headings = (headings_rad if quarter is None else headings_rad[:quarter]).to(features)
    count, k = len(headings), 2 * radius + 1
    pose = Pose2(torch.stack([torch.zeros_like(headings), torch.zeros_like(headings), headings], dim=-1))
    uv, seen = ground_to_image(offsets.reshape(1, -1, 2).expand(count, -1, -1), pose, camera, float(height_m))
    stacked = torch.cat([features, confidence], dim=1)
    sampled = _sample(stacked, uv, wrap=camera.model == "panorama")  # (N, C + 1, P)
    weights = (sampled[:, -1:] * (seen & ring.reshape(1, -1))[:, None].to(sampled)).reshape(count, 1, k, k)
    templates = sampled[:, :-1].reshape(count, -1, k, k) * weights
    if quarter is not None:  # a quarter turn more of heading turns the ground around the camera's cell
        templates, weights = (torch.cat([_turn_clockwise(x, q) for q in range(4)]) for x in (templates, weights))
    templates = templates.contiguous()  # FFTs of contiguous rows
    return BevTemplates(templates, weights, headings_rad, float(cell_m), quarter_turns=quarter is not None)


def _quarter_of(headings_rad: Tensor, *, tolerance_rad: float = 1e-5) -> int | None:
    """N / 4 when heading ``n + N / 4`` is heading ``n`` plus 90 degrees for every n (N evenly spaced headings,
    N divisible by 4), else None."""
    count = len(headings_rad)
    if count < 4 or count % 4:
        return None
    quarter = count // 4
    step = headings_rad[quarter:].double() - headings_rad[:-quarter].double() - math.pi / 2
    off = torch.remainder(step + math.pi, 2 * math.pi) - math.pi
    return quarter if bool((off.abs() <= tolerance_rad).all()) else None


def _turn_clockwise(grids: Tensor, quarters: int) -> Tensor:
    """(..., H, W) north-up grids turned clockwise by ``quarters`` * 90 degrees about their centre."""
    return torch.rot90(grids, -quarters, dims=(-2, -1))


def _sample(image: Tensor, uv: Tensor, *, wrap: bool) -> Tensor:
    """(N, C, P) bilinear samples of a (1, C, H, W) image at (N, P, 2) pixel coordinates (0 outside; columns
    wrap around a panorama's seam when ``wrap``)."""
    height, width = image.shape[-2:]
    u = uv[..., 0]
    if wrap:
        image = torch.cat([image[..., -1:], image, image[..., :1]], dim=-1)
        u = torch.remainder(u, width) + 1.0
        width += 2
    grid = torch.stack([2.0 * u / width - 1.0, 2.0 * uv[..., 1] / height - 1.0], dim=-1)  # (N, P, 2)
    sampled = F.grid_sample(image, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled[0].transpose(0, 1)  # one image, every heading's points at once: (C, N, P) -> (N, C, P)


def correlate(map_features: Tensor, templates: BevTemplates) -> Tensor:
    """Mean feature similarity of every template placed at every cell of a feature raster.

    ``scores[n, r, c] = sum_{i, j} <map[:, r + i - h, c + j - h], T[n, :, i, j]> / sum_{i, j} w[n, i, j]``
    with h = k // 2 and the map zero outside; computed with FFTs of side :func:`fft_size` (max(S + h, k)): the circular
    correlation's lag ``r - h`` reads map rows ``r - h .. r + h``, which for ``0 <= r < S`` fall in the map or in
    its ``h`` rows of zero padding on either side (the padding wraps around), so no output sees the map twice.

    Args:
        map_features: (C, S_r, S_c) north-up feature raster (cells of ``templates.cell_m``).
        templates: the BEV templates (same C).

    Returns:
        (N, S_r, S_c) scores.
    """
    total_weight = templates.weights.sum(dim=(1, 2, 3)).clamp(min=1e-6)
    map_features = map_features.float()
    if not templates.quarter_turns:
        return _correlation_sums(map_features, templates.features.float(), {}) / total_weight[:, None, None]
    # template n + q N/4 is template n turned clockwise q times (R^q), and correlating with R^q t equals turning
    # the map by R^-q, correlating with t and turning the scores back: a quarter of the templates' FFTs
    base = templates.features[: len(templates.features) // 4].float()
    spectra: dict[tuple[int, int], Tensor] = {}  # the base templates' spectra, by FFT size (two when not square)
    scores = [_turn_clockwise(_correlation_sums(_turn_clockwise(map_features, -q), base, spectra), q) for q in range(4)]
    return torch.cat(scores) / total_weight[:, None, None]


def _correlation_sums(map_features: Tensor, templates: Tensor, spectra: dict[tuple[int, int], Tensor]) -> Tensor:
    """(N, S_r, S_c) unnormalised scores of (N, C, k, k) templates over a (C, S_r, S_c) raster (see
    :func:`correlate`); ``spectra`` caches the templates' spectra by FFT size."""
    rows, cols = map_features.shape[-2:]
    k = templates.shape[-1]
    half = k // 2
    size = (fft_size(max(rows + half, k)), fft_size(max(cols + half, k)))
    if size not in spectra:
        spectra[size] = torch.fft.rfft2(templates, s=size)
    spectrum_templates, spectrum_map = spectra[size], torch.fft.rfft2(map_features, s=size)
    # summed over channels one plane at a time: on CPU about ten times faster than the same sum as an einsum
    # (measured 5 vs 50 ms for 64 templates of 16 channels on 90x46 spectra, 2 cores)
    products = sum(spectrum_templates[:, c].conj() * spectrum_map[c] for c in range(len(spectrum_map)))
    circular = torch.fft.irfft2(products, s=size)
    return torch.roll(circular, shifts=(half, half), dims=(-2, -1))[:, :rows, :cols]


def fft_size(minimum: int) -> int:
    """The smallest 2-3-5-smooth integer >= ``minimum`` (FFTs of such sizes are fast; a large prime factor makes
    them several times slower)."""
    size = max(1, int(minimum))
    while True:
        rest = size
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return size
        size += 1


@dataclass(frozen=True)
class Peak:
    """One pose of a score volume: cell (row, col), heading (radians, interpolated between bins), score, and the
    sub-cell offset (d_row, d_col) of the score's vertex from the cell centre, in cells (within +/- 0.5)."""

    row: int
    col: int
    heading_rad: float
    score: float
    d_row: float = 0.0
    d_col: float = 0.0


def find_peaks(scores: Tensor, allowed: Tensor, count: int, *, min_separation_cells: float) -> list[Peak]:
    """The ``count`` best poses of a score volume, at least ``min_separation_cells`` apart in position.

    Args:
        scores: (N, S_r, S_c) scores over N evenly spaced headings (bin n at ``2 pi n / N``).
        allowed: (N, S_r, S_c) or (S_r, S_c) bool, the poses that may be chosen.
        count: how many peaks at most.
        min_separation_cells: non-maximum suppression radius, cells.

    Returns:
        Peaks, best first (fewer when fewer poses are allowed). Headings and positions are refined by a parabola
        through the best bin (cell) and its neighbours; positions only between allowed cells.
    """
    masked = scores.masked_fill(~allowed.expand_as(scores), -math.inf)
    best, heading_bin = masked.max(dim=0)
    rows, cols = torch.meshgrid(
        torch.arange(best.shape[0], device=best.device), torch.arange(best.shape[1], device=best.device), indexing="ij"
    )
    peaks: list[Peak] = []
    for _ in range(count):
        flat = int(torch.argmax(best))
        row, col = divmod(flat, best.shape[1])
        if not math.isfinite(float(best[row, col])):
            break
        bin_ = int(heading_bin[row, col])
        plane = masked[bin_]  # poses that may not be chosen do not pull the vertex towards them
        d_row = _vertex(*(plane[min(max(row + d, 0), plane.shape[0] - 1), col] for d in (-1, 0, 1)))
        d_col = _vertex(*(plane[row, min(max(col + d, 0), plane.shape[1] - 1)] for d in (-1, 0, 1)))
        heading = _interpolated_heading(scores[:, row, col], bin_)
        peaks.append(Peak(row, col, heading, float(best[row, col]), d_row, d_col))
        near = (rows - row) ** 2 + (cols - col) ** 2 < min_separation_cells**2
        best = best.masked_fill(near, -math.inf)
    return peaks


def _interpolated_heading(profile: Tensor, bin_: int) -> float:
    """Heading of the parabola's vertex through bins bin-1, bin, bin+1 of a circular score profile, radians."""
    count = len(profile)
    shift = _vertex(*(profile[(bin_ + d) % count] for d in (-1, 0, 1)))
    return float((bin_ + shift) * 2.0 * math.pi / count) % (2.0 * math.pi)


def _vertex(left: Tensor | float, centre: Tensor | float, right: Tensor | float) -> float:
    """Offset of the vertex of the parabola through (-1, left), (0, centre), (1, right), clamped to +/- 0.5 (0
    where it does not open downwards or a value is not finite)."""
    left, centre, right = float(left), float(centre), float(right)
    curvature = left - 2.0 * centre + right
    if not (curvature < 0 and math.isfinite(curvature)):
        return 0.0
    return max(-0.5, min(0.5, 0.5 * (left - right) / curvature))

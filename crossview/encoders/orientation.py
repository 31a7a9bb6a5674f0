"""Orientation-aware matching: circular cross-correlation of azimuth column features (DSM).

Reference: Y. Shi, X. Yu, D. Campbell, H. Li, "Where am I looking at? Joint Location and Orientation Estimation
by Cross-View Matching", CVPR 2020 (Dynamic Similarity Matching). The ground image's column features slide
circularly over the aerial (polar) column features; at each shift the score is the correlation normalised by the
norms of the ground features and of the aerial window they overlap. The best shift gives the heading, the best
score the similarity.

Convention:
    There are ``Wc`` azimuth columns. Aerial column ``j`` looks at azimuth ``180 + 360 j / Wc`` (DESIGN's polar
    convention). Ground columns live on the same ``Wc``-column *canvas* of a heading-0 panorama: canvas column
    ``j`` looks ``360 (j - Wc/2) / Wc`` degrees clockwise of the image's centre column. A panorama fills the whole
    canvas; a limited field of view of ``fov`` (fraction of 360°) fills the centred window of
    :func:`window_width` columns starting at :func:`window_start`, and only canvas columns with
    ``|j - Wc/2| <= fov Wc / 2`` count (:func:`canvas_mask`). Ground column ``j`` then matches aerial column
    ``j + shift`` for a ground heading of ``360 shift / Wc`` degrees (clockwise from north).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "canvas_mask",
    "orientation_scores",
    "place_on_canvas",
    "refine_peak",
    "shift_to_heading_deg",
    "window_start",
    "window_width",
]

_FOV_TOLERANCE = 1e-6


def window_width(fov_fraction: float, total_columns: int) -> int:
    """Columns of the centred window covering a field of view of ``fov_fraction`` of 360°.

    ``total_columns`` for a full panorama (``fov_fraction >= 1``), else the odd number ``2 floor(f Wc / 2) + 1``.
    """
    if fov_fraction >= 1.0 - _FOV_TOLERANCE:
        return total_columns
    half = math.floor(fov_fraction * total_columns / 2 + _FOV_TOLERANCE)
    return min(total_columns, 2 * half + 1)


def window_start(width: int, total_columns: int) -> int:
    """First canvas column of a centred window of ``width`` columns (0 for the full canvas)."""
    return total_columns // 2 - width // 2


def canvas_mask(fov_fraction: Tensor, total_columns: int) -> Tensor:
    """(B, Wc) float mask of the canvas columns a field of view sees: ``|j - Wc/2| <= fov Wc / 2``.

    Args:
        fov_fraction: (B,) fraction of 360° the ground images span (1 for panoramas).
        total_columns: ``Wc``.
    """
    j = torch.arange(total_columns, device=fov_fraction.device, dtype=torch.float64)
    half = fov_fraction.detach().to(torch.float64)[:, None] * total_columns / 2 + _FOV_TOLERANCE
    inside = (j[None, :] - total_columns / 2).abs() <= half
    return inside.to(fov_fraction.dtype if fov_fraction.is_floating_point() else torch.float32)


def place_on_canvas(columns: Tensor, fov_fraction: Tensor, total_columns: int) -> tuple[Tensor, Tensor]:
    """Put ground column features of a centred window on the full ``Wc``-column canvas.

    Args:
        columns: (B, Dc, Wg) ground column features, window layout of :func:`window_start`.
        fov_fraction: (B,) fraction of 360° each image spans.
        total_columns: ``Wc``.

    Returns:
        canvas: (B, Dc, Wc) the features, zero outside each sample's field of view; mask: (B, Wc) float.
    """
    batch, channels, width = columns.shape
    if width > total_columns:
        raise ValueError(f"ground has {width} columns, more than the {total_columns} aerial columns")
    start = window_start(width, total_columns)
    canvas = columns.new_zeros(batch, channels, total_columns)
    canvas[..., start : start + width] = columns
    mask = canvas_mask(fov_fraction, total_columns).to(columns.dtype)
    return canvas * mask[:, None, :], mask


def orientation_scores(
    ground_canvas: Tensor, ground_mask: Tensor, aerial_columns: Tensor, *, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Normalised circular cross-correlation of every ground against every aerial, at every azimuth shift.

    ``score[g, a, s] = sum_j m_gj <G_g[:, j], A_a[:, j + s]> / (|G_g| sqrt(sum_j m_gj |A_a[:, j + s]|^2))`` with
    indices modulo ``Wc``; computed with FFTs, so memory is ``O(Bg Ba Wc)``, never ``O(Bg Ba Wc Dc)``.

    Args:
        ground_canvas: (Bg, Dc, Wc) ground column features on the canvas, zero outside the mask.
        ground_mask: (Bg, Wc) 0/1 mask of the columns each ground image sees.
        aerial_columns: (Ba, Dc, Wc) aerial column features.
        eps: guards divisions by zero.

    Returns:
        scores: (Bg, Ba, Wc) in [-1, 1]; differentiable.
    """
    if ground_canvas.shape[1:] != aerial_columns.shape[1:]:
        raise ValueError(
            f"column features differ: ground {tuple(ground_canvas.shape)} vs aerial {tuple(aerial_columns.shape)}"
        )
    total = aerial_columns.shape[-1]
    dtype = torch.promote_types(ground_canvas.dtype, torch.float32)  # FFTs in at least float32
    g = ground_canvas.to(dtype)
    a = aerial_columns.to(dtype)
    cross = torch.einsum("gdf,adf->gaf", torch.fft.rfft(g, dim=-1).conj(), torch.fft.rfft(a, dim=-1))
    numerator = torch.fft.irfft(cross, n=total, dim=-1)
    energy_a = torch.fft.rfft((a * a).sum(dim=1), dim=-1)  # (Ba, F)
    mask_f = torch.fft.rfft(ground_mask.to(dtype), dim=-1).conj()  # (Bg, F)
    window_energy = torch.fft.irfft(mask_f[:, None, :] * energy_a[None, :, :], n=total, dim=-1)
    norm_g = g.flatten(1).norm(dim=1)[:, None, None]
    return numerator / (norm_g * window_energy.clamp_min(0.0).sqrt() + eps)


def refine_peak(scores: Tensor, best: Tensor) -> Tensor:
    """Sub-column position of the correlation peak: the vertex of the parabola through the best shift and its
    two circular neighbours, within half a column of ``best``.

    Column features are ``360 / Wc`` degrees apart (22.5° for Wc = 16); a smooth correlation curve locates the
    heading well inside that step.

    Args:
        scores: (..., Wc) correlation at every shift.
        best: (...) integer index of the maximum.

    Returns:
        (...) float shift.
    """
    total = scores.shape[-1]

    def at(offset: int) -> Tensor:
        return scores.gather(-1, torch.remainder(best + offset, total).unsqueeze(-1)).squeeze(-1)

    left, center, right = at(-1), at(0), at(1)
    curvature = left - 2 * center + right
    safe = torch.where(curvature < -1e-12, curvature, -torch.ones_like(curvature))
    vertex = torch.where(curvature < -1e-12, 0.5 * (left - right) / safe, torch.zeros_like(curvature))
    return best.to(scores.dtype) + vertex.clamp(-0.5, 0.5)


def shift_to_heading_deg(shift: Tensor, total_columns: int) -> Tensor:
    """Heading (degrees clockwise from north, [0, 360)) of the ground image's centre column for a column shift."""
    return torch.remainder(shift.to(torch.float32) * (360.0 / total_columns), 360.0)

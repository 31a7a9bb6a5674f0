"""A map's finest refinement features over an area, encoded once in overlapping blocks and stitched.

The dense search (:mod:`crossview.retrieval.dense`) of every image reads the window it needs from one
:class:`FeatureRaster` instead of running the aerial encoder on the map again. The raster is north-up at its
centre (true north; over a few kilometres the meridian convergence changes by hundredths of a degree): cell
(row, col) has its centre ``(east, north) = ((col + 0.5 - cols / 2) * cell_m, (rows / 2 - row - 0.5) * cell_m)``
true ground metres from :attr:`FeatureRaster.center_xy`. Blocks are encoded with a margin of
``margin_cells`` on every side that is cut away, so the stitched features do not see block edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from crossview.geometry.frames import LocalFrame, grid_offset_to_true, true_offset_to_grid

BLOCK_CELLS = 128
MARGIN_CELLS = 16
ENCODER_MULTIPLE_PX = 32
"""Input sides are multiples of this (the backbone's total stride), so feature cells line up with pixel blocks."""


@dataclass
class FeatureRaster:
    """Features of one refinement level over a square area.

    Attributes:
        features: (C, R, R) float32 features, row 0 at the northern edge.
        valid: (R, R) bool, cells over valid map.
        center_xy: (2,) grid x, y of the raster's centre, metres.
        cell_m: cell side, ground metres.
        convergence_rad: meridian convergence at the centre (grid north is this far clockwise of true north).
        scale: UTM point scale factor at the centre (grid metres per ground metre).
    """

    features: Tensor
    valid: Tensor
    center_xy: np.ndarray
    cell_m: float
    convergence_rad: float
    scale: float

    @property
    def size(self) -> int:
        return int(self.features.shape[-1])

    def to_grid(self, east_m: float, north_m: float) -> np.ndarray:
        """True ground offset (east, north) from the centre -> (2,) grid x, y."""
        dx, dy = true_offset_to_grid(east_m, north_m, convergence_rad=self.convergence_rad, scale=self.scale)
        return np.array([self.center_xy[0] + dx, self.center_xy[1] + dy])

    def from_grid(self, x_m: float, y_m: float) -> tuple[float, float]:
        """Grid x, y -> true ground offset (east, north) from the centre, metres."""
        dx, dy = x_m - self.center_xy[0], y_m - self.center_xy[1]
        return grid_offset_to_true(dx, dy, convergence_rad=self.convergence_rad, scale=self.scale)

    def window(self, east_m: float, north_m: float, half_cells: int) -> tuple[Tensor, Tensor, float, float]:
        """The (2 half + 1)-cell square around the cell holding (east, north), zero and invalid outside.

        Returns:
            features (C, S, S), valid (S, S), and the true offset (east, north) of the window's centre cell.
        """
        row = math.floor(self.size / 2 - north_m / self.cell_m)
        col = math.floor(east_m / self.cell_m + self.size / 2)
        side = 2 * half_cells + 1
        features = self.features.new_zeros(self.features.shape[0], side, side)
        valid = torch.zeros(side, side, dtype=torch.bool)
        r0, c0 = row - half_cells, col - half_cells
        rs, cs = slice(max(r0, 0), min(r0 + side, self.size)), slice(max(c0, 0), min(c0 + side, self.size))
        if rs.start < rs.stop and cs.start < cs.stop:
            target = (slice(rs.start - r0, rs.stop - r0), slice(cs.start - c0, cs.stop - c0))
            features[:, target[0], target[1]] = self.features[:, rs, cs]
            valid[target] = self.valid[rs, cs]
        centre_east = (col + 0.5 - self.size / 2) * self.cell_m
        centre_north = (self.size / 2 - row - 0.5) * self.cell_m
        return features, valid, centre_east, centre_north


def encode_feature_raster(
    model: Any,
    sampler: Any,
    frame: LocalFrame,
    center_xy: tuple[float, float],
    half_extent_m: float,
    *,
    cell_px: int,
    device: str = "cpu",
) -> FeatureRaster:
    """Encode the finest refinement level of a map over the square of half side ``half_extent_m`` (ground
    metres) around ``center_xy`` (grid metres), true-north-up.

    Args:
        model: a cross-view model (its aerial branch is used).
        sampler: the map's :class:`crossview.retrieval.chips.ChipSampler` (its gsd is the pixel size).
        frame: the index frame (for the convergence and scale at the centre).
        center_xy: the area's centre in the frame, metres.
        half_extent_m: half the area's side, ground metres.
        cell_px: map pixels per cell of the finest level (the aerial branch's stride there).
        device: where the encoder runs.

    Returns:
        The stitched raster (cells of ``cell_px * gsd`` metres).
    """
    gsd_m = float(sampler.geometry.gsd_m)
    cell_m = cell_px * gsd_m
    needed = max(1, math.ceil(2.0 * half_extent_m / cell_m))
    step = ENCODER_MULTIPLE_PX // math.gcd(ENCODER_MULTIPLE_PX, cell_px)  # cells per encoder multiple
    block = min(BLOCK_CELLS, step * math.ceil(needed / step))
    margin = step * math.ceil(MARGIN_CELLS / step)
    blocks = math.ceil(needed / block)
    size = blocks * block
    lat, lon = frame.to_latlon(float(center_xy[0]), float(center_xy[1]))
    raster = FeatureRaster(
        torch.zeros(0),
        torch.zeros(size, size, dtype=torch.bool),
        np.asarray(center_xy, dtype=np.float64),
        cell_m,
        math.radians(float(frame.convergence_deg(lat=lat, lon=lon))),
        float(frame.scale_factor(lat=lat, lon=lon)),
    )
    pieces: list[list[Tensor]] = []
    crop_px = (block + 2 * margin) * cell_px
    for block_row in range(blocks):
        row_pieces = []
        for block_col in range(blocks):
            east = (block_col * block + block / 2 - size / 2) * cell_m
            north = (size / 2 - block_row * block - block / 2) * cell_m
            chip, valid = sampler.crop(raster.to_grid(east, north)[None], size_px=crop_px, device=device)
            with torch.inference_mode():
                features = model.map_refinement_features(chip)[0][-1][0].float().cpu()
            keep = slice(margin, margin + block)
            row_pieces.append(features[:, keep, keep])
            cells = F.interpolate(valid[:, None].float().cpu(), size=features.shape[-2:], mode="area")[0, 0]
            rows = slice(block_row * block, (block_row + 1) * block)
            cols = slice(block_col * block, (block_col + 1) * block)
            raster.valid[rows, cols] = cells[keep, keep] >= 0.5
        pieces.append(row_pieces)
    raster.features = torch.cat([torch.cat(row, dim=-1) for row in pieces], dim=-2)
    return raster

"""A map's finest refinement features over an area, encoded in overlapping blocks and stitched.

The dense search (:mod:`crossview.retrieval.dense`) of every image reads the window it needs from one
:class:`FeatureRaster` instead of running the aerial encoder on the map again. The raster is north-up at its
centre (true north; over a few kilometres the meridian convergence changes by hundredths of a degree): cell
(row, col) has its centre ``(east, north) = ((col + 0.5 - cols / 2) * cell_m, (rows / 2 - row - 0.5) * cell_m)``
true ground metres from :attr:`FeatureRaster.center_xy`. Blocks are encoded with a margin of
``margin_cells`` on every side that is cut away, so the stitched features do not see block edges.

A raster is encoded at once (:func:`encode_feature_raster`) or block by block as windows need them
(``lazy=True``: a run whose images lie in a few places of a large map encodes only those places, once).
An index stores the whole map's raster (:meth:`FeatureRaster.to_arrays`), so ``locate --index`` encodes nothing.
Features and confidences are kept as float16 (35 bytes per cell of 16 channels: about 4 MB per km^2 at the
equator, where zoom-20 chips give 3 m cells, and 16 MB per km^2 at 60 degrees of latitude).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from crossview.geometry.frames import LocalFrame, grid_offset_to_true, true_offset_to_grid

BLOCK_CELLS = 128
MARGIN_CELLS = 16
BLOCK_BATCH = 2
"""Blocks per forward pass of the aerial encoder (a block with its margin is 640 px at stride 4)."""
ENCODER_MULTIPLE_PX = 32
"""Input sides are multiples of this (the backbone's total stride), so feature cells line up with pixel blocks."""


@dataclass
class BlockEncoder:
    """Encodes square blocks of a :class:`FeatureRaster` with a map's aerial branch.

    Attributes:
        model: a cross-view model (its ``map_refinement_features``).
        sampler: the map's :class:`crossview.retrieval.chips.ChipSampler` (its gsd is the pixel size).
        cell_px: map pixels per cell of the finest level.
        block_cells: side of a block, cells.
        margin_cells: cells encoded around each block and cut away.
        device: where the encoder runs.
    """

    model: Any
    sampler: Any
    cell_px: int
    block_cells: int
    margin_cells: int
    device: str = "cpu"

    def encode(self, raster: FeatureRaster, blocks: list[tuple[int, int]]) -> None:
        """Write the features, confidences and validity of ``blocks`` (block row, block column) into ``raster``."""
        crop_px = (self.block_cells + 2 * self.margin_cells) * self.cell_px
        for start in range(0, len(blocks), BLOCK_BATCH):
            batch = blocks[start : start + BLOCK_BATCH]
            centres = np.stack([raster.to_grid(*raster.block_center(*block)) for block in batch])
            chips, valid = self.sampler.crop(centres, size_px=crop_px, device=self.device)
            with torch.inference_mode():
                feats, confs = self.model.map_refinement_features(chips)
            features, confidences = feats[-1].float().cpu(), confs[-1][:, 0].float().cpu()
            cells = F.interpolate(valid[:, None].float().cpu(), size=features.shape[-2:], mode="area")[:, 0]
            keep = slice(self.margin_cells, self.margin_cells + self.block_cells)
            for k, (block_row, block_col) in enumerate(batch):
                raster.write_block(
                    block_row,
                    block_col,
                    features[k][:, keep, keep],
                    confidences[k][keep, keep],
                    cells[k][keep, keep] >= 0.5,
                )


@dataclass
class FeatureRaster:
    """Features of one refinement level over a square area.

    Attributes:
        features: (C, R, R) float16 features, row 0 at the northern edge (zero where not encoded yet).
        valid: (R, R) bool, cells over valid map (and already encoded).
        confidences: (R, R) float16 in [0, 1], the map branch's confidence of each cell.
        center_xy: (2,) grid x, y of the raster's centre, metres.
        cell_m: cell side, ground metres.
        convergence_rad: meridian convergence at the centre (grid north is this far clockwise of true north).
        scale: UTM point scale factor at the centre (grid metres per ground metre).
        encoder: encodes missing blocks on demand (None: every block is encoded).
        encoded: (R / B, R / B) bool, the blocks encoded so far (B = the encoder's block side).
    """

    features: Tensor
    valid: Tensor
    confidences: Tensor
    center_xy: np.ndarray
    cell_m: float
    convergence_rad: float
    scale: float
    encoder: BlockEncoder | None = None
    encoded: Tensor = field(default_factory=lambda: torch.ones(1, 1, dtype=torch.bool))

    @property
    def size(self) -> int:
        return int(self.valid.shape[-1])

    def to_grid(self, east_m: float, north_m: float) -> np.ndarray:
        """True ground offset (east, north) from the centre -> (2,) grid x, y."""
        dx, dy = true_offset_to_grid(east_m, north_m, convergence_rad=self.convergence_rad, scale=self.scale)
        return np.array([self.center_xy[0] + dx, self.center_xy[1] + dy])

    def from_grid(self, x_m: float, y_m: float) -> tuple[float, float]:
        """Grid x, y -> true ground offset (east, north) from the centre, metres."""
        dx, dy = x_m - self.center_xy[0], y_m - self.center_xy[1]
        return grid_offset_to_true(dx, dy, convergence_rad=self.convergence_rad, scale=self.scale)

    def block_center(self, block_row: int, block_col: int) -> tuple[float, float]:
        """True offset (east, north) of a block's centre from the raster's, metres."""
        block = self.size // self.encoded.shape[-1]
        east = (block_col * block + block / 2 - self.size / 2) * self.cell_m
        north = (self.size / 2 - block_row * block - block / 2) * self.cell_m
        return east, north

    def write_block(self, block_row: int, block_col: int, features: Tensor, confidences: Tensor, valid: Tensor) -> None:
        """Store one encoded block: features (C, B, B), confidences (B, B), valid (B, B)."""
        block = self.size // self.encoded.shape[-1]
        rows = slice(block_row * block, (block_row + 1) * block)
        cols = slice(block_col * block, (block_col + 1) * block)
        self.features[:, rows, cols] = features.to(self.features.dtype)
        self.confidences[rows, cols] = confidences.to(self.confidences.dtype)
        self.valid[rows, cols] = valid
        self.encoded[block_row, block_col] = True

    def ensure(self, rows: slice, cols: slice) -> None:
        """Encode the blocks overlapping cells ``rows`` x ``cols`` that are not encoded yet."""
        if self.encoder is None:
            return
        block, blocks = self.size // self.encoded.shape[-1], self.encoded.shape[-1]
        block_rows = range(max(rows.start, 0) // block, min(math.ceil(rows.stop / block), blocks))
        block_cols = range(max(cols.start, 0) // block, min(math.ceil(cols.stop / block), blocks))
        missing = [(r, c) for r in block_rows for c in block_cols if not self.encoded[r, c]]
        if missing:
            self.encoder.encode(self, missing)

    def ensure_all(self) -> FeatureRaster:
        """Encode every block not encoded yet; returns the raster."""
        self.ensure(slice(0, self.size), slice(0, self.size))
        return self

    def window(self, east_m: float, north_m: float, half_cells: int) -> tuple[Tensor, Tensor, Tensor, float, float]:
        """The (2 half + 1)-cell square around the cell holding (east, north), zero and invalid outside
        (encoding the blocks it overlaps first).

        Returns:
            features (C, S, S) and confidences (S, S), float32; valid (S, S); and the true offset (east, north) of
            the window's centre cell.
        """
        row = math.floor(self.size / 2 - north_m / self.cell_m)
        col = math.floor(east_m / self.cell_m + self.size / 2)
        side = 2 * half_cells + 1
        r0, c0 = row - half_cells, col - half_cells
        rs, cs = slice(max(r0, 0), min(r0 + side, self.size)), slice(max(c0, 0), min(c0 + side, self.size))
        if rs.start < rs.stop and cs.start < cs.stop:
            self.ensure(rs, cs)
        features = torch.zeros(self.features.shape[0], side, side)
        confidences = torch.zeros(side, side)
        valid = torch.zeros(side, side, dtype=torch.bool)
        if rs.start < rs.stop and cs.start < cs.stop:
            target = (slice(rs.start - r0, rs.stop - r0), slice(cs.start - c0, cs.stop - c0))
            features[:, target[0], target[1]] = self.features[:, rs, cs]
            confidences[target] = self.confidences[rs, cs]
            valid[target] = self.valid[rs, cs]
        centre_east = (col + 0.5 - self.size / 2) * self.cell_m
        centre_north = (self.size / 2 - row - 0.5) * self.cell_m
        return features, confidences, valid, centre_east, centre_north

    # ---- storage (an index's members) ----------------------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON facts and arrays (float16 features and confidences, bool validity) of the fully encoded raster."""
        self.ensure_all()
        meta = {
            "center_xy": [float(v) for v in self.center_xy],
            "cell_m": self.cell_m,
            "convergence_rad": self.convergence_rad,
            "scale": self.scale,
            "size": self.size,
        }
        arrays = {"features": self.features, "confidences": self.confidences, "valid": self.valid}
        return meta, {name: tensor.numpy() for name, tensor in arrays.items()}

    @classmethod
    def from_arrays(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> FeatureRaster:
        """The raster :meth:`to_arrays` wrote (raises ValueError on inconsistent shapes)."""
        size = int(meta["size"])
        features, confidences, valid = arrays["features"], arrays["confidences"], arrays["valid"]
        if features.ndim != 3 or features.shape[1:] != (size, size) or confidences.shape != (size, size):
            raise ValueError(f"feature raster arrays {features.shape}, {confidences.shape} do not match size {size}")
        if valid.shape != (size, size) or valid.dtype != np.bool_:
            raise ValueError(f"feature raster validity {valid.shape} {valid.dtype} does not match size {size}")
        return cls(
            torch.from_numpy(features.astype(np.float16, copy=False)),
            torch.from_numpy(valid.copy()),
            torch.from_numpy(confidences.astype(np.float16, copy=False)),
            np.asarray(meta["center_xy"], dtype=np.float64),
            float(meta["cell_m"]),
            float(meta["convergence_rad"]),
            float(meta["scale"]),
        )


def encode_feature_raster(
    model: Any,
    sampler: Any,
    frame: LocalFrame,
    center_xy: tuple[float, float],
    half_extent_m: float,
    *,
    cell_px: int,
    device: str = "cpu",
    lazy: bool = False,
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
        lazy: encode each block when a window first needs it (default: every block now).

    Returns:
        The stitched raster (cells of ``cell_px * gsd`` metres).
    """
    gsd_m = float(sampler.geometry.gsd_m)
    cell_m = cell_px * gsd_m
    needed = max(1, math.ceil(2.0 * half_extent_m / cell_m))
    step = ENCODER_MULTIPLE_PX // math.gcd(ENCODER_MULTIPLE_PX, cell_px)  # cells per encoder multiple
    blocks = math.ceil(needed / BLOCK_CELLS)
    block = step * math.ceil(math.ceil(needed / blocks) / step)  # at most BLOCK_CELLS, as even as the step allows
    margin = step * math.ceil(MARGIN_CELLS / step)
    size = blocks * block
    lat, lon = frame.to_latlon(float(center_xy[0]), float(center_xy[1]))
    probe, _ = sampler.crop(np.asarray(center_xy, dtype=np.float64)[None], size_px=ENCODER_MULTIPLE_PX, device=device)
    with torch.inference_mode():
        channels = int(model.map_refinement_features(probe)[0][-1].shape[1])
    raster = FeatureRaster(
        torch.zeros(channels, size, size, dtype=torch.float16),
        torch.zeros(size, size, dtype=torch.bool),
        torch.zeros(size, size, dtype=torch.float16),
        np.asarray(center_xy, dtype=np.float64),
        cell_m,
        math.radians(float(frame.convergence_deg(lat=lat, lon=lon))),
        float(frame.scale_factor(lat=lat, lon=lon)),
        encoder=BlockEncoder(model, sampler, cell_px, block, margin, device),
        encoded=torch.zeros(blocks, blocks, dtype=torch.bool),
    )
    return raster if lazy else raster.ensure_all()

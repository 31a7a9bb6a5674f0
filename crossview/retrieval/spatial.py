"""Points within a radius: a bucket grid over 2-D points (pure numpy, no I/O).

The chips of an index lie on a regular lattice, so a grid of square cells about one lattice step wide holds
about one chip per cell. Chips are sorted by cell (row-major), so the chips of the cells ``i0..i1`` of one cell
row are one contiguous slice of that order: a disc query visits one slice per cell row of its bounding box,
then keeps the points whose exact distance is within the radius. Queries cost O(rows + candidates), independent
of the number of points.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

MAX_CELLS_PER_POINT = 4
"""The grid never has more than this many cells per point (sparse point sets get coarser cells)."""


class BucketGrid:
    """Square cells over a set of 2-D points, for exact radius queries.

    Args:
        points: (N, 2) float64 coordinates (x, y), metres of the index frame.
        cell_m: cell side in the same units; default: the mean spacing ``sqrt(area / N)`` of the points.
    """

    def __init__(self, points: npt.ArrayLike, cell_m: float | None = None) -> None:
        self.points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        count = len(self.points)
        self.origin = self.points.min(axis=0) if count else np.zeros(2)
        extent = (self.points.max(axis=0) - self.origin) if count else np.zeros(2)
        if cell_m is None:
            area = float(max(extent[0], 1e-9) * max(extent[1], 1e-9))
            cell_m = math.sqrt(area / max(count, 1))
        cell_m = max(float(cell_m), 1e-6)
        # enough cells for ~1 point each, never so many that the cell table dwarfs the points
        while (extent[0] // cell_m + 1) * (extent[1] // cell_m + 1) > MAX_CELLS_PER_POINT * max(count, 1):
            cell_m *= 1.5
        self.cell_m = cell_m
        self.shape = (int(extent[1] // self.cell_m) + 1, int(extent[0] // self.cell_m) + 1)  # (rows, cols)
        cells = self._cell_of(self.points)
        self.order = np.argsort(cells, kind="stable")
        # start[c] .. start[c + 1] is the slice of ``order`` holding the points of cell c
        self.start = np.searchsorted(cells[self.order], np.arange(self.shape[0] * self.shape[1] + 1))

    def _cell_of(self, points: np.ndarray) -> np.ndarray:
        col = ((points[:, 0] - self.origin[0]) // self.cell_m).astype(np.int64)
        row = ((points[:, 1] - self.origin[1]) // self.cell_m).astype(np.int64)
        return row * self.shape[1] + col

    def within(self, x: float, y: float, radius: float) -> np.ndarray:
        """Indices (sorted ascending) of the points at distance <= ``radius`` from (x, y).

        Args:
            x, y: the disc's centre, in the points' frame.
            radius: the disc's radius (>= 0; ``inf`` gives every point).

        Returns:
            (M,) int64 indices into ``points``.
        """
        if not math.isfinite(radius):
            return np.arange(len(self.points), dtype=np.int64)
        rows, cols = self.shape
        col0 = max(int((x - radius - self.origin[0]) // self.cell_m), 0)
        col1 = min(int((x + radius - self.origin[0]) // self.cell_m), cols - 1)
        row0 = max(int((y - radius - self.origin[1]) // self.cell_m), 0)
        row1 = min(int((y + radius - self.origin[1]) // self.cell_m), rows - 1)
        if col0 > col1 or row0 > row1 or not len(self.points):
            return np.zeros(0, dtype=np.int64)
        first = np.arange(row0, row1 + 1) * cols
        slices = [self.order[self.start[c + col0] : self.start[c + col1 + 1]] for c in first]
        candidates = np.concatenate(slices)
        inside = np.hypot(self.points[candidates, 0] - x, self.points[candidates, 1] - y) <= radius
        return np.sort(candidates[inside])

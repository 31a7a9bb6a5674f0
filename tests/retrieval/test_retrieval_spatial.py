"""BucketGrid radius queries against a brute-force distance test."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from crossview.retrieval.spatial import BucketGrid


def brute_force(points: np.ndarray, x: float, y: float, radius: float) -> np.ndarray:
    return np.flatnonzero(np.hypot(points[:, 0] - x, points[:, 1] - y) <= radius)


coordinate = st.floats(-1e4, 1e4, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    points=st.lists(st.tuples(coordinate, coordinate), min_size=1, max_size=60),
    centre=st.tuples(coordinate, coordinate),
    radius=st.floats(0.0, 3e4, allow_nan=False),
    cell=st.one_of(st.none(), st.floats(0.5, 5e3)),
)
def test_within_matches_brute_force(points, centre, radius, cell):
    array = np.array(points, dtype=np.float64)
    grid = BucketGrid(array, cell_m=cell)
    expected = brute_force(array, *centre, radius)
    np.testing.assert_array_equal(grid.within(*centre, radius), expected)


def test_lattice_queries_match_brute_force_and_visit_few_cells():
    rng = np.random.default_rng(0)
    xs, ys = np.meshgrid(np.arange(0, 2000, 10.0), np.arange(0, 1500, 10.0))
    points = np.stack([xs.ravel(), ys.ravel()], axis=-1) + 500_000.0
    grid = BucketGrid(points, cell_m=10.0)
    assert grid.shape == (150, 200)  # one lattice point per cell
    for _ in range(50):
        x, y = rng.uniform(499_900, 502_100), rng.uniform(499_900, 501_600)
        radius = rng.uniform(0, 300)
        np.testing.assert_array_equal(grid.within(x, y, radius), brute_force(points, x, y, radius))


def test_infinite_radius_returns_everything_and_empty_grid_nothing():
    points = np.array([[0.0, 0.0], [5.0, 5.0]])
    np.testing.assert_array_equal(BucketGrid(points).within(1e9, 1e9, math.inf), [0, 1])
    assert len(BucketGrid(np.zeros((0, 2))).within(0.0, 0.0, 10.0)) == 0


def test_points_on_a_line_do_not_blow_up_the_cell_table():
    points = np.stack([np.linspace(0, 1e5, 1000), np.zeros(1000)], axis=-1)
    grid = BucketGrid(points)
    assert grid.shape[0] * grid.shape[1] <= 4 * len(points) + 2
    np.testing.assert_array_equal(grid.within(5e4, 0.0, 250.0), brute_force(points, 5e4, 0.0, 250.0))

"""Exhaustive dense matching (crossview.retrieval.dense) on exact synthetic features: a random smooth feature field
on the ground plane sampled by a north-up map raster and ray-cast into a panorama or pinhole image at a known pose
(tests/refinement/refinement_fixtures.py, independent of crossview.geometry)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from refinement.refinement_fixtures import make_scene

from crossview.geometry.cameras import PanoramaCamera, PinholeCamera
from crossview.retrieval.dense import (
    BevTemplates,
    bev_templates,
    correlate,
    find_peaks,
    template_offsets_m,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

MAP_EXTENT_M = 96.0
MAP_CELLS = 64  # 1.5 m cells
CELL_M = MAP_EXTENT_M / MAP_CELLS
HEADINGS = 64
BIN_DEG = 360.0 / HEADINGS


def search(truth, camera: str = "panorama", *, seed: int = 0, ground_hw=(32, 128), hfov_deg: float = 90.0):
    """Best (row, col, heading) of the dense search for a scene with the camera at ``truth`` (east, north, deg)
    in a map centred on (0, 0); returns the peak and its (east, north) position in metres."""
    scene = make_scene(
        truth,
        (0.0, 0.0),
        ground_hw=[ground_hw],
        chip_px=[MAP_CELLS],
        chip_extent_m=MAP_EXTENT_M,
        channels=16,
        camera=camera,
        hfov_deg=hfov_deg,
        wavelength_cells=(3.0, 12.0),
        seed=seed,
    )
    height, width = ground_hw
    cam = PanoramaCamera(width, height) if camera == "panorama" else PinholeCamera.from_hfov(width, height, hfov_deg)
    headings = torch.arange(HEADINGS, dtype=torch.float32) * (2 * math.pi / HEADINGS)
    templates = bev_templates(
        scene.ground_feats[0].float(), scene.ground_confs[0].float(), cam, 1.6, cell_m=CELL_M, headings_rad=headings
    )
    scores = correlate(scene.chip_feats[0][0].float(), templates)
    allowed = torch.ones(MAP_CELLS, MAP_CELLS, dtype=torch.bool)
    peak = find_peaks(scores, allowed, 1, min_separation_cells=4)[0]
    east = (peak.col + peak.d_col + 0.5 - MAP_CELLS / 2) * CELL_M
    north = (MAP_CELLS / 2 - peak.row - peak.d_row - 0.5) * CELL_M
    return peak, east, north


def heading_error_deg(a_rad: float, b_deg: float) -> float:
    return abs((math.degrees(a_rad) - b_deg + 180.0) % 360.0 - 180.0)


@pytest.mark.parametrize(
    ("rows", "cols", "k"),
    [
        (23, 31, 7),
        (27, 29, 7),  # S + k // 2 = 30 and 32, already FFT sizes: the tightest padding that is exact
        (2, 3, 9),  # a map smaller than the template
    ],
)
def test_fft_correlation_equals_direct_convolution(rows: int, cols: int, k: int):
    generator = torch.Generator().manual_seed(0)
    map_features = torch.randn(5, rows, cols, generator=generator)
    features = torch.randn(3, 5, k, k, generator=generator)
    weights = torch.rand(3, 1, k, k, generator=generator)
    templates = BevTemplates(features, weights, torch.zeros(3), 1.0)
    direct = F.conv2d(map_features[None], features, padding=k // 2)[0] / weights.sum(dim=(1, 2, 3))[:, None, None]
    torch.testing.assert_close(correlate(map_features, templates), direct, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("camera", ["panorama", "pinhole"])
def test_templates_of_quarter_turned_headings_are_the_sampled_ones_turned(camera: str):
    generator = torch.Generator().manual_seed(1)
    features, confidence = torch.randn(1, 6, 16, 64, generator=generator), torch.rand(1, 1, 16, 64, generator=generator)
    cam = PanoramaCamera(64, 16) if camera == "panorama" else PinholeCamera.from_hfov(64, 16, 100.0)
    common = {"cell_m": 1.0, "max_range_m": 9.0, "min_range_m": 1.0}
    headings = 0.3 + torch.arange(8, dtype=torch.float32) * (2 * math.pi / 8)
    turned = bev_templates(features, confidence, cam, 1.6, headings_rad=headings, **common)
    assert turned.quarter_turns and turned.features.shape == (8, 6, 19, 19)
    for n, heading in enumerate(headings):  # one heading alone is sampled
        sampled = bev_templates(features, confidence, cam, 1.6, headings_rad=heading[None], **common)
        assert not sampled.quarter_turns
        torch.testing.assert_close(turned.features[n], sampled.features[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(turned.weights[n], sampled.weights[0], atol=1e-4, rtol=1e-4)
    uneven = bev_templates(features, confidence, cam, 1.6, headings_rad=headings[:6], **common)
    assert not uneven.quarter_turns


def test_correlation_of_quarter_turned_templates_equals_direct_convolution():
    generator = torch.Generator().manual_seed(2)
    map_features = torch.randn(5, 21, 34, generator=generator)  # not square: turned maps change shape
    base = torch.randn(2, 5, 7, 7, generator=generator)
    base_weights = torch.rand(2, 1, 7, 7, generator=generator)
    features = torch.cat([torch.rot90(base, -q, dims=(-2, -1)) for q in range(4)])  # clockwise quarter turns
    weights = torch.cat([torch.rot90(base_weights, -q, dims=(-2, -1)) for q in range(4)])
    templates = BevTemplates(features, weights, torch.arange(8) * (math.pi / 4), 1.0, quarter_turns=True)
    direct = F.conv2d(map_features[None], features, padding=3)[0] / weights.sum(dim=(1, 2, 3))[:, None, None]
    torch.testing.assert_close(correlate(map_features, templates), direct, atol=1e-4, rtol=1e-4)


def test_templates_keep_only_the_ring_and_what_the_camera_sees():
    features = torch.ones(1, 4, 64, 64)  # 90 degrees both ways: the ground from 1.6 m out
    confidence = torch.ones(1, 1, 64, 64)
    headings = torch.tensor([0.0, math.pi / 2])
    templates = bev_templates(
        features,
        confidence,
        PinholeCamera.from_hfov(64, 64, 90.0),
        1.6,
        cell_m=1.0,
        headings_rad=headings,
        max_range_m=10.0,
        min_range_m=3.0,
    )
    offsets = template_offsets_m(templates.radius_cells, 1.0)
    distance = offsets.norm(dim=-1)
    seen = templates.weights[:, 0] > 0
    assert not seen[:, (distance < 3.0) | (distance > 10.0)].any()
    east, north = offsets[..., 0], offsets[..., 1]
    assert not seen[0][north <= 0].any() and seen[0][(north > 4) & (east.abs() < north * 0.9) & (distance < 10)].all()
    assert not seen[1][east <= 0].any() and seen[1][(east > 4) & (north.abs() < east * 0.9) & (distance < 10)].all()


def test_panorama_on_a_cell_centre_and_a_heading_bin_is_found_exactly():
    truth = (3 * CELL_M + CELL_M / 2, -5 * CELL_M + CELL_M / 2, 10 * BIN_DEG)
    peak, east, north = search(truth)
    cell_centre = ((peak.col + 0.5 - MAP_CELLS / 2) * CELL_M, (MAP_CELLS / 2 - peak.row - 0.5) * CELL_M)
    assert cell_centre == pytest.approx(truth[:2], abs=1e-6)  # the right cell, and the vertex near its centre
    assert (east, north) == pytest.approx(truth[:2], abs=CELL_M / 4)
    assert heading_error_deg(peak.heading_rad, truth[2]) < BIN_DEG / 4


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_panorama_anywhere_is_found_within_a_cell_and_a_heading_bin(seed):
    generator = torch.Generator().manual_seed(seed)
    east0, north0 = ((torch.rand(2, generator=generator) - 0.5) * 40).tolist()
    heading = float(torch.rand(1, generator=generator)) * 360.0
    peak, east, north = search((east0, north0, heading), seed=seed)
    assert math.hypot(east - east0, north - north0) <= CELL_M
    assert heading_error_deg(peak.heading_rad, heading) <= BIN_DEG


@pytest.mark.parametrize("heading", [30.0, 200.0])
def test_pinhole_view_is_found_within_a_cell_and_a_heading_bin(heading):
    truth = (4.2, -7.9, heading)
    peak, east, north = search(truth, "pinhole", ground_hw=(48, 64), seed=5)
    assert math.hypot(east - truth[0], north - truth[1]) <= CELL_M
    assert heading_error_deg(peak.heading_rad, heading) <= BIN_DEG


def test_peaks_are_separated_allowed_and_best_first():
    scores = torch.zeros(8, 20, 20)
    scores[2, 5, 5], scores[3, 5, 6], scores[6, 15, 15], scores[1, 2, 18] = 5.0, 4.0, 3.0, 9.0
    allowed = torch.ones(20, 20, dtype=torch.bool)
    allowed[2, 18] = False
    peaks = find_peaks(scores, allowed, 3, min_separation_cells=3)
    assert [(p.row, p.col) for p in peaks] == [(5, 5), (15, 15), (0, 0)]
    assert [p.score for p in peaks] == [5.0, 3.0, 0.0]
    assert find_peaks(scores, torch.zeros(20, 20, dtype=torch.bool), 3, min_separation_cells=3) == []


def test_heading_is_interpolated_between_bins():
    bins = 16
    true_bin = 6.3
    profile = -((torch.arange(bins, dtype=torch.float32) - true_bin) ** 2)
    scores = profile[:, None, None].expand(bins, 3, 3).clone()
    peak = find_peaks(scores, torch.ones(3, 3, dtype=torch.bool), 1, min_separation_cells=1)[0]
    assert peak.heading_rad == pytest.approx(true_bin * 2 * math.pi / bins, abs=1e-5)


def test_position_is_interpolated_between_cells():
    rows, cols = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij")
    true_row, true_col = 4.3, 6.8
    plane = -((rows - true_row) ** 2) - 2.0 * (cols - true_col) ** 2
    scores = torch.stack([plane - 1.0, plane, plane - 1.0])
    peak = find_peaks(scores, torch.ones(9, 11, dtype=torch.bool), 1, min_separation_cells=1)[0]
    assert (peak.row, peak.col) == (4, 7)
    assert peak.row + peak.d_row == pytest.approx(true_row, abs=1e-5)
    assert peak.col + peak.d_col == pytest.approx(true_col, abs=1e-5)
    edge = find_peaks(scores[:, :, :1], torch.ones(9, 1, dtype=torch.bool), 1, min_separation_cells=1)[0]
    assert edge.d_col == 0.0  # no neighbours on either side: no shift
    allowed = torch.ones(9, 11, dtype=torch.bool)
    allowed[:, 8] = False  # the vertex lies towards a cell that may not be chosen: it stays on the peak's column
    inside = find_peaks(scores, allowed, 1, min_separation_cells=1)[0]
    assert (inside.col, inside.d_col) == (7, 0.0) and inside.row + inside.d_row == pytest.approx(true_row, abs=1e-5)

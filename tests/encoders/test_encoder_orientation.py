"""Orientation-aware matching (DSM): the correlation against a direct evaluation, exact headings on hand-made
columns, and end to end with randomly initialised models on scenes rendered with DESIGN.md's conventions."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from encoder_fixtures import (
    blob_chip,
    circular_angle_diff_deg,
    render_panorama_from_chip,
    render_pinhole_from_panorama,
    tiny_model,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from crossview.encoders import AerialEncoding, GroundEncoding
from crossview.encoders.orientation import canvas_mask, orientation_scores, place_on_canvas, window_width
from crossview.geometry.polar import polar_column_azimuth_deg, polar_transform

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# --- the correlation itself ----------------------------------------------------------------------------------


def _direct_scores(canvas: torch.Tensor, mask: torch.Tensor, aerial: torch.Tensor) -> torch.Tensor:
    """score[g, a, s] = sum_j m_j <G_j, A_(j+s)> / (|G| sqrt(sum_j m_j |A_(j+s)|^2)), by loops."""
    bg, _, wc = canvas.shape
    out = torch.zeros(bg, aerial.shape[0], wc, dtype=torch.float64)
    for g in range(bg):
        for a in range(aerial.shape[0]):
            for s in range(wc):
                shifted = torch.roll(aerial[a], -s, dims=-1)  # column j holds A_(j+s)
                numerator = (canvas[g] * shifted * mask[g]).sum()
                window = ((shifted**2).sum(0) * mask[g]).sum()
                out[g, a, s] = numerator / (canvas[g].norm() * window.sqrt())
    return out


def test_orientation_scores_match_a_direct_evaluation() -> None:
    generator = torch.Generator().manual_seed(0)
    aerial = torch.randn(3, 6, 16, generator=generator, dtype=torch.float64)
    fov = torch.tensor([1.0, 0.3, 0.12], dtype=torch.float64)
    columns = torch.randn(3, 6, window_width(0.3, 16), generator=generator, dtype=torch.float64)
    columns[0] = 0
    full = torch.randn(1, 6, 16, generator=generator, dtype=torch.float64)
    canvas, mask = place_on_canvas(columns, fov, 16)
    canvas[0] = full[0]  # the first ground is a full panorama
    expected = _direct_scores(canvas, mask, aerial)
    # eps = 1e-8 guards the division: relative differences of that order are expected
    torch.testing.assert_close(orientation_scores(canvas, mask, aerial), expected, rtol=1e-7, atol=1e-8)


def test_canvas_windows_cover_the_field_of_view() -> None:
    assert window_width(1.0, 16) == 16
    assert window_width(0.25, 16) == 5  # columns 6..10: +-45 degrees around the centre column 8
    mask = canvas_mask(torch.tensor([1.0, 0.25]), 16)
    assert mask[0].sum() == 16
    assert mask[1].nonzero().flatten().tolist() == [6, 7, 8, 9, 10]


@settings(max_examples=30, deadline=None)
@given(
    shift=st.integers(min_value=0, max_value=31),
    fov_deg=st.sampled_from([360.0, 170.0, 90.0, 40.0]),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_hand_made_columns_give_the_exact_heading_and_similarity_one(shift: int, fov_deg: float, seed: int) -> None:
    """Ground columns that are the aerial columns seen at heading psi = 360 shift / Wc: found exactly, score 1."""
    wc, dc = 32, 8
    generator = torch.Generator().manual_seed(seed)
    aerial_columns = torch.randn(3, dc, wc, generator=generator)
    fov = fov_deg / 360.0
    width = window_width(fov, wc)
    start = wc // 2 - width // 2
    # Ground canvas column j looks 360 (j - Wc/2) / Wc from the centre column, i.e. at psi - 180 + 360 j / Wc:
    # aerial column (j + shift) mod Wc, whose azimuth is 180 + 360 (j + shift) / Wc.
    index = (torch.arange(start, start + width) + shift) % wc
    ground_columns = aerial_columns[1][:, index].unsqueeze(0)
    ground = GroundEncoding(
        descriptor=torch.zeros(1, 4), columns=ground_columns, column_fov=torch.tensor([fov]), heading_known=False
    )
    aerial = AerialEncoding(descriptor=torch.zeros(3, 4), columns=aerial_columns)
    model = _matching_only_model()
    scores, heading = model.similarity(ground, aerial, unknown_heading=True, subcolumn=False)
    assert heading[0, 1].item() == pytest.approx(360.0 * shift / wc, abs=1e-4)
    assert scores[0, 1].item() == pytest.approx(1.0, abs=1e-5)
    assert scores[0, 1] >= scores[0].max() - 1e-6


@functools.cache
def _matching_only_model():
    # similarity() uses no weights on this path: one small model serves every Hypothesis example.
    return tiny_model(pano_height=32, pano_width=128, polar_height=32, polar_width=128)


# --- conventions -----------------------------------------------------------------------------------------------


def test_convention_polar_and_north_aligned_panorama_columns_line_up_within_half_a_pixel() -> None:
    """DESIGN: a heading-0 panorama and the polar image line up column for column. Panorama pixel k (centre
    k + 0.5) looks at (k + 0.5)/W 360 - 180; polar column k at 180 + 360 k / W: the same up to half a pixel."""
    width = 512
    pano_deg = torch.remainder((torch.arange(width, dtype=torch.float64) + 0.5) / width * 360 - 180, 360)
    diff = circular_angle_diff_deg(pano_deg, polar_column_azimuth_deg(width))
    torch.testing.assert_close(diff, torch.full_like(diff, 180.0 / width))


@pytest.mark.parametrize("heading_deg", [0.0, 90.0, 202.5])
def test_convention_heading_of_a_panorama_rolled_from_a_polar_view(heading_deg: float) -> None:
    """A north-aligned panorama made from a chip's polar view (stretched to panorama size) gives heading ~0;
    the same panorama turned to heading psi (columns shifted left by psi/360 W, DESIGN's panorama mapping)
    gives psi, within one column. Random weights, ground branch = aerial branch: geometry decides alone."""
    model = tiny_model(shared=True)
    wc = model.azimuth_columns
    chips = torch.cat([blob_chip(64, seed=0), blob_chip(64, seed=7)])
    pano = F.interpolate(polar_transform(chips[:1], 32, 256), size=(64, 256), mode="bilinear", align_corners=False)
    turned = torch.roll(pano, shifts=-round(heading_deg / 360 * 256), dims=-1)
    with torch.no_grad():
        scores, heading = model.similarity(
            model.encode_ground(turned), model.encode_aerial(chips), unknown_heading=True
        )
    assert circular_angle_diff_deg(heading[0, 0], heading_deg) <= 360 / wc / 2 + 1e-4
    assert scores[0, 0] > scores[0, 1] and scores[0, 0] > 0.99


@pytest.mark.parametrize("yaw_deg", [0.0, 90.0, 200.0])
def test_convention_pinhole_view_gives_the_heading_of_its_centre(yaw_deg: float) -> None:
    """A level pinhole view cut from that panorama, looking yaw clockwise of north: its heading, within 1.5
    columns (random weights see a 120° window with blurred, border-extended rows)."""
    model = tiny_model(shared=True, pano_width=512, polar_width=512)
    wc = model.azimuth_columns
    chip = blob_chip(64, seed=3, blobs=20)
    pano = F.interpolate(polar_transform(chip, 32, 512), size=(64, 512), mode="bilinear", align_corners=False)
    pinhole = render_pinhole_from_panorama(pano, yaw_deg=yaw_deg, hfov_deg=120.0, size=(64, 96))
    with torch.no_grad():
        ground = model.encode_ground(pinhole, camera="pinhole", hfov_deg=120.0)
        _, heading = model.similarity(ground, model.encode_aerial(chip), unknown_heading=True)
    assert ground.columns.shape[-1] == window_width(120 / 360, wc)
    assert circular_angle_diff_deg(heading[0, 0], yaw_deg) <= 1.5 * 360 / wc


def test_convention_bev_variant_finds_the_heading_of_a_rendered_panorama() -> None:
    """bev-resnet18 on panoramas rendered independently from a chip (flat ground, camera 2 m up, heading psi
    clockwise from north): heading psi within half a column, the true chip first; also for a pinhole view."""
    model = tiny_model("bev-resnet18", shared=True, bev_size=64, aerial_extent_m=32.0, camera_height_m=2.0)
    wc = model.azimuth_columns
    chip = blob_chip(64, seed=4, blobs=20)
    chips = torch.cat([chip, blob_chip(64, seed=5, blobs=20)])
    for heading_deg in (90.0, 202.5):
        pano = render_panorama_from_chip(chip, heading_deg=heading_deg, height_m=2.0, gsd_m=0.5, size=(128, 512))
        pinhole = render_pinhole_from_panorama(pano, yaw_deg=0.0, hfov_deg=120.0, size=(96, 128))
        with torch.no_grad():
            aerial = model.encode_aerial(chips)
            for ground in (
                model.encode_ground(pano),
                model.encode_ground(pinhole, camera="pinhole", hfov_deg=120.0),
            ):
                scores, heading = model.similarity(ground, aerial, unknown_heading=True)
                assert circular_angle_diff_deg(heading[0, 0], heading_deg) <= 360 / wc / 2 + 1e-4
                assert scores[0, 0] > scores[0, 1]


@pytest.mark.parametrize("shift", [0.0, 0.3, 2.5, 7.8, 15.6])
def test_subcolumn_peak_finds_fractional_shifts_of_smooth_columns(shift: float) -> None:
    """Smooth (low-frequency) column features turned by a fractional number of columns: the parabolic peak
    recovers the shift within a tenth of a column, the integer search only within half a column."""
    from crossview.encoders.orientation import orientation_scores, refine_peak

    wc, channels = 16, 6
    azimuth = torch.arange(wc, dtype=torch.float64) * 2 * torch.pi / wc
    phases = torch.linspace(0, 2, channels, dtype=torch.float64)[:, None]
    aerial = torch.cos(azimuth[None, :] + phases)[None]  # (1, C, Wc): one harmonic per channel
    ground = torch.cos(azimuth[None, :] + 2 * torch.pi * shift / wc + phases)[None]
    per_shift = orientation_scores(ground, torch.ones(1, wc, dtype=torch.float64), aerial)
    best = per_shift.argmax(dim=-1)
    refined = refine_peak(per_shift, best)[0, 0].item()
    error = (refined - shift + wc / 2) % wc - wc / 2
    assert abs(error) < 0.1
    assert abs((best[0, 0].item() - shift + wc / 2) % wc - wc / 2) <= 0.5 + 1e-9

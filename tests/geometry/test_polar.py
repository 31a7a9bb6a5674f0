"""SAFA polar transform and panorama heading alignment, against a direct evaluation of DESIGN.md's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossview.geometry.polar import (
    align_panorama_to_north,
    polar_column_azimuth_deg,
    polar_sampling_grid,
    polar_transform,
)

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")),
]


# --- independent reference: DESIGN.md's formula, evaluated pixel by pixel -----------------------------------


def bilinear_at_index(chip: np.ndarray, row: float, col: float) -> np.ndarray:
    """Bilinear value of chip (C, S, S) at array indices (row, col); neighbours outside contribute zero."""
    size = chip.shape[-1]
    row0, col0 = math.floor(row), math.floor(col)
    value = np.zeros(chip.shape[0])
    for r, w_row in ((row0, 1.0 - (row - row0)), (row0 + 1, row - row0)):
        for c, w_col in ((col0, 1.0 - (col - col0)), (col0 + 1, col - col0)):
            if 0 <= r < size and 0 <= c < size:
                value += w_row * w_col * chip[:, r, c]
    return value


def reference_polar(chip: np.ndarray, height: int, width: int, d_col: float = 0.0, d_row: float = 0.0) -> np.ndarray:
    """r_i = (S/2)(H-1-i)/H, theta_j = 2 pi j / W, row = S/2 + d_row + r cos, col = S/2 + d_col - r sin."""
    size = chip.shape[-1]
    out = np.zeros((chip.shape[0], height, width))
    for i in range(height):
        r = size / 2 * (height - 1 - i) / height
        for j in range(width):
            theta = 2 * math.pi * j / width
            row = size / 2 + d_row + r * math.cos(theta)
            col = size / 2 + d_col - r * math.sin(theta)
            out[:, i, j] = bilinear_at_index(chip, row, col)
    return out


def random_chips(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- exactness -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "height", "width"), [(9, 8, 16), (10, 5, 12), (32, 8, 16), (10, 8, 16)])
def test_polar_transform_matches_reference_float64(size: int, height: int, width: int) -> None:
    chips = random_chips(2, 3, size)
    out = polar_transform(chips, height, width)
    assert out.shape == (2, 3, height, width) and out.dtype == torch.float64
    for b in range(2):
        expected = reference_polar(chips[b].numpy(), height, width)
        np.testing.assert_allclose(out[b].numpy(), expected, rtol=0, atol=1e-10)


def test_polar_transform_uint8_matches_reference_on_input_scale() -> None:
    chips = (random_chips(2, 3, 10) * 255).round().to(torch.uint8)
    out = polar_transform(chips, 5, 12)
    assert out.dtype == torch.float32
    for b in range(2):
        expected = reference_polar(chips[b].numpy().astype(np.float64), 5, 12)
        np.testing.assert_allclose(out[b].numpy(), expected, rtol=0, atol=2e-3)
    assert out.max() > 100  # on the 0..255 scale, not divided by 255


@pytest.mark.parametrize("offset", [(1.25, -0.5), (-2.7, 3.1), (0.0, 4.0)])
def test_polar_transform_offset_matches_reference(offset: tuple[float, float]) -> None:
    chips = random_chips(2, 2, 10, seed=1)
    out = polar_transform(chips, 5, 12, offset_px=offset)
    for b in range(2):
        expected = reference_polar(chips[b].numpy(), 5, 12, d_col=offset[0], d_row=offset[1])
        np.testing.assert_allclose(out[b].numpy(), expected, rtol=0, atol=1e-10)


def test_polar_transform_batched_offsets_equal_per_sample_calls() -> None:
    chips = random_chips(4, 3, 32, seed=2)
    offsets = torch.tensor([[0.0, 0.0], [1.5, -2.25], [-3.0, 0.7], [5.5, 4.0]], dtype=torch.float64)
    batched = polar_transform(chips, 8, 16, offset_px=offsets)
    for b in range(4):
        single = polar_transform(chips[b : b + 1], 8, 16, offset_px=offsets[b])
        torch.testing.assert_close(batched[b : b + 1], single, rtol=0, atol=1e-12)
    expected = reference_polar(chips[3].numpy(), 8, 16, d_col=5.5, d_row=4.0)
    np.testing.assert_allclose(batched[3].numpy(), expected, rtol=0, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(2, 16),
    height=st.integers(1, 6),
    width=st.integers(1, 12),
    d_col=st.floats(-6, 6, allow_nan=False),
    d_row=st.floats(-6, 6, allow_nan=False),
)
def test_polar_transform_matches_reference_any_size(
    size: int, height: int, width: int, d_col: float, d_row: float
) -> None:
    chips = random_chips(1, 1, size, seed=size)
    out = polar_transform(chips, height, width, offset_px=(d_col, d_row))
    expected = reference_polar(chips[0].numpy(), height, width, d_col=d_col, d_row=d_row)
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=0, atol=1e-10)


def test_polar_transform_cpu_fast_path_equals_autograd_path() -> None:
    # Without grad the CPU path stages a few chips at a time; with grad it is one grid_sample over the batch.
    # 5 chips leave a ragged last chunk; channels_last exercises the staging buffer's memory format.
    chips = (random_chips(5, 3, 32, seed=3) * 255).to(torch.float32)
    chips = chips.contiguous(memory_format=torch.channels_last)
    offsets = torch.randn(5, 2, generator=torch.Generator().manual_seed(0)) * 3
    fast = polar_transform(chips.to(torch.uint8), 8, 16, offset_px=offsets)
    slow = polar_transform(chips.to(torch.uint8).float().requires_grad_(), 8, 16, offset_px=offsets)
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=0)


# --- conventions ---------------------------------------------------------------------------------------------


def chip_with_disk(size: int, bearing_deg: float, distance_px: float, radius_px: float = 2.5) -> torch.Tensor:
    """A (1, 1, S, S) north-up chip, bright only in a disk at a compass bearing from the centre index S/2."""
    beta = math.radians(bearing_deg)
    row_c = size / 2 - distance_px * math.cos(beta)  # north is up: smaller row
    col_c = size / 2 + distance_px * math.sin(beta)  # east is right: larger column
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = (rows - row_c) ** 2 + (cols - col_c) ** 2 <= radius_px**2
    return disk.to(torch.float32)[None, None]


def bright_column(image: torch.Tensor) -> int:
    return int(image[0, 0].sum(dim=0).argmax())


def circular_distance(a: float, b: float, period: float) -> float:
    d = abs(a - b) % period
    return min(d, period - d)


@pytest.mark.parametrize(
    ("bearing_deg", "expected_column_of_w"), [(0.0, 0.5), (90.0, 0.75), (180.0, 0.0), (270.0, 0.25)]
)
def test_convention_polar_north_is_centre_column(bearing_deg: float, expected_column_of_w: float) -> None:
    width = 32
    polar = polar_transform(chip_with_disk(64, bearing_deg, 16.0), 16, width)
    assert circular_distance(bright_column(polar), expected_column_of_w * width, width) <= 1


@pytest.mark.parametrize("bearing_deg", [0.0, 30.0, 135.0, 250.0, 333.0])
def test_convention_polar_column_azimuth_is_compass_bearing(bearing_deg: float) -> None:
    width = 72
    polar = polar_transform(chip_with_disk(96, bearing_deg, 30.0), 16, width)
    azimuth_deg = polar_column_azimuth_deg(width)[bright_column(polar)].item()
    assert circular_distance(azimuth_deg, bearing_deg, 360.0) <= 360.0 / width
    assert polar_column_azimuth_deg(width)[width // 2] == 0.0


def test_polar_column_azimuth_deg_range() -> None:
    azimuth_deg = polar_column_azimuth_deg(12)
    assert azimuth_deg.shape == (12,)
    assert ((azimuth_deg >= 0) & (azimuth_deg < 360)).all()
    assert azimuth_deg[0] == 180.0 and azimuth_deg[3] == 270.0 and azimuth_deg[9] == 90.0


def test_convention_polar_rows_near_to_far() -> None:
    # f = row index (or column index) is linear, so bilinear sampling returns the sampled index itself.
    size, height, width = 64, 16, 32
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    by_row = polar_transform(rows.to(torch.float64)[None, None], height, width)[0, 0]
    by_col = polar_transform(cols.to(torch.float64)[None, None], height, width)[0, 0]
    radius_px = torch.tensor([size / 2 * (height - 1 - i) / height for i in range(height)], dtype=torch.float64)
    torch.testing.assert_close(by_row[:, 0] - size / 2, radius_px)  # column 0 looks south (down)
    torch.testing.assert_close(size / 2 - by_row[:, width // 2], radius_px)  # centre column looks north
    torch.testing.assert_close(size / 2 - by_col[:, width // 4], radius_px)  # a quarter turn: west (left)
    assert by_row[height - 1, 0] == size / 2  # last row: the centre itself
    assert by_row[0, 0] - size / 2 == pytest.approx(size / 2 * (height - 1) / height)  # row 0: the farthest


def synthetic_panorama(heading_deg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 2, H, W) float64 panoramas of headings psi of a known azimuth function (column u centre: u + 0.5)."""
    u = torch.arange(width, dtype=torch.float64)
    azimuth_rad = torch.deg2rad(heading_deg[:, None] + ((u[None, :] + 0.5) / width - 0.5) * 360.0)
    f = torch.stack((torch.cos(azimuth_rad) + 0.5 * torch.sin(2 * azimuth_rad), torch.sin(3 * azimuth_rad)), 1)
    rows = torch.linspace(1.0, 2.0, height, dtype=torch.float64)
    return f[:, :, None, :] * rows[None, None, :, None]


@pytest.mark.parametrize("heading_deg", [0.0, 45.0, 90.0, 202.5, 337.5, -90.0, 720.0])
def test_convention_panorama_heading_roll_integral(heading_deg: float) -> None:
    width = 16  # every heading above is a whole number of 22.5-degree columns
    pano = synthetic_panorama(torch.tensor([heading_deg], dtype=torch.float64), 4, width)
    north = synthetic_panorama(torch.zeros(1, dtype=torch.float64), 4, width)
    torch.testing.assert_close(align_panorama_to_north(pano, heading_deg), north, rtol=0, atol=1e-12)
    shift = round(heading_deg / 360 * width)
    assert torch.equal(align_panorama_to_north(pano, heading_deg), torch.roll(pano, shift, dims=-1))


@pytest.mark.parametrize("heading_deg", [0.3, 17.25, 181.6, 359.9])
def test_convention_panorama_heading_roll_fractional(heading_deg: float) -> None:
    width = 360
    pano = synthetic_panorama(torch.tensor([heading_deg], dtype=torch.float64), 3, width)
    north = synthetic_panorama(torch.zeros(1, dtype=torch.float64), 3, width)
    aligned = align_panorama_to_north(pano, heading_deg)
    torch.testing.assert_close(aligned, north, rtol=0, atol=1e-3)  # linear interpolation of a smooth f
    # and exactly the circular linear interpolation between the two neighbouring whole rolls
    shift = heading_deg / 360 * width
    whole, fraction = math.floor(shift), shift - math.floor(shift)
    p = pano.numpy()
    expected = (1 - fraction) * np.roll(p, whole, axis=-1) + fraction * np.roll(p, whole + 1, axis=-1)
    np.testing.assert_allclose(aligned.numpy(), expected, rtol=0, atol=1e-12)


def test_convention_panorama_heading_roll_per_sample() -> None:
    headings = torch.tensor([0.0, 90.0, 12.5, 300.0], dtype=torch.float64)
    pano = synthetic_panorama(headings, 3, 360)
    aligned = align_panorama_to_north(pano, headings)
    north = synthetic_panorama(torch.zeros(4, dtype=torch.float64), 3, 360)
    torch.testing.assert_close(aligned, north, rtol=0, atol=1e-3)
    for b, heading_deg in enumerate(headings.tolist()):
        torch.testing.assert_close(aligned[b], align_panorama_to_north(pano[b : b + 1], heading_deg)[0])
    assert torch.equal(aligned[1], torch.roll(pano[1], 90, dims=-1))


def test_convention_polar_lines_up_with_aligned_panorama() -> None:
    # A landmark at compass bearing beta: bright polar column == bright column of the north-aligned panorama.
    width, heading_deg, bearing_deg = 64, 123.75, 250.0
    polar = polar_transform(chip_with_disk(96, bearing_deg, 30.0), 16, width)
    u = torch.arange(width, dtype=torch.float64)
    azimuth_deg = heading_deg + ((u + 0.5) / width - 0.5) * 360.0
    pano = torch.cos(torch.deg2rad(azimuth_deg - bearing_deg)).clamp(min=0) ** 8
    aligned = align_panorama_to_north(pano.view(1, 1, 1, width), heading_deg)
    assert circular_distance(bright_column(aligned), bright_column(polar), width) <= 1


# --- dtypes, devices, gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("dtype", "out_dtype", "atol"),
    [
        (torch.float64, torch.float64, 1e-10),
        (torch.float32, torch.float32, 1e-5),
        (torch.float16, torch.float16, 2e-3),
        (torch.bfloat16, torch.bfloat16, 1e-2),
        (torch.uint8, torch.float32, 2e-3),
        (torch.int16, torch.float32, 2e-3),
    ],
)
def test_polar_transform_dtypes(device: str, dtype: torch.dtype, out_dtype: torch.dtype, atol: float) -> None:
    scale = 1.0 if dtype.is_floating_point else 200.0
    chips = (random_chips(2, 3, 10, seed=4) * scale).to(dtype)
    out = polar_transform(chips.to(device), 5, 12, offset_px=torch.tensor([0.5, -1.0], device=device))
    assert out.dtype == out_dtype and out.device.type == device and out.shape == (2, 3, 5, 12)
    expected = reference_polar(chips[1].double().numpy(), 5, 12, d_col=0.5, d_row=-1.0)
    np.testing.assert_allclose(out[1].double().cpu().numpy(), expected, rtol=0, atol=atol * scale)


@pytest.mark.parametrize("device", DEVICES)
def test_align_panorama_dtypes(device: str) -> None:
    pano = torch.randint(0, 256, (2, 3, 4, 8), dtype=torch.uint8, device=device)
    aligned = align_panorama_to_north(pano, 45.0)
    assert aligned.dtype == torch.float32 and aligned.device.type == device
    assert torch.equal(aligned, torch.roll(pano.float(), 1, dims=-1))
    half = align_panorama_to_north(pano.to(torch.float16), torch.tensor([22.5, 90.0]))
    assert half.dtype == torch.float16 and half.device.type == device


def test_polar_transform_gradcheck_aerial() -> None:
    chips = random_chips(2, 1, 6, seed=5).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: polar_transform(x, 3, 5, offset_px=(0.3, -0.2)), (chips,))


def test_polar_transform_gradcheck_offset() -> None:
    chips = random_chips(2, 2, 8, seed=6)
    offsets = torch.tensor([[0.237, -0.311], [-0.413, 0.129]], dtype=torch.float64)
    # bilinear sampling has kinks where a sample crosses an integer index: keep every sample away from them
    for d_col, d_row in offsets.tolist():
        for i in range(3):
            r = 4 * (2 - i) / 3
            for j in range(5):
                theta = 2 * math.pi * j / 5
                for index in (4 + d_row + r * math.cos(theta), 4 + d_col - r * math.sin(theta)):
                    assert abs(index - round(index)) > 1e-3
    offsets.requires_grad_()
    assert torch.autograd.gradcheck(lambda d: polar_transform(chips, 3, 5, offset_px=d), (offsets,))


def test_polar_transform_gradients_flow_in_float32() -> None:
    chips = torch.rand(2, 3, 16, 16, requires_grad=True)
    offsets = torch.tensor([[0.4, 0.3], [-1.2, 2.1]], requires_grad=True)
    polar_transform(chips, 4, 8, offset_px=offsets).square().sum().backward()
    assert chips.grad is not None and chips.grad.abs().sum() > 0
    assert offsets.grad is not None and torch.isfinite(offsets.grad).all() and offsets.grad.abs().sum() > 0


def test_align_panorama_gradients_flow() -> None:
    pano = torch.rand(2, 1, 2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: align_panorama_to_north(p, torch.tensor([10.0, 75.0])), (pano,))


# --- grid cache and bad input --------------------------------------------------------------------------------


def test_polar_sampling_grid_is_cached_and_matches_design() -> None:
    grid = polar_sampling_grid(10, 5, 12)
    assert grid is polar_sampling_grid(10, 5, 12)
    assert grid.shape == (1, 5, 12, 2) and grid.dtype == torch.float32
    # column 0 looks south: row index S/2 + r_0, column index S/2; normalised 2 (index + 0.5) / S - 1
    r0 = 5 * 4 / 5
    assert grid[0, 0, 0].tolist() == pytest.approx([2 * (5 + 0.5) / 10 - 1, 2 * (5 + r0 + 0.5) / 10 - 1])
    assert polar_sampling_grid(10, 5, 12, dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize(
    ("shape", "message"),
    [((3, 10, 10), r"\(B, C, S, S\).*\(3, 10, 10\)"), ((1, 3, 10, 12), r"square.*\(1, 3, 10, 12\)")],
)
def test_polar_transform_rejects_bad_shapes(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        polar_transform(torch.zeros(shape), 4, 8)


def test_polar_transform_rejects_bad_offsets() -> None:
    with pytest.raises(ValueError, match=r"offset_px.*\(2,\) or \(B, 2\).*\(3, 2\)"):
        polar_transform(torch.zeros(2, 1, 8, 8), 4, 8, offset_px=torch.zeros(3, 2))


def test_bad_sizes_and_headings_raise() -> None:
    with pytest.raises(ValueError, match="height must be a positive integer"):
        polar_transform(torch.zeros(1, 1, 8, 8), 0, 8)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        polar_column_azimuth_deg(0)
    with pytest.raises(ValueError, match=r"pano must be a tensor \(B, C, H, W\)"):
        align_panorama_to_north(torch.zeros(3, 4, 8), 0.0)
    with pytest.raises(ValueError, match="heading_deg must be finite"):
        align_panorama_to_north(torch.zeros(1, 1, 4, 8), float("nan"))
    with pytest.raises(ValueError, match=r"heading_deg must be a number or have shape \(2,\)"):
        align_panorama_to_north(torch.zeros(2, 1, 4, 8), torch.zeros(3))


def test_grid_cached_under_inference_mode_serves_autograd_later():
    """A grid first built inside torch.inference_mode() (locate) must not break a later training step."""
    with torch.inference_mode():
        polar_transform(torch.rand(1, 3, 24, 24), 7, 13)
    chips = torch.rand(1, 3, 24, 24, requires_grad=True)
    polar_transform(chips, 7, 13).sum().backward()
    assert chips.grad is not None and chips.grad.abs().sum() > 0

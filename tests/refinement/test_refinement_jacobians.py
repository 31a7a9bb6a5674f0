"""Residuals and Jacobians of the refiner in float64: analytic vs autograd vs finite differences, and the pixel,
heading and level-camera conventions they rely on."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from refinement_fixtures import CAMERA_HEIGHT_M, make_scene

from crossview.geometry.cameras import PanoramaCamera, PinholeCamera, pixel_centers
from crossview.geometry.ground import MapChip
from crossview.geometry.pose import Pose2
from crossview.refinement.residuals import (
    bilinear_with_gradient,
    build_level,
    chip_jacobian,
    level_camera,
    linearize,
    normal_equations,
    points_to_chip,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

F64 = torch.float64
EXTENT_M = 12.8


def random_table(batch: int, height: int, width: int, channels: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height, width, generator=generator, dtype=F64)


def as_table(image: torch.Tensor) -> torch.Tensor:
    return image.flatten(2).transpose(1, 2).contiguous()


def grid_sample_at(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Reference: torch's grid_sample (border, align_corners=False) with DESIGN's normalisation, (B, N, C)."""
    height, width = image.shape[-2:]
    grid = torch.stack([2 * uv[..., 0] / width - 1, 2 * uv[..., 1] / height - 1], dim=-1).unsqueeze(1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0].transpose(
        1, 2
    )


def test_convention_chip_pixels_edge_based_like_grid_sample():
    image = random_table(2, 5, 7, 3, seed=0)
    # Pixel (row i, col j) has its centre at (u, v) = (j + 0.5, i + 0.5).
    values, _, _ = bilinear_with_gradient(
        as_table(image), (5, 7), torch.tensor([[[3.5, 2.5]], [[0.5, 4.5]]], dtype=F64)
    )
    torch.testing.assert_close(values[0, 0], image[0, :, 2, 3], rtol=0, atol=1e-15)
    torch.testing.assert_close(values[1, 0], image[1, :, 4, 0], rtol=0, atol=1e-15)
    # Everywhere, including the outer half pixel and outside the map (border padding).
    generator = torch.Generator().manual_seed(1)
    uv = torch.rand(2, 200, 2, generator=generator, dtype=F64) * torch.tensor([9.0, 7.0], dtype=F64) - 1.0
    values, _, _ = bilinear_with_gradient(as_table(image), (5, 7), uv)
    torch.testing.assert_close(values, grid_sample_at(image, uv), rtol=0, atol=1e-13)


def test_bilinear_gradient_matches_autograd_through_grid_sample():
    image = random_table(2, 6, 8, 4, seed=2)
    generator = torch.Generator().manual_seed(3)
    uv = torch.rand(2, 300, 2, generator=generator, dtype=F64) * torch.tensor([10.0, 8.0], dtype=F64) - 1.0
    _, d_du, d_dv = bilinear_with_gradient(as_table(image), (6, 8), uv)
    gradient = torch.stack([d_du, d_dv], dim=-1)
    for axis in range(2):
        tangent = torch.zeros_like(uv)
        tangent[..., axis] = 1.0
        _, expected = torch.func.jvp(lambda p: grid_sample_at(image, p), (uv,), (tangent,))
        torch.testing.assert_close(gradient[..., axis], expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=100, deadline=None)
@given(
    x_m=st.floats(-50, 50),
    y_m=st.floats(-50, 50),
    heading_rad=st.floats(-10, 10),
    gsd_m=st.floats(0.05, 5.0),
    size=st.integers(2, 128),
    seed=st.integers(0, 2**16),
)
def test_points_to_chip_matches_pose_and_mapchip_of_geometry(x_m, y_m, heading_rad, gsd_m, size, seed):
    body = torch.randn(1, 20, 2, generator=torch.Generator().manual_seed(seed), dtype=F64) * 10
    pose_local = torch.tensor([[x_m, y_m, heading_rad]], dtype=F64)
    uv, offset = points_to_chip(body, pose_local, gsd_m, (size, size + 1))
    chip = MapChip(torch.zeros(1, 2, dtype=F64), gsd_m, size + 1, size)
    xy = Pose2(pose_local).transform(body)
    torch.testing.assert_close(uv, chip.map_to_pixel(xy), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(offset, xy - pose_local[:, None, :2], rtol=1e-12, atol=1e-9)


def test_convention_heading_clockwise_from_grid_north_in_chip_pixels():
    # A point 10 m straight ahead: heading 0 looks north (up the chip, -v), heading 90° east (+u).
    ahead = torch.tensor([[[0.0, 10.0]]], dtype=F64).expand(2, 1, 2)
    pose_local = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.pi / 2]], dtype=F64)
    uv, _ = points_to_chip(ahead, pose_local, 0.5, (40, 40))
    torch.testing.assert_close(uv[:, 0], torch.tensor([[20.0, 0.0], [40.0, 20.0]], dtype=F64), rtol=0, atol=1e-12)


def test_chip_jacobian_matches_autograd():
    generator = torch.Generator().manual_seed(5)
    body = torch.randn(2, 30, 2, generator=generator, dtype=F64) * 4
    pose_local = torch.tensor([[0.5, 1.0, 0.3], [-2.0, 0.2, 4.0]], dtype=F64)
    _, offset = points_to_chip(body, pose_local, 0.3, (32, 32))
    analytic = chip_jacobian(offset, 0.3)
    for axis in range(3):
        tangent = torch.zeros_like(pose_local)
        tangent[:, axis] = 1.0
        _, column = torch.func.jvp(lambda p: points_to_chip(body, p, 0.3, (32, 32))[0], (pose_local,), (tangent,))
        torch.testing.assert_close(analytic[..., axis], column, rtol=1e-12, atol=1e-12)


def scene_level(camera: str = "panorama", level: int = 1, seed: int = 0):
    """A float64 level of a synthetic scene (camera at (0.7, -0.4), heading 30°, chip centred at the origin)."""
    scene = make_scene(
        (0.7, -0.4, 30.0),
        (0.0, 0.0),
        ground_hw=[(8, 32), (16, 64)] if camera == "panorama" else [(24, 32), (48, 64)],
        chip_px=[16, 32],
        chip_extent_m=EXTENT_M,
        camera=camera,
        seed=seed,
    )
    height, width = scene.ground_feats[level].shape[-2:]
    cam = PanoramaCamera(width, height) if camera == "panorama" else PinholeCamera.from_hfov(width, height, 90.0)
    return build_level(
        scene.ground_feats[level],
        scene.ground_confs[level],
        scene.chip_feats[level],
        scene.chip_confs[level],
        chip_extent_m=(EXTENT_M, EXTENT_M),
        camera=cam,
        camera_height_m=CAMERA_HEIGHT_M,
    )


@pytest.mark.parametrize("camera", ["panorama", "pinhole"])
def test_analytic_and_autograd_jacobians_agree_in_float64(camera):
    problem = scene_level(camera)
    pose_local = torch.tensor([[1.1, -0.9, math.radians(36.0)]], dtype=F64)
    analytic = linearize(problem, pose_local, "analytic")
    autograd = linearize(problem, pose_local, "autograd")
    assert analytic.valid.sum() > 100
    assert torch.equal(analytic.valid, autograd.valid)
    torch.testing.assert_close(analytic.residuals, autograd.residuals, rtol=0, atol=1e-13)
    torch.testing.assert_close(analytic.weights, autograd.weights, rtol=0, atol=1e-13)
    torch.testing.assert_close(analytic.full_jacobian(), autograd.full_jacobian(), rtol=1e-10, atol=1e-10)
    # The factored normal equations equal the generic ones built from the full Jacobian.
    weights = torch.rand(analytic.weights.shape, generator=torch.Generator().manual_seed(6), dtype=F64)
    g_fast, H_fast = normal_equations(analytic, weights)
    g_ref, H_ref = normal_equations(autograd, weights)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(H_fast, H_ref, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(H_fast, H_fast.transpose(1, 2), rtol=0, atol=0)


def test_jacobian_matches_central_finite_differences():
    problem = scene_level("panorama")
    pose_local = torch.tensor([[0.4, 0.2, math.radians(25.0)]], dtype=F64)
    lin = linearize(problem, pose_local, "analytic")
    jacobian = lin.full_jacobian()
    step = 1e-6
    for axis in range(3):
        delta = torch.zeros_like(pose_local)
        delta[0, axis] = step
        plus, minus = linearize(problem, pose_local + delta), linearize(problem, pose_local - delta)
        same = lin.valid & plus.valid & minus.valid
        numeric = (plus.residuals - minus.residuals) / (2 * step)
        torch.testing.assert_close(jacobian[..., axis][same], numeric[same], rtol=1e-5, atol=1e-6)


def test_convention_level_camera_cells_tile_the_image():
    # Cell (i, j) of a level 4x coarser looks along the ray of input pixel coordinate ((j + 0.5) 4, (i + 0.5) 4).
    camera = PinholeCamera(64, 48, 50.0, 55.0, 30.0, 25.0)
    level = level_camera(camera, 16, 12)
    cells = pixel_centers(16, 12, dtype=F64)
    rays_level, _ = level.unproject(cells)
    rays_input, _ = camera.unproject(cells * 4)
    torch.testing.assert_close(rays_level, rays_input, rtol=0, atol=1e-12)
    assert level_camera(PanoramaCamera(256, 128), 64, 32) == PanoramaCamera(64, 32)


def test_build_level_keeps_exactly_the_pixels_that_see_the_ground():
    problem = scene_level("panorama", level=1)
    # 16 x 64 panorama: the 8 rows below the horizon.
    assert problem.body_m.shape == (1, 8 * 64, 2)
    assert (problem.ground_confidence > 0).all()
    distance = torch.linalg.norm(problem.body_m, dim=-1)
    # Nearest ring: row 15 looks 84.375° down.
    assert distance.min().item() == pytest.approx(CAMERA_HEIGHT_M / math.tan(math.radians(84.375)), rel=1e-9)

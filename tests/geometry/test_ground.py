"""Ground-plane projection: Jacobians vs autograd, BEV of rendered views vs the ground texture, masks, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossview.geometry.cameras import PanoramaCamera, PinholeCamera, pixel_centers
from crossview.geometry.ground import (
    MapChip,
    ground_to_image,
    image_to_ground,
    image_to_map_chip,
    level_to_camera_rotation,
    map_chip_to_image,
    to_bev,
)
from crossview.geometry.pose import Pose2

F64 = torch.float64


def ground_texture(east_m: np.ndarray, north_m: np.ndarray) -> np.ndarray:
    """A smooth 3-channel texture of the ground plane, (..., 3), wavelengths of a few metres."""
    red = 0.5 + 0.25 * np.sin(2 * np.pi * east_m / 3.1) + 0.2 * np.cos(2 * np.pi * north_m / 4.3)
    green = 0.5 + 0.3 * np.sin(2 * np.pi * (east_m + north_m) / 5.7)
    blue = 0.5 + 0.3 * np.cos(2 * np.pi * north_m / 2.9 + 0.4 * np.sin(east_m / 3.0))
    return np.stack([red, green, blue], axis=-1)


def render_panorama(width, height, x_m, y_m, heading_deg, height_m) -> np.ndarray:
    """Ray-cast the textured ground into an equirectangular panorama using DESIGN.md's formulas directly."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    azimuth = np.deg2rad(heading_deg + (cols / width - 0.5) * 360)
    elevation = np.deg2rad(90 - 180 * rows / height)
    below = elevation < 0
    distance = np.where(below, height_m / np.tan(np.where(below, -elevation, 1.0)), 0.0)
    image = ground_texture(x_m + distance * np.sin(azimuth), y_m + distance * np.cos(azimuth))
    return np.where(below[..., None], image, 0.0).transpose(2, 0, 1)


def render_pinhole(width, height, hfov_deg, x_m, y_m, heading_deg, height_m) -> np.ndarray:
    """Ray-cast the textured ground into a level pinhole view (x right, y down, z forward)."""
    focal = width / 2 / np.tan(np.deg2rad(hfov_deg) / 2)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x_n, y_n = (cols - width / 2) / focal, (rows - height / 2) / focal
    below = y_n > 1e-9
    scale = np.where(below, height_m / np.where(below, y_n, 1.0), 0.0)
    heading = np.deg2rad(heading_deg)
    right_dir, forward_dir = (np.cos(heading), -np.sin(heading)), (np.sin(heading), np.cos(heading))
    east = x_m + scale * (x_n * right_dir[0] + forward_dir[0])
    north = y_m + scale * (x_n * right_dir[1] + forward_dir[1])
    return np.where(below[..., None], ground_texture(east, north), 0.0).transpose(2, 0, 1)


def bev_truth(size_px, gsd_m, x_m, y_m) -> np.ndarray:
    """The texture at the pixel centres of a north-up BEV chip centred on (x_m, y_m): (3, S, S)."""
    centres = (np.arange(size_px) + 0.5 - size_px / 2) * gsd_m
    east, north = np.meshgrid(x_m + centres, y_m - centres)
    return ground_texture(east, north).transpose(2, 0, 1)


def test_to_bev_of_rendered_panorama_matches_ground_texture():
    x_m, y_m, heading_deg, height_m = 12.3, -4.5, 37.0, 2.1
    pano = torch.from_numpy(render_panorama(1024, 512, x_m, y_m, heading_deg, height_m))[None]
    bev, valid = to_bev(pano, PanoramaCamera(1024, 512), height_m, size_px=80, gsd_m=0.1, heading_deg=heading_deg)
    truth = bev_truth(80, 0.1, x_m, y_m)
    assert bool(valid.all())  # a panorama sees the whole ground around it
    error = (bev[0].numpy() - truth).__abs__()
    assert error.mean() < 0.01 and error.max() < 0.08


def test_to_bev_of_rendered_pinhole_matches_ground_texture():
    x_m, y_m, heading_deg, height_m = -3.0, 8.0, 250.0, 1.6
    image = torch.from_numpy(render_pinhole(640, 480, 90.0, x_m, y_m, heading_deg, height_m))[None]
    camera = PinholeCamera.from_hfov(640, 480, 90.0)
    bev, valid = to_bev(image, camera, height_m, size_px=100, gsd_m=0.1, heading_deg=heading_deg)
    truth = bev_truth(100, 0.1, x_m, y_m)
    seen = valid[0].numpy()
    assert 0.15 < seen.mean() < 0.5  # roughly the 90° wedge in front of the camera
    error = np.abs(bev[0].numpy() - truth)[:, seen]
    assert error.mean() < 0.01 and error.max() < 0.1
    # the wedge opens towards the heading: inside a circle (no clipping by the square) its centroid lies along
    # (sin ψ, cos ψ) from the camera
    rows, cols = np.nonzero(seen)
    east, north = cols + 0.5 - 50, 50 - (rows + 0.5)
    in_circle = np.hypot(east, north) < 48
    east, north = east[in_circle], north[in_circle]
    bearing = math.degrees(math.atan2(east.mean(), north.mean())) % 360
    assert abs(bearing - heading_deg) < 2.0


def test_convention_bev_heading_up_is_rotated_north_up():
    """heading_deg=None gives a heading-up BEV: for a camera facing east it is the north-up BEV turned 90° left."""
    pano = torch.from_numpy(render_panorama(512, 256, 0.0, 0.0, 90.0, 2.0))[None]
    camera = PanoramaCamera(512, 256)
    north_up, _ = to_bev(pano, camera, 2.0, size_px=40, gsd_m=0.1, heading_deg=90.0)
    heading_up, _ = to_bev(pano, camera, 2.0, size_px=40, gsd_m=0.1)
    # east (right side of the north-up BEV) must be at the top of the heading-up BEV
    torch.testing.assert_close(heading_up, torch.rot90(north_up, k=1, dims=(-2, -1)), atol=1e-6, rtol=0)


def test_convention_chip_is_north_up():
    """Chip row 0 is the north edge, column 0 the west edge; pixel centres at +0.5."""
    chip = MapChip.square(torch.tensor([100.0, 200.0], dtype=F64), gsd_m=0.5, size_px=4)
    centres = chip.pixel_centers_map(dtype=F64)
    assert centres[0, 0].tolist() == [99.25, 200.75]
    assert centres[3, 3].tolist() == [100.75, 199.25]
    torch.testing.assert_close(chip.map_to_pixel(centres), pixel_centers(4, 4, dtype=F64))
    uv = torch.tensor([[0.5, 0.5]], dtype=F64)
    torch.testing.assert_close(chip.map_to_pixel(chip.pixel_to_map(uv)), uv)


CAMERAS = [PanoramaCamera(128, 64), PinholeCamera(160, 120, 90.0, 95.0, 81.0, 58.0)]


@pytest.mark.parametrize("camera", CAMERAS, ids=["panorama", "pinhole"])
@pytest.mark.parametrize("tilted", [False, True])
def test_pose_jacobian_matches_autograd_float64(camera, tilted):
    torch.manual_seed(1)
    poses = Pose2(torch.tensor([[1.0, 2.0, 0.3], [-5.0, 0.5, 2.9]], dtype=F64))
    forward = poses.forward.unsqueeze(1)
    right = torch.stack([forward[..., 1], -forward[..., 0]], dim=-1)
    depth = torch.rand(2, 25, 1, dtype=F64) * 10 + 2
    lateral = (torch.rand(2, 25, 1, dtype=F64) - 0.5) * depth
    points = poses.xy_m.unsqueeze(1) + depth * forward + lateral * right  # in front of the cameras
    heights = torch.tensor([1.7, 2.5], dtype=F64)
    tilt = level_to_camera_rotation(torch.tensor([4.0, -6.0], dtype=F64), torch.tensor([2.0, 1.0], dtype=F64))
    R = tilt if tilted else None
    _, valid, analytic = ground_to_image(points, poses, camera, heights, R_cam_from_level=R, with_jacobian=True)
    assert valid.double().mean() > 0.5  # most points are seen; the Jacobian is checked for all of them

    def project(pose_data):
        return ground_to_image(points, Pose2(pose_data), camera, heights, R_cam_from_level=R)[0]

    numeric = torch.autograd.functional.jacobian(project, poses.data)  # (2, 25, 2, 2, 3)
    numeric = torch.stack([numeric[b, :, :, b, :] for b in range(2)])
    torch.testing.assert_close(analytic, numeric, atol=1e-8, rtol=1e-7)


@pytest.mark.parametrize("camera", CAMERAS, ids=["panorama", "pinhole"])
def test_image_to_ground_inverts_ground_to_image(camera):
    pose = Pose2(torch.tensor([[10.0, -3.0, 1.1]], dtype=F64))
    tilt = level_to_camera_rotation(torch.tensor([5.0], dtype=F64), torch.tensor([-3.0], dtype=F64))
    uv = torch.stack(
        torch.meshgrid(
            torch.linspace(1, camera.width - 1, 17, dtype=F64),
            torch.linspace(1, camera.height - 1, 13, dtype=F64),
            indexing="xy",
        ),
        -1,
    )[None]
    xy, valid = image_to_ground(uv, pose, camera, 2.0, R_cam_from_level=tilt, max_distance_m=200.0)
    assert 0.2 < valid.double().mean().item() < 0.8  # some pixels are above the horizon
    uv_back, valid_back = ground_to_image(xy, pose, camera, 2.0, R_cam_from_level=tilt)
    assert bool(valid_back[valid].all())
    du = (uv_back - uv)[valid]
    if isinstance(camera, PanoramaCamera):
        du[:, 0] = (du[:, 0] + camera.width / 2) % camera.width - camera.width / 2
    assert du.abs().max().item() < 1e-6


def test_image_to_map_chip_masks_horizon_and_chip_extent():
    camera = PanoramaCamera(64, 32)
    pose = Pose2(torch.tensor([[0.0, 0.0, 0.0]], dtype=F64))
    chip = MapChip.square(torch.tensor([0.0, 0.0], dtype=F64), gsd_m=0.5, size_px=20)  # 10 m wide
    uv_chip, valid = image_to_map_chip(pose, camera, 2.0, chip)
    assert uv_chip.shape == (1, 32, 64, 2)
    assert not bool(valid[0, :16].any())  # upper half: sky
    # below the horizon, pixels are valid exactly when their ground point lies inside the 10 m chip
    elevation = np.deg2rad(90 - 180 * (np.arange(16, 32) + 0.5) / 32)
    distance = 2.0 / np.tan(-elevation)
    u_chip = uv_chip[0, 16:].numpy()
    inside = (u_chip >= 0).all(-1) & (u_chip < 20).all(-1)
    assert np.array_equal(valid[0, 16:].numpy(), inside)
    assert valid[0, 16:][distance < 4.9].all() and not valid[0, 16:][distance > 7.1].any()


def test_map_chip_to_image_validity_behind_pinhole():
    camera = PinholeCamera.from_hfov(100, 80, 60.0)
    pose = Pose2(torch.tensor([[0.0, 0.0, 0.0]], dtype=F64))  # looking north
    chip = MapChip.square(torch.tensor([0.0, 0.0], dtype=F64), gsd_m=1.0, size_px=40)
    _, valid = map_chip_to_image(pose, camera, 1.5, chip)
    centres = chip.pixel_centers_map(dtype=F64)
    behind = centres[..., 1] < 0
    assert not bool(valid[0][behind].any())
    east, north = centres[..., 0], centres[..., 1]
    in_fov = (north > 3.0) & (east.abs() < north * math.tan(math.radians(28)))
    assert bool(valid[0][in_fov].all())


def test_batched_equals_unbatched_and_shared_chip(device):
    camera = PinholeCamera(
        120, 90, torch.tensor([80.0, 100.0], dtype=F64), torch.tensor([80.0, 100.0], dtype=F64), 60.0, 45.0
    )
    poses = Pose2(torch.tensor([[0.0, 0.0, 0.2], [3.0, 1.0, -1.0]], dtype=F64, device=device))
    heights = torch.tensor([1.5, 2.5], dtype=F64, device=device)
    chip = MapChip.square(torch.tensor([1.0, 1.0], dtype=F64, device=device), gsd_m=0.25, size_px=16)
    uv, valid = map_chip_to_image(poses, camera, heights, chip)
    for b in range(2):
        single_cam = PinholeCamera(120, 90, float(camera.fx[b]), float(camera.fy[b]), 60.0, 45.0)
        uv_b, valid_b = map_chip_to_image(poses[b : b + 1], single_cam, heights[b : b + 1], chip)
        torch.testing.assert_close(uv[b][valid[b]], uv_b[0][valid_b[0]])
        assert torch.equal(valid[b], valid_b[0])


def test_to_bev_is_differentiable_in_the_heading():
    pano = torch.from_numpy(render_panorama(256, 128, 0.0, 0.0, 0.0, 2.0))[None]
    heading = torch.tensor([10.0], dtype=F64, requires_grad=True)
    bev, _ = to_bev(pano, PanoramaCamera(256, 128), 2.0, size_px=16, gsd_m=0.2, heading_deg=heading)
    bev.sum().backward()
    assert heading.grad is not None and torch.isfinite(heading.grad).all() and heading.grad.abs().item() > 0


def test_convention_pitch_up_moves_ground_down_in_image():
    """Positive pitch looks above the horizon: a ground point ahead appears lower in the image."""
    camera = PinholeCamera.from_hfov(100, 100, 90.0)
    pose = Pose2(torch.tensor([[0.0, 0.0, 0.0]], dtype=F64))
    point = torch.tensor([[[0.0, 10.0]]], dtype=F64)
    level_v = ground_to_image(point, pose, camera, 2.0)[0][0, 0, 1]
    up = level_to_camera_rotation(torch.tensor([10.0], dtype=F64))
    pitched_v = ground_to_image(point, pose, camera, 2.0, R_cam_from_level=up)[0][0, 0, 1]
    assert pitched_v > level_v
    expected = 50 + 50 * math.tan(math.atan2(2.0, 10.0) + math.radians(10))
    assert pitched_v.item() == pytest.approx(expected)

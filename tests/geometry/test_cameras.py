"""Camera models: DESIGN.md's panorama and pinhole conventions, round trips, Jacobians, validity masks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossview.errors import CameraError
from crossview.geometry.cameras import PanoramaCamera, PinholeCamera, pixel_centers, to_grid_sample_coords

F64 = torch.float64


def test_convention_panorama_column_azimuth_and_row_elevation():
    """Column u looks at azimuth (u/W - 0.5)*360° from the heading; row v at elevation 90° - 180°*v/H."""
    cam = PanoramaCamera(width=360, height=180)
    uv = pixel_centers(360, 180, dtype=F64)
    rays, valid = cam.unproject(uv)
    assert bool(valid.all())
    azimuth_deg = torch.rad2deg(torch.atan2(rays[..., 0], rays[..., 2]))
    elevation_deg = torch.rad2deg(torch.atan2(-rays[..., 1], torch.hypot(rays[..., 0], rays[..., 2])))
    expected_az = (uv[..., 0] / 360 - 0.5) * 360
    expected_el = 90 - 180 * uv[..., 1] / 180
    torch.testing.assert_close(azimuth_deg, expected_az, atol=1e-9, rtol=0)
    torch.testing.assert_close(elevation_deg, expected_el, atol=1e-9, rtol=0)
    # the centre column looks along the heading, the middle row is the horizon
    u, v = cam.project(torch.tensor([0.0, 0.0, 5.0], dtype=F64))[0]
    assert (u.item(), v.item()) == pytest.approx((180.0, 90.0))
    # a point to the right (x > 0) is clockwise from the heading: larger column
    assert cam.project(torch.tensor([1.0, 0.0, 1.0], dtype=F64))[0][0].item() == pytest.approx(225.0)


def test_convention_pinhole_from_35mm_and_hfov():
    """fx = f35 / 36 mm * long side, for landscape and portrait; hfov is 2 atan(W / 2 fx)."""
    landscape = PinholeCamera.from_focal_35mm(4000, 3000, focal_35mm=36.0)
    portrait = PinholeCamera.from_focal_35mm(3000, 4000, focal_35mm=18.0)
    assert landscape.fx == pytest.approx(4000.0)
    assert portrait.fx == pytest.approx(2000.0) and portrait.fy == portrait.fx
    assert (landscape.cx, landscape.cy) == (2000.0, 1500.0)
    assert landscape.hfov_deg.item() == pytest.approx(2 * math.degrees(math.atan(0.5)))
    assert PinholeCamera.from_hfov(640, 480, 90.0).fx == pytest.approx(320.0)


def test_convention_pixel_centres_match_grid_sample():
    """Pixel (i, j) has its centre at (j + 0.5, i + 0.5); grid_sample(align_corners=False) reads it exactly there."""
    image = torch.arange(12, dtype=F64).reshape(1, 1, 3, 4)
    uv = pixel_centers(4, 3, dtype=F64)
    assert uv[0, 0].tolist() == [0.5, 0.5] and uv[2, 3].tolist() == [3.5, 2.5]
    grid = to_grid_sample_coords(uv, 4, 3).unsqueeze(0)
    sampled = torch.nn.functional.grid_sample(image, grid, align_corners=False)
    torch.testing.assert_close(sampled, image)


def test_convention_pinhole_optical_axis_and_gravity():
    """Level pinhole: the optical axis hits (cx, cy); points below the camera (y down) are below the centre row."""
    cam = PinholeCamera.from_hfov(64, 48, 90.0)
    (u, v), valid = cam.project(torch.tensor([0.0, 0.0, 3.0], dtype=F64))
    assert (u.item(), v.item()) == (32.0, 24.0) and bool(valid)
    (_, v_below), _ = cam.project(torch.tensor([0.0, 1.0, 3.0], dtype=F64))
    assert v_below.item() > 24.0


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 511.999), st.floats(0.01, 255.99))
def test_panorama_pixel_ray_pixel_round_trip(u, v):
    cam = PanoramaCamera(512, 256)
    uv = torch.tensor([u, v], dtype=F64)
    rays, valid = cam.unproject(uv)
    assert bool(valid)
    torch.testing.assert_close(torch.linalg.norm(rays), torch.tensor(1.0, dtype=F64))
    uv_back, valid_back = cam.project(rays * 7.3)
    assert bool(valid_back)
    du = (uv_back[0] - u + 256) % 512 - 256  # circular in u
    assert abs(du.item()) < 1e-7 and abs(uv_back[1].item() - v) < 1e-7


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 639.999), st.floats(0.0, 479.999), st.floats(30, 150), st.floats(0.1, 100))
def test_pinhole_pixel_ray_pixel_round_trip(u, v, hfov_deg, depth):
    cam = PinholeCamera.from_hfov(640, 480, hfov_deg)
    uv = torch.tensor([u, v], dtype=F64)
    rays, valid = cam.unproject(uv)
    assert bool(valid)
    uv_back, valid_back = cam.project(rays * depth)
    torch.testing.assert_close(uv_back, uv, atol=1e-7, rtol=0)
    if 1e-6 < u < 640 - 1e-6 and 1e-6 < v < 480 - 1e-6:  # on the border, round-off may step outside
        assert bool(valid_back)


def test_pinhole_validity_masks():
    cam = PinholeCamera.from_hfov(100, 50, 60.0)
    points = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [10.0, 0.0, 1.0], [0.1, 0.1, 1.0]], dtype=F64)
    uv, valid = cam.project(points)
    assert valid.tolist() == [False, False, False, True]
    assert bool(torch.isfinite(uv).all())
    _, inside = cam.unproject(torch.tensor([[-0.1, 3.0], [100.0, 3.0], [50.0, 25.0]], dtype=F64))
    assert inside.tolist() == [False, False, True]


@pytest.mark.parametrize("camera", [PanoramaCamera(64, 32), PinholeCamera(80, 60, 50.0, 55.0, 41.0, 29.0)])
def test_project_jacobian_matches_autograd(camera):
    torch.manual_seed(0)
    points = torch.randn(20, 3, dtype=F64) + torch.tensor([0.0, 0.5, 4.0], dtype=F64)
    analytic = camera.project_jacobian(points)
    for i in range(points.shape[0]):
        numeric = torch.autograd.functional.jacobian(lambda p: camera.project(p)[0], points[i])
        torch.testing.assert_close(analytic[i], numeric, atol=1e-9, rtol=1e-7)


def test_batched_intrinsics_broadcast(device):
    fx = torch.tensor([100.0, 200.0], dtype=F64, device=device)
    cam = PinholeCamera(64, 48, fx, fx, 32.0, 24.0)
    points = torch.tensor([[[0.1, 0.0, 1.0]] * 3] * 2, dtype=F64, device=device)  # (B=2, N=3, 3)
    uv, _ = cam.project(points)
    assert uv.shape == (2, 3, 2)
    torch.testing.assert_close(uv[:, 0, 0].cpu(), torch.tensor([42.0, 52.0], dtype=F64))
    rays, _ = cam.unproject(uv)
    torch.testing.assert_close(rays, torch.nn.functional.normalize(points, dim=-1))


def test_camera_parameter_errors():
    with pytest.raises(CameraError, match="size"):
        PanoramaCamera(0, 10)
    with pytest.raises(CameraError, match="fx"):
        PinholeCamera(10, 10, -1.0, 1.0, 5.0, 5.0)
    with pytest.raises(CameraError, match="field of view"):
        PinholeCamera.from_hfov(10, 10, 180.0)
    with pytest.raises(CameraError, match="35 mm"):
        PinholeCamera.from_focal_35mm(10, 10, 0.0)
    assert issubclass(CameraError, ValueError)

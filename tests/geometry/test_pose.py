"""Pose2: group laws, conventions for heading and frames, true/grid heading conversion."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossview.geometry.pose import Pose2, angle_difference_deg, wrap_degrees

coords = st.floats(-1e4, 1e4, allow_nan=False)
angles = st.floats(-720, 720, allow_nan=False)


def _pose(x, y, h_deg) -> Pose2:
    return Pose2.from_xy_heading_deg(torch.tensor(x, dtype=torch.float64), y, h_deg)


def test_convention_heading_clockwise_from_north():
    """A body with heading ψ looks along (east, north) = (sin ψ, cos ψ); its right is (cos ψ, -sin ψ)."""
    for heading_deg, forward, right in [(0, (0, 1), (1, 0)), (90, (1, 0), (0, -1)), (180, (0, -1), (-1, 0))]:
        pose = _pose(3.0, 4.0, heading_deg)
        torch.testing.assert_close(pose.forward, torch.tensor(forward, dtype=torch.float64), atol=1e-12, rtol=0)
        body = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
        expected = torch.tensor([[3 + forward[0], 4 + forward[1]], [3 + right[0], 4 + right[1]]], dtype=torch.float64)
        torch.testing.assert_close(pose.transform(body), expected, atol=1e-12, rtol=0)


def test_convention_true_vs_grid_heading():
    """grid heading = true heading - convergence; public headings are degrees in [0, 360)."""
    pose = Pose2.from_true_heading_deg(0.0, 0.0, heading_deg=1.0, convergence_deg=2.5)
    assert pose.heading_deg.item() == pytest.approx(358.5)
    assert pose.true_heading_deg(2.5).item() == pytest.approx(1.0)
    assert 0 <= pose.heading_deg.item() < 360


@settings(max_examples=100, deadline=None)
@given(coords, coords, angles, coords, coords, angles, coords, coords, angles)
def test_compose_is_associative_and_inverse_cancels(x1, y1, h1, x2, y2, h2, x3, y3, h3):
    a, b, c = _pose(x1, y1, h1), _pose(x2, y2, h2), _pose(x3, y3, h3)
    left, right = (a @ b) @ c, a @ (b @ c)
    torch.testing.assert_close(left.xy_m, right.xy_m, atol=1e-7, rtol=1e-12)
    identity = a @ a.inverse()
    translation_m, rotation_deg = identity.magnitude()
    assert translation_m.item() < 1e-8 and rotation_deg.item() < 1e-9
    torch.testing.assert_close(a.inverse().inverse().data, a.data, atol=1e-9, rtol=0)


@settings(max_examples=100, deadline=None)
@given(coords, coords, angles, coords, coords)
def test_transform_inverse_transform_round_trip(x, y, h, px, py):
    pose = _pose(x, y, h)
    points = torch.tensor([[px, py]], dtype=torch.float64)
    torch.testing.assert_close(pose.inverse_transform(pose.transform(points)), points, atol=1e-8, rtol=0)
    # compose agrees with applying the transforms one after the other
    other = _pose(px, py, h / 2)
    torch.testing.assert_close((pose @ other).transform(points), pose.transform(other.transform(points)))


def test_batched_equals_unbatched():
    torch.manual_seed(0)
    data = torch.randn(5, 3, dtype=torch.float64) * torch.tensor([100.0, 100.0, 3.0], dtype=torch.float64)
    poses, others = Pose2(data), Pose2(data.flip(0))
    points = torch.randn(5, 7, 2, dtype=torch.float64)
    batched = (poses @ others).transform(points)
    for i in range(5):
        single = (poses[i] @ others[i]).transform(points[i])
        torch.testing.assert_close(batched[i], single)


def test_rotation_is_proper():
    rot = Pose2(torch.randn(10, 3, dtype=torch.float64)).rotation()
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(10, dtype=torch.float64))
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(2, dtype=torch.float64).expand(10, 2, 2))


def test_wrap_and_difference():
    angles_deg = torch.tensor([-1e-14, 360.0, 720.5, -90.0], dtype=torch.float64)
    wrapped = wrap_degrees(angles_deg)
    assert bool(((wrapped >= 0) & (wrapped < 360)).all())
    assert angle_difference_deg(torch.tensor(359.0), torch.tensor(1.0)).item() == pytest.approx(-2.0)


def test_gradients_flow_through_pose():
    data = torch.tensor([1.0, 2.0, 0.3], dtype=torch.float64, requires_grad=True)
    points = torch.tensor([[1.0, 5.0]], dtype=torch.float64)
    Pose2(data).transform(points).sum().backward()
    # d(east + north)/d heading = d/dh [cos h * r + sin h * f - sin h * r + cos h * f] at (r, f) = (1, 5)
    h = 0.3
    expected = -math.sin(h) * 1 + math.cos(h) * 5 - math.cos(h) * 1 - math.sin(h) * 5
    assert data.grad[2].item() == pytest.approx(expected)
    assert data.grad[:2].tolist() == [1.0, 1.0]


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        Pose2(torch.zeros(4, 2))

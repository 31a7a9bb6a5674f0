"""The dense correspondence and dense matching losses are low for features that agree through DESIGN's
ground-plane geometry, and the matching loss trains features."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crossview.correspondence_loss import correspondence_loss, dense_matching_loss, pinhole_crops, sample_tile_points
from crossview.geometry.cameras import PanoramaCamera, pixel_centers
from crossview.geometry.ground import image_to_ground
from crossview.geometry.pose import Pose2

TILE_PX, MPP, HEIGHT_M = 64, 1.0, 2.0


def _texture(xy_m: torch.Tensor, channels: int = 8, seed: int = 0) -> torch.Tensor:
    """A smooth random vector field on the ground plane: (..., 2) metres -> (..., C), unit norm."""
    generator = torch.Generator().manual_seed(seed)
    freq = torch.randn(channels, 2, generator=generator) * 0.6
    phase = torch.rand(channels, generator=generator) * 2 * math.pi
    return F.normalize(torch.sin(xy_m @ freq.T + phase), dim=-1)


def _views(heading_deg: float, px_in_tile: tuple[float, float]) -> tuple[list, list]:
    centre = TILE_PX / 2
    uv = pixel_centers(TILE_PX, TILE_PX)  # (S, S, 2) (u, v)
    tile_xy = torch.stack([(uv[..., 0] - centre) * MPP, (centre - uv[..., 1]) * MPP], dim=-1)
    tile = _texture(tile_xy).permute(2, 0, 1)[None]
    row, col = px_in_tile
    pose = Pose2(torch.tensor([[(col - centre) * MPP, (centre - row) * MPP, math.radians(heading_deg)]]))
    camera = PanoramaCamera(128, 64)
    xy, valid = image_to_ground(pixel_centers(128, 64)[None], pose, camera, HEIGHT_M)
    ground = (_texture(xy) * valid[..., None]).permute(0, 3, 1, 2)
    return [ground], [tile]


def test_loss_is_lowest_at_the_true_pose():
    px = torch.tensor([[30.0, 34.0]])
    ground, tile = _views(40.0, (30.0, 34.0))
    torch.manual_seed(0)
    args = {"camera_height_m": HEIGHT_M, "points": 48, "max_distance_m": 20.0}
    true = correspondence_loss(ground, tile, TILE_PX, px, torch.tensor([MPP]), torch.tensor([40.0]), **args)
    turned = correspondence_loss(ground, tile, TILE_PX, px, torch.tensor([MPP]), torch.tensor([130.0]), **args)
    moved = correspondence_loss(ground, tile, TILE_PX, px + 6.0, torch.tensor([MPP]), torch.tensor([40.0]), **args)
    assert true < 0.5 * turned and true < 0.7 * moved, (true, turned, moved)


def test_sampled_points_lie_in_the_annulus_and_the_tile():
    px = torch.tensor([[32.0, 32.0], [5.0, 60.0]])
    uv = sample_tile_points(2, TILE_PX, px, torch.tensor([0.5, 0.5]), points=500, min_distance_m=3, max_distance_m=10)
    assert ((uv >= 0.5) & (uv <= TILE_PX - 0.5)).all()
    d = torch.hypot(uv[0, :, 0] - 32.0, uv[0, :, 1] - 32.0) * 0.5
    assert d.min() >= 3.0 - 1e-4 and d.max() <= 10.0 + 1e-4


def _matching_loss(ground: torch.Tensor, tile: torch.Tensor, px: tuple[float, float], heading_deg: float) -> float:
    return dense_matching_loss(
        ground,
        torch.ones_like(ground[:, :1]),
        tile,
        TILE_PX,
        torch.tensor([px]),
        torch.tensor([MPP]),
        torch.tensor([heading_deg]),
        camera_height_m=HEIGHT_M,
        headings=16,
    )


def test_matching_loss_is_lowest_at_the_true_pose():
    (ground,), (tile,) = _views(40.0, (30.5, 34.5))
    true = _matching_loss(ground, tile, (30.5, 34.5), 40.0)
    turned = _matching_loss(ground, tile, (30.5, 34.5), 130.0)
    moved = _matching_loss(ground, tile, (36.5, 40.5), 40.0)
    uniform = math.log(16 * TILE_PX * TILE_PX)
    assert true < 0.5 * uniform and true < turned - 2.0 and true < moved - 2.0, (true, turned, moved, uniform)


def test_matching_loss_trains_features():
    (ground,), (tile,) = _views(40.0, (30.5, 34.5))
    torch.manual_seed(0)
    noisy = (tile + 2.0 * torch.randn_like(tile)).requires_grad_(True)
    optimizer = torch.optim.Adam([noisy], lr=0.05)
    losses = []
    for _ in range(15):
        loss = _matching_loss(ground, F.normalize(noisy, dim=1), (30.5, 34.5), 40.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_pinhole_crops_look_where_they_are_turned():
    width, height = 256, 128
    uv = pixel_centers(width, height)
    azimuth = (uv[..., 0] / width - 0.5) * 2 * math.pi  # clockwise from the centre column
    elevation = (0.5 - uv[..., 1] / height) * math.pi
    pano = torch.stack([torch.sin(azimuth), torch.cos(azimuth), elevation]).expand(2, -1, -1, -1)
    views = pinhole_crops(pano, 90.0, torch.tensor([40.0, -120.0]), (48, 64))
    for view, yaw in zip(views, (40.0, -120.0), strict=True):
        centre = view[:, 23:25, 31:33].mean(dim=(1, 2))
        assert math.degrees(math.atan2(centre[0], centre[1])) == pytest.approx(yaw, abs=2.0)
        assert float(centre[2]) == pytest.approx(0.0, abs=0.05)  # level: the centre row is on the horizon
        left = view[:, 24, 0]  # the left edge looks 45 degrees (less half a pixel) to the left of the axis
        assert math.degrees(math.atan2(left[0], left[1])) == pytest.approx(yaw - 45.0 + 0.7, abs=2.0)
    assert float(views[0, 2, 0].mean()) > 0 > float(views[0, 2, -1].mean())  # sky at the top, ground below

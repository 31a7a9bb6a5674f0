"""Dense correspondence loss that trains the refinement features (the three decoder levels) for the LM refiner.

A training pair (panorama, aerial tile) comes with the panorama's pixel in the tile, the tile's metres per pixel
and the panorama's heading in the tile frame (:class:`crossview.data.vigor.VigorDataset`). With a camera height,
DESIGN's ground-plane geometry (:func:`crossview.geometry.ground.ground_to_image`) says where every ground point
of the tile appears in the panorama. At each level, ``points`` random tile pixels between ``min_distance_m`` and
``max_distance_m`` from the camera are sampled; the ground feature bilinearly sampled where a point appears must
match the tile feature of that point better than the tile features of the other sampled points (InfoNCE over
points, both directions), so that the refiner's feature residual has its minimum at the true pose. The tile
frame plays the map frame: x = right (east when north-up), y = up, metres, centred on the tile.

This is the dense, contrastive counterpart of HighlyAccurate's (CVPR 2022) and PixLoc's (CVPR 2021) feature
training: features that are equal at corresponding points and different elsewhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from crossview.geometry.cameras import Camera, PanoramaCamera, PinholeCamera, pixel_centers
from crossview.geometry.ground import ground_to_image
from crossview.geometry.pose import Pose2


def sample_tile_points(
    batch: int,
    tile_px: int,
    px_in_tile: Tensor,
    mpp: Tensor,
    *,
    points: int,
    min_distance_m: float,
    max_distance_m: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, P, 2) continuous tile pixel coordinates (u = col, v = row) of random ground points at ground distance
    in [min, max] metres from each camera and inside the tile (drawn uniformly in area)."""
    device = px_in_tile.device
    radius_m = torch.sqrt(
        torch.rand(batch, points, device=device, generator=generator) * (max_distance_m**2 - min_distance_m**2)
        + min_distance_m**2
    )
    angle = torch.rand(batch, points, device=device, generator=generator) * (2 * math.pi)
    du = radius_m * torch.sin(angle) / mpp[:, None]
    dv = -radius_m * torch.cos(angle) / mpp[:, None]
    u = (px_in_tile[:, 1:2] + du).clamp(0.5, tile_px - 0.5)
    v = (px_in_tile[:, 0:1] + dv).clamp(0.5, tile_px - 0.5)
    return torch.stack([u, v], dim=-1)


def correspondence_loss(
    ground_features: list[Tensor],
    tile_features: list[Tensor],
    tile_px: int,
    px_in_tile: Tensor,
    mpp: Tensor,
    heading_deg: Tensor,
    *,
    camera_height_m: float,
    points: int = 64,
    min_distance_m: float = 3.0,
    max_distance_m: float = 30.0,
    temperature: float = 0.1,
) -> Tensor:
    """Mean symmetric InfoNCE over levels between corresponding ground and tile features.

    Args:
        ground_features: L levels (B, C_l, H_l, W_l) of panorama features (unit norm over channels).
        tile_features: L levels (B, C_l, S_l, S_l) of tile features.
        tile_px: tile side S of the model input, pixels.
        px_in_tile: (B, 2) panorama (row, col) in the tile, pixels of S.
        mpp: (B,) metres per tile pixel at size S.
        heading_deg: (B,) azimuth of the panorama's centre column in the tile frame (clockwise from up).
        camera_height_m: camera height above the ground assumed for every panorama, metres.

    Returns:
        Scalar loss.
    """
    batch = px_in_tile.shape[0]
    dtype = torch.float32
    uv_tile = sample_tile_points(
        batch,
        tile_px,
        px_in_tile.float(),
        mpp.float(),
        points=points,
        min_distance_m=min_distance_m,
        max_distance_m=max_distance_m,
    )
    centre = tile_px / 2.0
    cam_xy = torch.stack([(px_in_tile[:, 1] - centre) * mpp, (centre - px_in_tile[:, 0]) * mpp], dim=-1).to(dtype)
    ground_xy = torch.stack([(uv_tile[..., 0] - centre) * mpp[:, None], (centre - uv_tile[..., 1]) * mpp[:, None]], -1)
    pose = Pose2(torch.cat([cam_xy, torch.deg2rad(heading_deg.to(dtype))[:, None]], dim=-1))
    losses = []
    for ground, tile in zip(ground_features, tile_features, strict=True):
        height_px, width_px = ground.shape[-2:]
        camera = PanoramaCamera(width_px, height_px)
        uv_ground, valid = ground_to_image(ground_xy.to(dtype), pose, camera, camera_height_m)
        g = _sample(ground.float(), uv_ground, wrap=True)  # (B, P, C)
        t = _sample(tile.float(), uv_tile * (tile.shape[-1] / tile_px), wrap=False)
        logits = torch.einsum("bpc,bqc->bpq", g, t) / temperature
        weight = valid.float()
        target = torch.arange(points, device=logits.device).expand(batch, points)
        per_point = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
        per_point_t = F.cross_entropy(logits.transpose(1, 2).flatten(0, 1), target.flatten(), reduction="none")
        level = ((per_point + per_point_t) * weight.flatten()).sum() / (2 * weight.sum().clamp(min=1.0))
        losses.append(level)
    return torch.stack(losses).mean()


def _sample(features: Tensor, uv: Tensor, *, wrap: bool) -> Tensor:
    """(B, P, C) bilinear samples of (B, C, H, W) features at continuous (u, v) pixel coordinates (B, P, 2),
    wrapping columns around a panorama's seam when ``wrap``."""
    height, width = features.shape[-2:]
    if wrap:
        features = torch.cat([features[..., -1:], features, features[..., :1]], dim=-1)
        u = torch.remainder(uv[..., 0], width) + 1.0
        width = width + 2
    else:
        u = uv[..., 0]
    grid = torch.stack([2.0 * u / width - 1.0, 2.0 * uv[..., 1] / height - 1.0], dim=-1)
    sampled = F.grid_sample(features, grid[:, None], mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[:, :, 0].transpose(1, 2)


DENSE_LOSS_HEADINGS = 32
"""Headings of the training score volume (the search of ``locate`` uses 64)."""
DENSE_LOSS_TEMPERATURE = 0.02
"""Scores (mean feature similarities) are divided by this before the softmax. With 0.05 an epoch barely moved the
held-out loss; 0.02 made synth-v3 (see models/README.md)."""


def dense_matching_loss(
    ground_features: Tensor,
    ground_confidence: Tensor,
    tile_features: Tensor,
    tile_px: int,
    px_in_tile: Tensor,
    mpp: Tensor,
    heading_deg: Tensor,
    *,
    camera_height_m: float,
    camera: Camera | None = None,
    headings: int = DENSE_LOSS_HEADINGS,
    temperature: float = DENSE_LOSS_TEMPERATURE,
) -> Tensor:
    """Negative log-likelihood of the true pose under the dense search's score volume, batch mean.

    The training counterpart of :mod:`crossview.retrieval.dense` (OrienterNet's loss, Sarlin et al., CVPR 2023):
    the panorama's finest features become BEV templates at ``headings`` headings starting at the true one, are
    correlated with the tile's finest features, and the log-softmax over every (heading, cell) pose of the tile
    (scores / ``temperature``) is read at the true heading and the cell holding the camera. Unlike the point-wise
    :func:`correspondence_loss`, rival poses (the same street a block away, the true place turned by 90 or 180
    degrees) are pushed down directly.

    Args:
        ground_features: (B, C, H, W) finest ground features; ground_confidence: (B, 1, H, W).
        tile_features: (B, C, S, S) finest tile features.
        tile_px, px_in_tile, mpp, heading_deg, camera_height_m: as in :func:`correspondence_loss` (the heading of
            a pinhole view is that of its optical axis).
        camera: the ground camera at the features' size (default: a panorama).

    Returns:
        Scalar loss.
    """
    from crossview.retrieval.dense import bev_templates, correlate

    size = tile_features.shape[-1]
    camera = camera or PanoramaCamera(ground_features.shape[-1], ground_features.shape[-2])
    steps = torch.arange(headings, dtype=torch.float32, device=ground_features.device) * (2 * math.pi / headings)
    losses = []
    for b in range(ground_features.shape[0]):
        cell_m = float(mpp[b]) * tile_px / size
        templates = bev_templates(
            ground_features[b],
            ground_confidence[b],
            camera,
            camera_height_m,
            cell_m=cell_m,
            headings_rad=steps + math.radians(float(heading_deg[b])),
        )
        scores = correlate(tile_features[b].float(), templates) / temperature  # (N, S, S)
        row = min(size - 1, max(0, int(float(px_in_tile[b, 0]) * size / tile_px)))
        col = min(size - 1, max(0, int(float(px_in_tile[b, 1]) * size / tile_px)))
        losses.append(torch.logsumexp(scores.flatten(), dim=0) - scores[0, row, col])
    return torch.stack(losses).mean()


def pinhole_crops(panoramas: Tensor, hfov_deg: float, yaw_deg: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Level pinhole views cut from equirectangular panoramas (bilinear, across the seam).

    Args:
        panoramas: (B, 3, H, W) panoramas (DESIGN's convention: the centre column looks along the heading).
        hfov_deg: horizontal field of view of the views, degrees.
        yaw_deg: (B,) azimuth of each view's optical axis from the panorama's centre column, clockwise, degrees.
        size_hw: (height, width) of the views, pixels.

    Returns:
        (B, 3, height, width) views, whose camera is ``PinholeCamera.from_hfov(width, height, hfov_deg)``.
    """
    height, width = size_hw
    rays, _ = PinholeCamera.from_hfov(width, height, hfov_deg).unproject(
        pixel_centers(width, height, device=panoramas.device)
    )
    yaw = torch.deg2rad(yaw_deg.float())[:, None, None]
    x, y, z = rays[..., 0], rays[..., 1], rays[..., 2]
    x, y, z = (part.expand(len(yaw), -1, -1) for part in (x, y, z))
    turned = torch.stack([x * torch.cos(yaw) + z * torch.sin(yaw), y, z * torch.cos(yaw) - x * torch.sin(yaw)], -1)
    uv, _ = PanoramaCamera(panoramas.shape[-1], panoramas.shape[-2]).project(turned)  # (B, h, w, 2)
    return _sample(panoramas, uv.flatten(1, 2), wrap=True).transpose(1, 2).reshape(-1, 3, height, width)

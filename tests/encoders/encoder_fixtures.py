"""Test helpers for the encoders: tiny models, structured synthetic chips, and panoramas/pinhole views rendered
from them with DESIGN.md's formulas (written out here, independently of crossview.geometry)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crossview.encoders import CrossViewModel, get_model

# Channels of the stride 4 / 8 / 16 levels, from torchvision's architectures (documented in backbones.py).
EXPECTED_CHANNELS = {
    "resnet18": (64, 128, 256),
    "resnet34": (64, 128, 256),
    "resnet50": (256, 512, 1024),
    "vgg16": (256, 512, 512),
    "convnext_tiny": (96, 192, 384),
    "efficientnet_b0": (24, 40, 112),
}

TINY = {"pano_height": 64, "pano_width": 256, "polar_height": 64, "polar_width": 256}


def tiny_model(name: str = "safa-resnet18-lite", *, shared: bool = False, seed: int = 0, **overrides) -> CrossViewModel:
    """A randomly initialised model at tiny sizes, in eval mode.

    With ``shared``, the ground branch gets the aerial branch's backbone and column head, so that identical
    inputs give identical column features in both branches (a random model then matches by geometry alone).
    """
    torch.manual_seed(seed)
    model = get_model(name, **{**TINY, **overrides}).eval()
    if shared:
        model.ground_backbone.load_state_dict(model.aerial_backbone.state_dict())
        model.ground_columns.load_state_dict(model.aerial_columns.state_dict())
    return model


def blob_chip(size: int, *, seed: int = 0, blobs: int = 12) -> torch.Tensor:
    """(1, 3, size, size) chip in [0, 1]: coloured Gaussian blobs on a grey ground (structure at every azimuth)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(blobs, 2, generator=generator) * size
    colours = torch.rand(blobs, 3, generator=generator)
    sigma = size / 10
    rows = torch.arange(size, dtype=torch.float32)[:, None] + 0.5
    cols = torch.arange(size, dtype=torch.float32)[None, :] + 0.5
    image = torch.full((3, size, size), 0.5)
    for (row, col), colour in zip(centres, colours, strict=True):
        weight = torch.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma**2))
        image = image * (1 - weight) + colour[:, None, None] * weight
    return image.unsqueeze(0).clamp(0, 1)


def render_panorama_from_chip(
    chip: torch.Tensor, *, heading_deg: float, height_m: float, gsd_m: float, size: tuple[int, int]
) -> torch.Tensor:
    """A flat-ground equirectangular panorama of heading ``heading_deg`` taken ``height_m`` above the chip centre.

    DESIGN.md: column u looks at azimuth heading + (u/W - 0.5) 360 (clockwise from north), row v at elevation
    90 - 180 v / H; a ground point at (east, north) metres lies at chip pixel (col, row) = (S/2 + east/gsd,
    S/2 - north/gsd) (continuous, edge-based). Above the horizon: a uniform sky.
    """
    height, width = size
    s = chip.shape[-1]
    u = torch.arange(width, dtype=torch.float64) + 0.5
    v = torch.arange(height, dtype=torch.float64) + 0.5
    azimuth = torch.deg2rad(heading_deg + (u / width - 0.5) * 360.0)[None, :]
    elevation = torch.deg2rad(90.0 - 180.0 * v / height)[:, None]
    below = elevation < -1e-6
    distance_m = height_m / torch.tan(-elevation.clamp(max=-1e-6))
    east, north = distance_m * torch.sin(azimuth), distance_m * torch.cos(azimuth)
    col, row = s / 2 + east / gsd_m, s / 2 - north / gsd_m
    grid = torch.stack((2 * col / s - 1, 2 * row / s - 1), dim=-1).float().unsqueeze(0)
    ground = F.grid_sample(chip, grid, mode="bilinear", padding_mode="border", align_corners=False)
    sky = torch.tensor([0.6, 0.7, 0.9]).view(1, 3, 1, 1)
    return torch.where(below.expand(height, width)[None, None], ground, sky.expand_as(ground))


def render_pinhole_from_panorama(
    pano: torch.Tensor, *, yaw_deg: float, hfov_deg: float, size: tuple[int, int]
) -> torch.Tensor:
    """A level pinhole view (centred principal point) looking ``yaw_deg`` clockwise of the panorama's centre column.

    Pixel (u, v) -> ray (x, y, z) = ((u - w/2)/f, (v - h/2)/f, 1), azimuth atan2(x, z) + yaw, elevation
    atan2(-y, hypot(x, z)); sampled from the panorama by DESIGN's equirectangular mapping (columns wrap).
    """
    height, width = size
    pano_h, pano_w = pano.shape[-2:]
    focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    u = torch.arange(width, dtype=torch.float64) + 0.5
    v = torch.arange(height, dtype=torch.float64) + 0.5
    x, y = ((u - width / 2) / focal)[None, :], ((v - height / 2) / focal)[:, None]
    azimuth_deg = torch.rad2deg(torch.atan2(x, torch.ones_like(x))) + yaw_deg
    elevation_deg = torch.rad2deg(torch.atan2(-y, torch.sqrt(x * x + 1)))
    col = torch.remainder((azimuth_deg / 360.0 + 0.5) * pano_w, pano_w).expand(height, width)
    row = ((90.0 - elevation_deg) / 180.0 * pano_h).expand(height, width)
    padded = torch.cat([pano[..., -1:], pano, pano[..., :1]], dim=-1)  # wrap the seam for bilinear sampling
    grid = torch.stack((2 * (col + 1) / (pano_w + 2) - 1, 2 * row / pano_h - 1), dim=-1).float().unsqueeze(0)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)


def circular_angle_diff_deg(a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    """|a - b| on the circle, degrees in [0, 180]."""
    diff = torch.remainder(torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64), 360.0)
    return torch.minimum(diff, 360.0 - diff)

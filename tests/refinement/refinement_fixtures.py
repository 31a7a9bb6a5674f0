"""Synthetic refinement problems with an exactly known pose: a smooth random feature field on the ground plane,
sampled at map-chip pixel centres and ray-cast into ground images with DESIGN.md's camera formulas directly
(independently of crossview.geometry).

Each level has its own field, with wavelengths proportional to that level's chip cell (coarse levels vary slowly,
as features of coarse CNN levels do): the map chip samples it at its cell centres, a panorama or pinhole image of
the level's size samples it where each pixel's ray meets the ground, and pixels above the horizon get zero
features and zero confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

F64 = torch.float64
CAMERA_HEIGHT_M = 1.6


@dataclass(frozen=True)
class FeatureField:
    """``C`` channels, each a sum of ``K`` plane waves; evaluated as unit vectors over channels.

    Attributes:
        wave_vectors: (C, K, 2) cycles per metre (east, north); phases: (C, K) radians; offsets: (C,).
    """

    wave_vectors: Tensor
    phases: Tensor
    offsets: Tensor

    @classmethod
    def random(cls, channels: int, min_wavelength_m: float, max_wavelength_m: float, seed: int, waves: int = 4):
        generator = torch.Generator().manual_seed(seed)
        wavelength = min_wavelength_m * (max_wavelength_m / min_wavelength_m) ** torch.rand(
            channels, waves, generator=generator, dtype=F64
        )
        direction = 2 * math.pi * torch.rand(channels, waves, generator=generator, dtype=F64)
        vectors = torch.stack([torch.sin(direction), torch.cos(direction)], dim=-1) / wavelength[..., None]
        phases = 2 * math.pi * torch.rand(channels, waves, generator=generator, dtype=F64)
        offsets = 0.5 * torch.randn(channels, generator=generator, dtype=F64)
        return cls(vectors, phases, offsets)

    def __call__(self, east_m: Tensor, north_m: Tensor) -> Tensor:
        """(...) points -> (..., C) unit feature vectors."""
        points = torch.stack([east_m, north_m], dim=-1)[..., None, None, :]  # (..., 1, 1, 2)
        angle = 2 * math.pi * (points * self.wave_vectors).sum(-1) + self.phases  # (..., C, K)
        raw = torch.sin(angle).sum(-1) + self.offsets
        return torch.nn.functional.normalize(raw, dim=-1)


def chip_cell_centres(
    center_xy_m: tuple[float, float], extent_m: float, size: int, cell_offset: float = 0.0
) -> tuple[Tensor, Tensor]:
    """(size, size) east and north of the cell centres of a north-up chip (row 0 is the northern edge); cell
    ``(i, j)`` is centred ``(j + 0.5 + cell_offset, i + 0.5 + cell_offset)`` cells from the north-west corner."""
    gsd = extent_m / size
    offsets = (torch.arange(size, dtype=F64) + 0.5 + cell_offset - size / 2) * gsd
    north = center_xy_m[1] - offsets[:, None].expand(size, size)
    east = center_xy_m[0] + offsets[None, :].expand(size, size)
    return east, north


def panorama_ground_points(
    height: int, width: int, x_m: float, y_m: float, heading_deg: float, height_m: float, cell_offset: float = 0.0
):
    """Ground points of an equirectangular panorama's pixel centres (DESIGN.md: azimuth ψ + (u/W - 0.5)·360°,
    elevation 90° - 180°·v/H), optionally shifted by ``cell_offset`` pixels in u and v. Returns east, north (H, W)
    and the below-horizon mask."""
    v = torch.arange(height, dtype=F64)[:, None] + 0.5 + cell_offset
    u = torch.arange(width, dtype=F64)[None, :] + 0.5 + cell_offset
    azimuth = torch.deg2rad(heading_deg + (u / width - 0.5) * 360.0).expand(height, width)
    elevation = torch.deg2rad(90.0 - 180.0 * v / height).expand(height, width)
    below = elevation < 0
    distance = torch.where(below, height_m / torch.tan(torch.where(below, -elevation, torch.ones_like(elevation))), 0)
    return x_m + distance * torch.sin(azimuth), y_m + distance * torch.cos(azimuth), below


def pinhole_ground_points(
    height: int,
    width: int,
    hfov_deg: float,
    x_m: float,
    y_m: float,
    heading_deg: float,
    height_m: float,
    pitch_deg: float = 0.0,
):
    """Ground points of a centred pinhole camera's pixel centres, pitched up by ``pitch_deg`` (DESIGN: positive
    pitch tilts the optical axis above the horizon); returns east, north (H, W) and the mask of rays that meet the
    ground."""
    focal = width / 2 / math.tan(math.radians(hfov_deg) / 2)
    v = torch.arange(height, dtype=F64)[:, None] + 0.5
    u = torch.arange(width, dtype=F64)[None, :] + 0.5
    x_n = ((u - width / 2) / focal).expand(height, width)
    y_n = ((v - height / 2) / focal).expand(height, width)
    pitch = math.radians(pitch_deg)
    # Level frame (x right, y down, z forward): the camera's y axis is (0, cos p, sin p), its z axis (0, -sin p, cos p).
    down = y_n * math.cos(pitch) - math.sin(pitch)
    ahead = y_n * math.sin(pitch) + math.cos(pitch)
    below = down > 1e-9
    scale = torch.where(below, height_m / torch.where(below, down, torch.ones_like(down)), 0)
    right, forward = x_n * scale, ahead * scale
    heading = math.radians(heading_deg)
    east = x_m + right * math.cos(heading) + forward * math.sin(heading)
    north = y_m - right * math.sin(heading) + forward * math.cos(heading)
    return east, north, below


@dataclass
class Scene:
    """One synthetic problem (batch 1), levels coarse to fine."""

    ground_feats: list[Tensor]
    ground_confs: list[Tensor]
    chip_feats: list[Tensor]
    chip_confs: list[Tensor]
    chip_center_xy_m: tuple[float, float]
    chip_extent_m: float


def make_scene(
    truth: tuple[float, float, float],
    chip_center_xy_m: tuple[float, float],
    *,
    ground_hw: list[tuple[int, int]],
    chip_px: list[int],
    chip_extent_m: float,
    channels: int = 8,
    camera: str = "panorama",
    hfov_deg: float = 90.0,
    height_m: float = CAMERA_HEIGHT_M,
    wavelength_cells: tuple[float, float] = (8.0, 32.0),
    seed: int = 0,
    cell_offset: float = 0.0,
    pitch_deg: float = 0.0,
) -> Scene:
    """Render a scene with the camera at ``truth = (x_m, y_m, heading_deg)`` (grid heading).

    Level ``l`` uses a field with wavelengths between ``wavelength_cells`` times its chip cell size.
    ``cell_offset`` (panoramas) moves every cell centre of both views by that many cells in u and v;
    ``pitch_deg`` tilts a pinhole camera up (positive) or down.
    """
    scene = Scene([], [], [], [], chip_center_xy_m, chip_extent_m)
    for level, ((gh, gw), size) in enumerate(zip(ground_hw, chip_px, strict=True)):
        gsd = chip_extent_m / size
        field = FeatureField.random(channels, wavelength_cells[0] * gsd, wavelength_cells[1] * gsd, seed * 10 + level)
        east, north = chip_cell_centres(chip_center_xy_m, chip_extent_m, size, cell_offset)
        scene.chip_feats.append(field(east, north).permute(2, 0, 1)[None])
        scene.chip_confs.append(torch.ones(1, 1, size, size, dtype=F64))
        if camera == "panorama":
            g_east, g_north, below = panorama_ground_points(gh, gw, *truth, height_m, cell_offset)
        else:
            g_east, g_north, below = pinhole_ground_points(gh, gw, hfov_deg, *truth, height_m, pitch_deg)
        features = field(g_east, g_north) * below[..., None]
        scene.ground_feats.append(features.permute(2, 0, 1)[None])
        scene.ground_confs.append(below.to(F64)[None, None])
    return scene


def stack_scenes(scenes: list[Scene]) -> dict[str, list[Tensor]]:
    """Concatenate scenes along the batch dimension (same sizes)."""
    keys = ("ground_feats", "ground_confs", "chip_feats", "chip_confs")
    return {key: [torch.cat(maps) for maps in zip(*(getattr(s, key) for s in scenes), strict=True)] for key in keys}


def replace_with_outliers(features: Tensor, fraction: float, seed: int) -> Tensor:
    """Replace a random ``fraction`` of the pixels of (B, C, H, W) unit features by random unit vectors."""
    generator = torch.Generator().manual_seed(seed)
    batch, _, height, width = features.shape
    replace = torch.rand(batch, 1, height, width, generator=generator, dtype=F64) < fraction
    noise = torch.nn.functional.normalize(torch.randn(features.shape, generator=generator, dtype=F64), dim=1)
    return torch.where(replace & (features.abs().sum(1, keepdim=True) > 0), noise.to(features.dtype), features)

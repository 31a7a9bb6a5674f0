"""Benchmark of the LM refiner at the shipped model's feature sizes: ms per candidate, batched vs one at a time,
analytic vs autograd Jacobians.

Sizes are those of ``synth-v1`` (``load_checkpoint("synth-v1").model_config``: panorama 64 x 256, aerial chip
128 px, ``refine_channels`` (32, 32, 16)): ground feature levels 4 x 16, 8 x 32, 16 x 64 (strides 16, 8, 4) and chip
levels 8, 16, 32 cells over a 72 m chip. Features are a smooth synthetic field rendered into the panorama through
:func:`crossview.geometry.ground.image_to_ground` at a known pose; candidates start 3 m and 8 degrees away.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from crossview.bench import BenchConfig, batch_figures, time_call
from crossview.geometry.cameras import PanoramaCamera, pixel_centers
from crossview.geometry.ground import MapChip, image_to_ground
from crossview.geometry.pose import Pose2
from crossview.refinement.refiner import RefinerConfig, refine_candidates

__all__ = ["BENCH_SIZES", "bench_refiner", "synthetic_batch"]

# synth-v1's refinement feature sizes (pinned against the checkpoint's config by a test).
BENCH_SIZES = {
    "pano_hw": (64, 256),
    "aerial_size": 128,
    "strides": (16, 8, 4),
    "refine_channels": (32, 32, 16),
    "chip_extent_m": 72.0,
    "camera_height_m": 1.6,
}
START_OFFSET_M = 3.0
START_OFFSET_DEG = 8.0


def _field(points: Tensor, channels: int, wavelength_m: float, generator: torch.Generator) -> Tensor:
    """A smooth random unit-vector field (C channels, 4 plane waves each) at (..., 2) points -> (..., C)."""
    dtype = points.dtype
    angle = 2 * math.pi * torch.rand(channels, 4, generator=generator, dtype=torch.float64).to(dtype)
    scale = wavelength_m * (1 + 3 * torch.rand(channels, 4, generator=generator, dtype=torch.float64)).to(dtype)
    vectors = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1) / scale[..., None]
    phases = 2 * math.pi * torch.rand(channels, 4, generator=generator, dtype=torch.float64).to(dtype)
    waves = torch.sin(2 * math.pi * (points[..., None, None, :] * vectors).sum(-1) + phases).sum(-1)
    return torch.nn.functional.normalize(waves + 0.3, dim=-1)


def synthetic_batch(batch: int, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """A batch of refinement problems at :data:`BENCH_SIZES`, with the true poses.

    Returns:
        dict with the keyword arguments of :func:`refine_candidates` (``ground_feats``, ``ground_confs``,
        ``chip_feats``, ``chip_confs``, ``chips``, ``camera``, ``camera_height_m``, ``init_pose``) and ``truth``
        (a Pose2).
    """
    generator = torch.Generator().manual_seed(seed)
    pano_h, pano_w = BENCH_SIZES["pano_hw"]
    extent, height_m = BENCH_SIZES["chip_extent_m"], BENCH_SIZES["camera_height_m"]
    truth = torch.zeros(batch, 3, dtype=torch.float64)
    truth[:, 2] = 2 * math.pi * torch.rand(batch, generator=generator, dtype=torch.float64)
    direction = 2 * math.pi * torch.rand(batch, generator=generator, dtype=torch.float64)
    init = truth.clone()
    init[:, 0] += START_OFFSET_M * torch.cos(direction)
    init[:, 1] += START_OFFSET_M * torch.sin(direction)
    init[:, 2] += math.radians(START_OFFSET_DEG)
    chips = MapChip.square(init[:, :2].clone(), extent / BENCH_SIZES["aerial_size"], BENCH_SIZES["aerial_size"])
    problem: dict[str, Any] = {"ground_feats": [], "ground_confs": [], "chip_feats": [], "chip_confs": []}
    for stride, channels in zip(BENCH_SIZES["strides"], BENCH_SIZES["refine_channels"], strict=True):
        size = BENCH_SIZES["aerial_size"] // stride
        level_chip = MapChip.square(chips.center_xy_m, extent / size, size)
        field_seed = torch.Generator().manual_seed(seed * 7 + stride)
        chip_points = level_chip.pixel_centers_map(dtype=torch.float64)
        problem["chip_feats"].append(_field(chip_points, channels, 4 * extent / size, field_seed).permute(0, 3, 1, 2))
        problem["chip_confs"].append(torch.ones(batch, 1, size, size, dtype=torch.float64))
        height, width = pano_h // stride, pano_w // stride
        uv = pixel_centers(width, height, dtype=torch.float64).expand(batch, height, width, 2)
        ground_xy, seen = image_to_ground(uv, Pose2(truth), PanoramaCamera(width, height), height_m)
        field_seed = torch.Generator().manual_seed(seed * 7 + stride)
        features = _field(ground_xy, channels, 4 * extent / size, field_seed) * seen[..., None]
        problem["ground_feats"].append(features.permute(0, 3, 1, 2))
        problem["ground_confs"].append(seen[:, None].to(torch.float64))
    for key in ("ground_feats", "ground_confs", "chip_feats", "chip_confs"):
        problem[key] = [t.to(dtype) for t in problem[key]]
    problem.update(
        chips=chips,
        camera=PanoramaCamera(pano_w, pano_h),
        camera_height_m=height_m,
        init_pose=Pose2(init),
        truth=Pose2(truth),
    )
    return problem


def _one_at_a_time(problem: dict[str, Any], config: RefinerConfig) -> None:
    batch = problem["init_pose"].shape[0]
    for i in range(batch):
        refine_candidates(
            [t[i : i + 1] for t in problem["ground_feats"]],
            [t[i : i + 1] for t in problem["ground_confs"]],
            [t[i : i + 1] for t in problem["chip_feats"]],
            [t[i : i + 1] for t in problem["chip_confs"]],
            MapChip(problem["chips"].center_xy_m[i : i + 1], problem["chips"].gsd_m, *_chip_size(problem["chips"])),
            problem["camera"],
            problem["camera_height_m"],
            problem["init_pose"][i : i + 1],
            config,
        )


def _chip_size(chips: MapChip) -> tuple[int, int]:
    return chips.width_px, chips.height_px


def _batched(problem: dict[str, Any], config: RefinerConfig):
    args = {key: value for key, value in problem.items() if key != "truth"}
    return refine_candidates(**args, config=config)


def bench_refiner(config: BenchConfig) -> dict[str, Any]:
    """Milliseconds per candidate of :func:`refine_candidates` at synth-v1's sizes (3 levels, float32).

    Variants: ``batched_analytic`` and ``batched_autograd`` (all candidates in one call), ``single_analytic``
    (one call per candidate). ``settings`` records the sizes, the accuracy of the batched run and the speed-ups.
    """
    batch = config.batch_size(full=32, quick=8)
    problem = synthetic_batch(batch)
    problem = {key: _to_device(value, config.device) for key, value in problem.items()}
    variants: dict[str, Any] = {}
    analytic, autograd = RefinerConfig(jacobian="analytic"), RefinerConfig(jacobian="autograd")
    result = _batched(problem, analytic)
    variants["batched_analytic"] = batch_figures(time_call(lambda: _batched(problem, analytic), config), batch)
    variants["batched_autograd"] = batch_figures(time_call(lambda: _batched(problem, autograd), config), batch)
    single_config = BenchConfig(config.device, quick=True, batch=config.batch)  # 1 warm-up, 3 repeats
    variants["single_analytic"] = batch_figures(
        time_call(lambda: _one_at_a_time(problem, analytic), single_config), batch
    )
    for figures in variants.values():
        figures["ms_per_candidate"] = round(figures["ms_per_batch"] / batch, 3)
    truth = problem["truth"]
    error_m = torch.linalg.norm(result.pose.xy_m - truth.xy_m, dim=-1)
    error_deg = torch.rad2deg(result.pose.heading_rad - truth.heading_rad).abs()
    settings = {
        "device": config.device,
        "candidates": batch,
        "levels_ground_hw": [[s // BENCH_SIZES["strides"][k] for s in BENCH_SIZES["pano_hw"]] for k in range(3)],
        "levels_chip_px": [BENCH_SIZES["aerial_size"] // s for s in BENCH_SIZES["strides"]],
        "channels": list(BENCH_SIZES["refine_channels"]),
        "start_offset": [START_OFFSET_M, START_OFFSET_DEG],
        # Bilinear interpolation of 2.25 m cells biases a smooth synthetic field's optimum by a few centimetres.
        "success_rate_10cm_0.1deg": round(float(((error_m < 0.1) & (error_deg < 0.1)).double().mean()), 3),
        "median_error_m": round(float(error_m.median()), 4),
        "median_error_deg": round(float(error_deg.median()), 4),
        "mean_iterations": round(float(result.iterations.double().mean()), 2),
        "speedup_batched_vs_single": round(
            variants["single_analytic"]["ms_per_batch"] / variants["batched_analytic"]["ms_per_batch"], 2
        ),
        "autograd_vs_analytic_time": round(
            variants["batched_autograd"]["ms_per_batch"] / variants["batched_analytic"]["ms_per_batch"], 2
        ),
    }
    return {"unit": "candidates", "settings": settings, "variants": variants}


def _to_device(value: Any, device: str) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    if isinstance(value, Pose2):
        return Pose2(value.data.to(device))
    if isinstance(value, MapChip):
        return MapChip(value.center_xy_m.to(device), value.gsd_m, value.width_px, value.height_px)
    return value

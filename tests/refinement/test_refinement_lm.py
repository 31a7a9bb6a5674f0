"""The LM refiner end to end on exact synthetic features: accuracy, convergence basin, outliers, batching, pinhole
cameras, failed elements, covariance, settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from refinement_fixtures import (
    CAMERA_HEIGHT_M,
    make_scene,
    replace_with_outliers,
    stack_scenes,
)

from crossview.errors import ConfigError
from crossview.geometry.cameras import PanoramaCamera, PinholeCamera
from crossview.geometry.ground import MapChip, level_to_camera_rotation
from crossview.geometry.pose import Pose2
from crossview.refinement import RefinementError, RefinerConfig, refine_candidates

pytestmark = pytest.mark.usefixtures("single_torch_thread")

F64 = torch.float64
EXTENT_M = 12.8  # finest level: 64 cells of 0.2 m
PANO_LEVELS = [(8, 32), (16, 64), (32, 128)]
PINHOLE_LEVELS = [(12, 16), (24, 32), (48, 64)]
CHIP_LEVELS = [16, 32, 64]
# Somewhere in UTM: the refiner must keep millimetres with float32 features.
ORIGIN = (512_345.0, 5_403_210.0)


@dataclass
class Batch:
    problem: dict
    chips: MapChip
    init: Pose2
    truth: torch.Tensor  # (B, 3) x_m, y_m, heading_deg
    camera: PanoramaCamera | PinholeCamera


def build_batch(
    starts,
    *,
    camera="panorama",
    dtype=torch.float32,
    seed=0,
    chip_on_start=True,
    chip_levels=CHIP_LEVELS,
    extent_m=EXTENT_M,
    cell_offset=0.0,
    pitch_deg=0.0,
) -> Batch:
    """One scene per start ``(truth (x, y, heading_deg), init (x, y, heading_deg))``; chips centred on the start
    (or on the truth)."""
    levels = PANO_LEVELS if camera == "panorama" else PINHOLE_LEVELS
    scenes, centres = [], []
    for k, (truth, init) in enumerate(starts):
        centre = init[:2] if chip_on_start else truth[:2]
        centres.append(centre)
        scenes.append(
            make_scene(
                truth,
                centre,
                ground_hw=levels,
                chip_px=chip_levels,
                chip_extent_m=extent_m,
                camera=camera,
                seed=seed + k,
                cell_offset=cell_offset,
                pitch_deg=pitch_deg,
            )
        )
    problem = {key: [t.to(dtype) for t in maps] for key, maps in stack_scenes(scenes).items()}
    height, width = levels[-1][0] * 4, levels[-1][1] * 4  # the input image; the finest level is stride 4
    cam = PanoramaCamera(width, height) if camera == "panorama" else PinholeCamera.from_hfov(width, height, 90.0)
    init = torch.tensor([s[1] for s in starts], dtype=F64)
    init[:, 2] = torch.deg2rad(init[:, 2])
    input_px = 4 * chip_levels[-1]  # the input chip; the finest level is stride 4
    chips = MapChip(torch.tensor(centres, dtype=F64), extent_m / input_px, input_px, input_px)
    return Batch(problem, chips, Pose2(init), torch.tensor([s[0] for s in starts], dtype=F64), cam)


def random_starts(count: int, max_offset_m: float, max_offset_deg: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    starts = []
    for k in range(count):
        x, y = ORIGIN[0] + 40.0 * k, ORIGIN[1]
        heading = 360 * torch.rand(1, generator=generator, dtype=F64).item()
        radius = max_offset_m * math.sqrt(torch.rand(1, generator=generator, dtype=F64).item())
        angle = 2 * math.pi * torch.rand(1, generator=generator, dtype=F64).item()
        turn = max_offset_deg * (2 * torch.rand(1, generator=generator, dtype=F64).item() - 1)
        init = (x + radius * math.cos(angle), y + radius * math.sin(angle), heading + turn)
        starts.append(((x, y, heading), init))
    return starts


def run(batch: Batch, config: RefinerConfig | None = None, **overrides):
    args = dict(
        ground_feats=batch.problem["ground_feats"],
        ground_confs=batch.problem["ground_confs"],
        chip_feats=batch.problem["chip_feats"],
        chip_confs=batch.problem["chip_confs"],
        chips=batch.chips,
        camera=batch.camera,
        camera_height_m=CAMERA_HEIGHT_M,
        init_pose=batch.init,
        config=config,
    )
    args.update(overrides)
    return refine_candidates(**args)


def errors(result, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(position error m, absolute heading error deg), each (B,)."""
    error_m = torch.linalg.norm(result.pose.xy_m - truth[:, :2], dim=-1)
    error_deg = (torch.rad2deg(result.pose.heading_rad) - truth[:, 2] + 180) % 360 - 180
    return error_m, error_deg.abs()


def test_recovers_the_pose_to_a_centimetre_in_utm_coordinates_with_float32_features():
    batch = build_batch(random_starts(6, 2.0, 8.0, seed=1))
    result = run(batch)
    error_m, error_deg = errors(result, batch.truth)
    assert (error_m < 0.01).all(), error_m
    assert (error_deg < 0.05).all(), error_deg
    assert result.converged.all() and not result.failed.any()
    assert result.pose.dtype == F64
    assert (result.num_points > 1000).all()  # 16 rows x 128 columns below the horizon, most inside the chip


def test_convergence_basin_5m_15deg():
    # Chips centred on the (wrong) start, as retrieval would crop them; measured over 64 starts: 98% succeed
    # within 5 m / 15°, 88% within 6 m / 20°, 61% within 8 m / 25° (wavelengths 8-32 cells per level).
    batch = build_batch(random_starts(16, 5.0, 15.0, seed=2), seed=100)
    error_m, error_deg = errors(run(batch), batch.truth)
    success = (error_m < 0.01) & (error_deg < 0.05)
    assert success.sum() >= 14, (error_m, error_deg)


def test_thirty_percent_outliers_are_absorbed_by_the_robust_loss():
    batch = build_batch(random_starts(8, 3.0, 10.0, seed=3), seed=200)
    clean = [t.clone() for t in batch.problem["ground_feats"]]
    batch.problem["ground_feats"] = [replace_with_outliers(t, 0.3, seed=k) for k, t in enumerate(clean)]
    # The outliers are really there: about 30% of the ground pixels changed.
    changed = (batch.problem["ground_feats"][-1] != clean[-1]).any(1).double().mean() / 0.5  # lower half only
    assert 0.25 < changed.item() < 0.35
    error_m, error_deg = errors(run(batch), batch.truth)
    assert (error_m < 0.01).sum() >= 7 and (error_deg < 0.05).sum() >= 7, (error_m, error_deg)
    # Least squares, same data: the outliers drag the heading.
    _, error_deg_l2 = errors(run(batch, RefinerConfig(loss="l2")), batch.truth)
    assert error_deg_l2.median() > 2 * error_deg.median()


def test_pinhole_camera():
    # A 90° pinhole sees the ground ahead only: a 25.6 m chip (128 cells of 0.2 m) gives it lever arms long enough
    # for the heading (with the 12.8 m chip, one start in six ends 0.09° off: bilinear interpolation of the map
    # then biases the cost's minimum itself, the cost at the estimate being below the cost at the truth).
    batch = build_batch(
        random_starts(6, 1.5, 6.0, seed=4),
        camera="pinhole",
        seed=300,
        chip_on_start=False,
        chip_levels=[32, 64, 128],
        extent_m=25.6,
    )
    result = run(batch)
    error_m, error_deg = errors(result, batch.truth)
    assert (error_m < 0.01).all(), error_m
    assert (error_deg < 0.05).all(), error_deg


def test_pitched_pinhole_with_its_tilt():
    # Pitched 20° down, the camera sees the ground in every row; R_cam_from_level (one for all) makes it exact.
    batch = build_batch(
        random_starts(4, 1.5, 6.0, seed=13),
        camera="pinhole",
        seed=1200,
        chip_on_start=False,
        chip_levels=[32, 64, 128],
        extent_m=25.6,
        pitch_deg=-20.0,
    )
    error_m, error_deg = errors(run(batch, R_cam_from_level=level_to_camera_rotation(-20.0)), batch.truth)
    assert (error_m < 0.01).all() and (error_deg < 0.05).all(), (error_m, error_deg)
    error_m, _ = errors(run(batch), batch.truth)  # assumed level: ground distances all wrong
    assert (error_m > 0.1).all(), error_m


def test_batched_equals_one_at_a_time_and_autograd_equals_analytic():
    batch = build_batch(random_starts(3, 2.0, 6.0, seed=5), dtype=F64, seed=400)
    together = run(batch)
    for i in range(3):
        alone = run(
            batch,
            ground_feats=[t[i : i + 1] for t in batch.problem["ground_feats"]],
            ground_confs=[t[i : i + 1] for t in batch.problem["ground_confs"]],
            chip_feats=[t[i : i + 1] for t in batch.problem["chip_feats"]],
            chip_confs=[t[i : i + 1] for t in batch.problem["chip_confs"]],
            chips=MapChip(batch.chips.center_xy_m[i : i + 1], batch.chips.gsd_m, 256, 256),
            init_pose=batch.init[i : i + 1],
        )
        torch.testing.assert_close(alone.pose.data[0], together.pose.data[i], rtol=0, atol=1e-9)
        assert alone.iterations[0] == together.iterations[i]
        torch.testing.assert_close(alone.covariance[0], together.covariance[i], rtol=1e-6, atol=0)
    autograd = run(batch, RefinerConfig(jacobian="autograd"))
    torch.testing.assert_close(autograd.pose.data, together.pose.data, rtol=0, atol=1e-8)


def test_cell_offsets_place_cnn_cell_centres():
    # Cells centred 0.375 cell up-left of edge-based tiling in both views (a stride-4 CNN centring cell j on
    # input pixel index 4 j): recovered with the matching offset, biased by decimetres without it.
    batch = build_batch(random_starts(4, 1.0, 4.0, seed=12), seed=1100, cell_offset=-0.375)
    error_m, error_deg = errors(run(batch, cell_offsets=-0.375), batch.truth)
    assert (error_m < 0.01).all() and (error_deg < 0.05).all(), (error_m, error_deg)
    error_m, error_deg = errors(run(batch), batch.truth)
    # Unmodelled, the chip shifts 0.375 cell (0.2 m) diagonally and the panorama 0.375 column (of 128) in azimuth.
    assert error_m.numpy() == pytest.approx(0.375 * 0.2 * math.sqrt(2), rel=0.2)
    assert error_deg.numpy() == pytest.approx(0.375 * 360 / 128, rel=0.3)
    with pytest.raises(RefinementError, match="cell_offsets"):
        run(batch, cell_offsets=[0.0, 0.0])


def test_failed_elements_are_flagged_and_do_not_poison_the_batch():
    batch = build_batch(random_starts(4, 1.0, 4.0, seed=6), dtype=F64, seed=500)
    reference = run(batch)
    problem = {key: [t.clone() for t in maps] for key, maps in batch.problem.items()}
    problem["ground_feats"][1][1, 0, 12, 5] = math.nan  # a NaN feature
    problem["ground_confs"][0][2] = 0.0  # the coarse level sees nothing: skipped there
    for key in ("ground_confs",):
        for level in range(3):
            problem[key][level][3] = 0.0  # no confident pixel at all: degenerate
    result = run(
        batch,
        ground_feats=problem["ground_feats"],
        ground_confs=problem["ground_confs"],
    )
    assert result.failed.tolist() == [False, True, False, True]
    assert not result.converged[1] and not result.converged[3]
    torch.testing.assert_close(result.pose.data[0], reference.pose.data[0], rtol=0, atol=1e-12)
    error_m, _ = errors(result, batch.truth)
    assert error_m[2] < 0.01  # refined from the middle level on
    torch.testing.assert_close(result.pose.data[[1, 3]], batch.init.data[[1, 3]], rtol=0, atol=0)
    assert torch.isnan(result.covariance[[1, 3]]).all() and torch.isinf(result.cost[[1, 3]]).all()
    assert torch.isfinite(result.covariance[[0, 2]]).all()


def test_a_nan_initial_pose_fails_alone():
    batch = build_batch(random_starts(2, 1.0, 4.0, seed=7), seed=600)
    init = batch.init.data.clone()
    init[1, 2] = math.nan
    result = run(batch, init_pose=Pose2(init))
    assert result.failed.tolist() == [False, True]
    assert errors(result, batch.truth)[0][0] < 0.01


def test_images_times_candidates_share_ground_features():
    # One image, three candidates: ground maps of batch 1 are used by all three (image-major flattening).
    truth = (ORIGIN[0], ORIGIN[1], 75.0)
    starts = [
        (truth, (ORIGIN[0] + dx, ORIGIN[1] + dy, 75.0 + dh)) for dx, dy, dh in [(1, 0, 3), (0, -1.5, -5), (2, 1, 0)]
    ]
    batch = build_batch(starts, dtype=F64, seed=700, chip_on_start=True)
    ground = {key: [t[:1] for t in batch.problem[key]] for key in ("ground_feats", "ground_confs")}
    shared = run(batch, **ground)
    # The scenes share the truth but have their own fields, so compare with ground maps repeated explicitly.
    repeated = run(batch, **{key: [t.expand(3, -1, -1, -1) for t in maps] for key, maps in ground.items()})
    torch.testing.assert_close(shared.pose.data, repeated.pose.data, rtol=0, atol=0)


def test_convention_covariance_in_metres_and_radians_matches_the_scatter():
    # Least squares with i.i.d. Gaussian feature noise of known sigma: the predicted covariance (m, m, rad) must
    # match the scatter of the estimates over noise draws, and sigma^2 the noise variance.
    draws, sigma = 32, 0.05
    truth = (ORIGIN[0], ORIGIN[1], 20.0)
    batch = build_batch([(truth, (ORIGIN[0] + 0.3, ORIGIN[1] - 0.2, 21.0))], dtype=F64, seed=800)
    generator = torch.Generator().manual_seed(9)
    noisy = []
    for level, (feats, confs) in enumerate(
        zip(batch.problem["ground_feats"], batch.problem["ground_confs"], strict=True)
    ):
        noise = sigma * torch.randn((draws, *feats.shape[1:]), generator=generator, dtype=F64) * confs
        noisy.append(feats + noise if level == 2 else feats.expand(draws, -1, -1, -1))
    expand = [t.expand(draws, -1, -1, -1) for t in batch.problem["chip_feats"]]
    result = run(
        batch,
        RefinerConfig(loss="l2"),
        ground_feats=noisy,
        ground_confs=[t.expand(draws, -1, -1, -1) for t in batch.problem["ground_confs"]],
        chip_feats=expand,
        chip_confs=[t.expand(draws, -1, -1, -1) for t in batch.problem["chip_confs"]],
        chips=MapChip(batch.chips.center_xy_m.expand(draws, 2), batch.chips.gsd_m, 256, 256),
        init_pose=Pose2(batch.init.data.expand(draws, 3)),
    )
    assert result.converged.all()
    estimates = torch.cat([result.pose.xy_m, result.pose.heading_rad[:, None]], dim=-1)
    empirical_std = estimates.std(dim=0)
    predicted_std = result.covariance.diagonal(dim1=1, dim2=2).mean(0).sqrt()
    ratio = empirical_std / predicted_std
    assert ((ratio > 0.6) & (ratio < 1.5)).all(), (empirical_std, predicted_std)
    assert predicted_std[2] < math.radians(0.5)  # radians, not degrees
    assert result.sigma2.median().item() == pytest.approx(sigma**2, rel=0.25)


def test_converged_flag_and_iteration_count_follow_the_budget():
    batch = build_batch(random_starts(2, 3.0, 8.0, seed=10), seed=900)
    short = run(batch, RefinerConfig(iterations=(0, 0, 1)))
    assert short.iterations.tolist() == [1, 1]
    assert not short.converged.any() and not short.failed.any()
    full = run(batch, RefinerConfig(iterations=20))
    assert full.converged.all() and (full.iterations > 1).all()


@pytest.mark.parametrize(
    "settings",
    [
        {"iterations": -1},
        {"stop_translation_m": 0.0},
        {"stop_rotation_deg": math.nan},
        {"loss": "tukey"},
        {"loss_scale": -1.0},
        {"lambda_up": 1.0},
        {"lambda_max": 1e-7},
        {"jacobian": "numeric"},
        {"min_points": 2},
        {"max_distance_m": 0.0},
    ],
)
def test_invalid_settings_raise_config_error(settings):
    with pytest.raises(ConfigError, match="refiner"):
        RefinerConfig(**settings)


def test_inconsistent_inputs_raise_refinement_error():
    batch = build_batch(random_starts(2, 1.0, 2.0, seed=11), seed=1000)
    with pytest.raises(RefinementError, match="same levels"):
        run(batch, ground_feats=batch.problem["ground_feats"][1:])
    with pytest.raises(RefinementError, match="batch 2"):
        run(batch, chip_feats=[t[:1] for t in batch.problem["chip_feats"]])
    with pytest.raises(RefinementError, match="channels differ"):
        run(batch, chip_feats=[t[:, :4] for t in batch.problem["chip_feats"]])
    with pytest.raises(ConfigError, match="one number per level"):
        run(batch, RefinerConfig(iterations=(5, 5)))
    assert issubclass(RefinementError, ValueError)

"""Levenberg-Marquardt refinement of 3-DoF poses on multi-scale features, coarse to fine, batched.

For each batch element (an image x candidate pair) and each level, coarse to fine, the refiner minimises the
confidence-weighted robust feature cost ``E(p) = sum_k w_k rho(||r_k(p)||^2)`` of
:mod:`crossview.refinement.residuals` over ``p = (x_m, y_m, heading_rad)``: one damped Gauss-Newton step per
iteration (:func:`crossview.refinement.solver.damped_step`), accepted when it lowers ``E`` (then ``lambda`` is
divided by ``lambda_down``) and rejected otherwise (``lambda`` multiplied by ``lambda_up``). An element stops at a
level when the proposed step is below both ``stop_translation_m`` and ``stop_rotation_deg`` (or ``lambda`` reaches
``lambda_max``); a level ends when every element has stopped or after its iteration budget.

Failed elements (non-finite inputs, too few valid points at the last level, a singular final Hessian) are flagged
in ``RefineResult.failed``, keep their initial pose and never affect the other elements.

Covariance: ``sigma^2 H^-1`` with the final undamped Gauss-Newton Hessian ``H = sum w rho' J^T J`` of the finest
level and ``sigma^2 = E / (N - 3)``, ``N`` the number of scalar residuals (valid points x channels). Neighbouring
feature residuals are correlated, so this is a formal (optimistic) covariance; calibrate it on data before reading
it as a standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from crossview.errors import ConfigError, CrossviewError
from crossview.geometry.cameras import Camera, PinholeCamera
from crossview.geometry.ground import MapChip
from crossview.geometry.pose import Pose2
from crossview.refinement.residuals import JACOBIANS, LevelProblem, build_level, linearize, normal_equations
from crossview.refinement.solver import ROBUST_LOSSES, damped_step, robust_loss

__all__ = ["RefineResult", "RefinementError", "RefinerConfig", "refine", "refine_candidates"]


class RefinementError(CrossviewError, ValueError):
    """Inputs of the refiner are inconsistent (shapes, level counts, batch sizes)."""


@dataclass(frozen=True)
class RefinerConfig:
    """Settings of the LM refiner (defaults in brackets).

    Attributes:
        iterations: maximum LM iterations per level, coarse to fine; one number applies to every level [(8, 8, 10)].
        stop_translation_m: an element stops at a level when a proposed step moves it less than this, metres,
            and turns it less than ``stop_rotation_deg`` [0.001].
        stop_rotation_deg: rotation threshold of the stop test, degrees [0.01].
        loss: robust loss on the squared feature residual norm: ``"l2"``, ``"huber"`` or ``"cauchy"`` [cauchy].
        loss_scale: residual norm (feature units; unit-norm features differ by at most 2) where the robust loss
            departs from least squares; tuned on synthetic features with 30% outliers, retune on a trained
            model's residuals [0.25].
        lambda_init: initial Marquardt damping at each level [0.01].
        lambda_up: damping factor after a rejected step (the cost went up) [10].
        lambda_down: damping divisor after an accepted step [10].
        lambda_min: lower bound of the damping [1e-6].
        lambda_max: upper bound; an element whose damping reaches it has stopped (no step lowers the cost) [1e6].
        max_distance_m: ignore ground points farther than this from the camera, metres; None: the chip limits
            them [None].
        min_points: fewer valid points than this at the finest level (at the final pose) marks the element
            failed; a coarser level with fewer is skipped for that element [8].
        jacobian: ``"analytic"`` (chain rule) or ``"autograd"`` (forward-mode AD through grid_sample); they agree
            to rounding, the analytic one is faster [analytic].
    """

    iterations: int | tuple[int, ...] = (8, 8, 10)
    stop_translation_m: float = 1e-3
    stop_rotation_deg: float = 1e-2
    loss: str = "cauchy"
    loss_scale: float = 0.25
    lambda_init: float = 1e-2
    lambda_up: float = 10.0
    lambda_down: float = 10.0
    lambda_min: float = 1e-6
    lambda_max: float = 1e6
    max_distance_m: float | None = None
    min_points: int = 8
    jacobian: str = "analytic"

    def __post_init__(self) -> None:
        its = (self.iterations,) if isinstance(self.iterations, int) else tuple(self.iterations)
        if not its or any(not isinstance(n, int) or n < 0 for n in its):
            raise ConfigError(f"refiner iterations must be non-negative integers, got {self.iterations!r}")
        positive = ("stop_translation_m", "stop_rotation_deg", "loss_scale", "lambda_init", "lambda_min")
        for name in positive:
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"refiner {name} must be positive and finite, got {getattr(self, name)!r}")
        for name in ("lambda_up", "lambda_down"):
            if not getattr(self, name) > 1:
                raise ConfigError(f"refiner {name} must be greater than 1, got {getattr(self, name)!r}")
        if not self.lambda_max > self.lambda_min:
            raise ConfigError(f"refiner lambda_max {self.lambda_max} must exceed lambda_min {self.lambda_min}")
        if self.loss not in ROBUST_LOSSES:
            raise ConfigError(f"refiner loss must be one of {', '.join(ROBUST_LOSSES)}, got {self.loss!r}")
        if self.jacobian not in JACOBIANS:
            raise ConfigError(f"refiner jacobian must be one of {', '.join(JACOBIANS)}, got {self.jacobian!r}")
        if self.max_distance_m is not None and not self.max_distance_m > 0:
            raise ConfigError(f"refiner max_distance_m must be positive or None, got {self.max_distance_m!r}")
        if self.min_points < 3:
            raise ConfigError(f"refiner min_points must be at least 3, got {self.min_points!r}")

    def level_iterations(self, levels: int) -> tuple[int, ...]:
        """Iteration budget of each of ``levels`` levels (coarse to fine)."""
        if isinstance(self.iterations, int):
            return (self.iterations,) * levels
        if len(self.iterations) != levels:
            raise ConfigError(f"refiner iterations {self.iterations!r} must give one number per level ({levels})")
        return tuple(self.iterations)


@dataclass
class RefineResult:
    """Refined poses of a batch of ``B`` elements (images x candidates).

    Attributes:
        pose: refined ``Pose2`` of batch shape (B,) in the map frame (grid heading, radians, unwrapped), in the
            initial pose's dtype; failed elements keep their initial pose.
        covariance: (B, 3, 3) covariance of ``(x_m, y_m, heading_rad)`` in (m, m, rad); NaN where failed.
        cost: (B,) final robust cost at the finest level (inf where failed).
        iterations: (B,) LM iterations run, all levels together.
        converged: (B,) bool, the finest level ended on the step-size test (not on its iteration budget).
        failed: (B,) bool, non-finite inputs, too few valid points or a singular final Hessian.
        num_points: (B,) valid ground points at the final pose, finest level.
        sigma2: (B,) residual variance ``cost / (N - 3)`` per scalar residual (``N`` = points x channels); NaN
            where failed.
    """

    pose: Pose2
    covariance: Tensor
    cost: Tensor
    iterations: Tensor
    converged: Tensor
    failed: Tensor
    num_points: Tensor
    sigma2: Tensor = field(repr=False)


@dataclass
class _Evaluation:
    """Cost and normal equations of every element at one pose."""

    cost: Tensor  # (B,)
    g: Tensor  # (B, 3)
    H: Tensor  # (B, 3, 3)
    num_points: Tensor  # (B,)

    def select(self, take: Tensor, other: _Evaluation) -> _Evaluation:
        """``self`` where ``take`` (B,), else ``other``."""
        return _Evaluation(
            torch.where(take, self.cost, other.cost),
            torch.where(take[:, None], self.g, other.g),
            torch.where(take[:, None, None], self.H, other.H),
            torch.where(take, self.num_points, other.num_points),
        )


def _evaluate(problem: LevelProblem, pose_local: Tensor, config: RefinerConfig) -> _Evaluation:
    lin = linearize(problem, pose_local, config.jacobian)
    squared = (lin.residuals * lin.residuals).sum(-1)
    rho, omega = robust_loss(squared, config.loss, config.loss_scale)
    cost = (lin.weights * rho).sum(-1)
    g, H = normal_equations(lin, lin.weights * omega)
    finite = torch.isfinite(cost) & torch.isfinite(g).all(-1) & torch.isfinite(H).flatten(1).all(-1)
    cost = torch.where(finite, cost, torch.full_like(cost, math.inf))
    return _Evaluation(cost, g, H, lin.valid.sum(-1))


def _refine_level(
    problem: LevelProblem, pose_local: Tensor, usable: Tensor, iterations: int, config: RefinerConfig
) -> tuple[Tensor, _Evaluation, Tensor, Tensor]:
    """LM iterations at one level. Returns (pose_local, evaluation at it, iterations run (B,), stopped (B,))."""
    current = _evaluate(problem, pose_local, config)
    active = usable & torch.isfinite(current.cost) & (current.num_points >= config.min_points)
    lam = torch.full_like(current.cost, config.lambda_init)
    count = torch.zeros(pose_local.shape[0], dtype=torch.int64, device=pose_local.device)
    stopped = torch.zeros_like(active)
    stop_rad = math.radians(config.stop_rotation_deg)
    for _ in range(iterations):
        if not bool(active.any()):
            break
        delta, solved = damped_step(current.g, current.H, lam, active)
        trial_pose = pose_local + delta
        trial = _evaluate(problem, trial_pose, config)
        accept = active & solved & (trial.cost < current.cost)
        pose_local = torch.where(accept[:, None], trial_pose, pose_local)
        current = trial.select(accept, current)
        lam = torch.where(accept, lam / config.lambda_down, lam * config.lambda_up)
        lam = lam.clamp(config.lambda_min, config.lambda_max)
        small = (torch.linalg.norm(delta[:, :2], dim=-1) < config.stop_translation_m) & (delta[:, 2].abs() < stop_rad)
        done = active & ((small & solved) | (lam >= config.lambda_max) | ~solved)
        count = count + active.to(torch.int64)
        stopped = stopped | (done & solved)
        active = active & ~done
    return pose_local, current, count, stopped


def _covariance(evaluation: _Evaluation, channels: int) -> tuple[Tensor, Tensor, Tensor]:
    """(covariance (B, 3, 3) float64, sigma2 (B,), ok (B,)) from the final Hessian and cost."""
    H = evaluation.H.double()
    scalars = evaluation.num_points.double() * channels
    sigma2 = evaluation.cost.double() / (scalars - 3).clamp(min=1)
    usable = torch.isfinite(H).flatten(1).all(-1) & torch.isfinite(sigma2) & (scalars > 3)
    H = torch.where(usable[:, None, None], H, torch.eye(3, dtype=H.dtype, device=H.device).expand_as(H))
    factor, info = torch.linalg.cholesky_ex(H)
    ok = usable & (info == 0)
    covariance = torch.cholesky_inverse(factor) * sigma2[:, None, None]
    ok = ok & torch.isfinite(covariance).flatten(1).all(-1)
    covariance = torch.where(ok[:, None, None], covariance, torch.full_like(covariance, math.nan))
    return covariance, sigma2, ok


def refine(problems: Sequence[LevelProblem], pose_local: Tensor, config: RefinerConfig, usable: Tensor) -> dict:
    """Coarse-to-fine LM over prepared levels (see :func:`refine_candidates` for the public entry).

    Args:
        problems: levels, coarse to fine.
        pose_local: (B, 3) initial ``(x_m, y_m, heading_rad)`` relative to the chip centres.
        config: the settings.
        usable: (B,) bool, elements with finite inputs.

    Returns:
        dict with ``pose_local`` (B, 3), ``covariance`` (B, 3, 3) float64, ``cost``, ``sigma2``, ``iterations``,
        ``converged``, ``failed``, ``num_points`` (each (B,)).
    """
    budgets = config.level_iterations(len(problems))
    iterations = torch.zeros(pose_local.shape[0], dtype=torch.int64, device=pose_local.device)
    stopped = torch.zeros_like(usable)
    evaluation: _Evaluation | None = None
    last = len(problems) - 1
    for level, (problem, budget) in enumerate(zip(problems, budgets, strict=True)):
        if budget == 0 and level < last:
            continue  # no step to take: its evaluation would only be replaced by the next level's
        pose_local, evaluation, count, stopped = _refine_level(problem, pose_local, usable, budget, config)
        iterations = iterations + count
    assert evaluation is not None
    covariance, sigma2, cov_ok = _covariance(evaluation, problems[-1].channels)
    failed = ~usable | ~torch.isfinite(evaluation.cost) | (evaluation.num_points < config.min_points) | ~cov_ok
    return {
        "pose_local": pose_local,
        "covariance": torch.where(failed[:, None, None], torch.full_like(covariance, math.nan), covariance),
        "cost": torch.where(failed, torch.full_like(evaluation.cost, math.inf), evaluation.cost),
        "sigma2": torch.where(failed, torch.full_like(sigma2, math.nan), sigma2),
        "iterations": iterations,
        "converged": stopped & ~failed,
        "failed": failed,
        "num_points": evaluation.num_points,
    }


def refine_candidates(
    ground_feats: Sequence[Tensor],
    ground_confs: Sequence[Tensor],
    chip_feats: Sequence[Tensor],
    chip_confs: Sequence[Tensor],
    chips: MapChip,
    camera: Camera,
    camera_height_m: Tensor | float,
    init_pose: Pose2,
    config: RefinerConfig | None = None,
    *,
    R_cam_from_level: Tensor | None = None,
    cell_offsets: float | Sequence[float] = 0.0,
) -> RefineResult:
    """Refine ``B`` = images x candidates poses against their map chips, coarse to fine.

    Works in the features' dtype, on their device, without gradients (an inference step).

    Args:
        ground_feats: L levels coarse to fine (e.g. :meth:`CrossViewModel.refinement_features`' strides 16, 8, 4)
            of ground-image features (B or B_img, C_l, H_l, W_l); B_img images are repeated for their
            K = B / B_img candidates, image-major (element ``i * K + j`` is candidate ``j`` of image ``i``).
            Each level's cells tile the whole image.
        ground_confs: L confidences (B or B_img, 1, H_l, W_l) in [0, 1].
        chip_feats: L map-chip features (B, C_l, S_l, S_l'), north-up, covering each chip exactly.
        chip_confs: L confidences (B, 1, S_l, S_l') in [0, 1].
        chips: the chips' geometry at any resolution: ``center_xy_m`` (B, 2) or (2,) in the map frame (metres),
            ``gsd_m`` x ``width_px`` / ``height_px`` give the ground extent that every level's map covers.
        camera: the ground camera at the ground image's input resolution (a panorama or a pinhole camera whose
            parameters are numbers or (B,) tensors); it is rescaled to each level's size.
        camera_height_m: camera height above the ground, a number or (B,) / (B_img,), metres.
        init_pose: initial poses (B,) ``T_map_from_body`` in the map frame (grid heading); use float64 with
            projected (UTM) coordinates: the refiner works relative to the chip centres, the output keeps the
            input's dtype.
        config: settings (default :class:`RefinerConfig`).
        R_cam_from_level: optional camera tilt, (3, 3), (B, 3, 3) or (B_img, 3, 3).
        cell_offsets: per level (or one for all), where the feature cells' centres sit relative to edge-based
            tiling, in cells, in both views: cell ``(i, j)`` of a level is centred at level pixel coordinate
            ``(j + 0.5 + o, i + 0.5 + o)``. 0 (default) for features whose cells tile the image edge to edge;
            a CNN whose stride-``s`` cell ``j`` is centred on input pixel index ``s j`` has ``o = (1 - s) / (2 s)``
            (-0.375 at stride 4, -0.46875 at stride 16).

    Returns:
        :class:`RefineResult`.

    Raises:
        RefinementError: inconsistent level counts, batch sizes or channel counts.
        ConfigError: invalid settings.
    """
    config = config or RefinerConfig()
    batch = _check_inputs(ground_feats, ground_confs, chip_feats, chip_confs, init_pose)
    dtype, device = chip_feats[-1].dtype, chip_feats[-1].device
    center = chips.center_xy_m.to(device=device, dtype=torch.float64).expand(batch, 2)
    init64 = init_pose.data.to(device=device, dtype=torch.float64)
    pose_local = torch.cat([init64[:, :2] - center, init64[:, 2:]], dim=-1)
    extent_m = (chips.gsd_m * chips.width_px, chips.gsd_m * chips.height_px)
    height = _per_element(camera_height_m, batch)
    cam = _camera_per_element(camera, batch)
    offsets = _level_offsets(cell_offsets, len(chip_feats))
    if R_cam_from_level is not None and R_cam_from_level.dim() == 3:
        R_cam_from_level = _repeat_images(R_cam_from_level, batch)
    with torch.no_grad():
        usable = torch.isfinite(pose_local).all(-1) & torch.isfinite(center).all(-1)
        usable = usable & torch.isfinite(torch.as_tensor(height, dtype=torch.float64, device=device)).expand(batch)
        problems = []
        for level in range(len(ground_feats)):
            g_feat, g_conf = _repeat_images(ground_feats[level], batch), _repeat_images(ground_confs[level], batch)
            usable = usable & _finite_per_element(g_feat, g_conf, chip_feats[level], chip_confs[level])
            problems.append(
                build_level(
                    _zero_nonfinite(g_feat.to(dtype)),
                    _zero_nonfinite(g_conf.to(dtype)),
                    _zero_nonfinite(chip_feats[level].to(dtype)),
                    _zero_nonfinite(chip_confs[level].to(dtype)),
                    chip_extent_m=extent_m,
                    camera=cam,
                    camera_height_m=height,
                    R_cam_from_level=R_cam_from_level,
                    max_distance_m=config.max_distance_m,
                    cell_offset=offsets[level],
                )
            )
        start = torch.where(usable[:, None], pose_local, torch.zeros_like(pose_local)).to(dtype)
        out = refine(problems, start, config, usable)
    refined = out["pose_local"].double()
    refined = torch.cat([refined[:, :2] + center, refined[:, 2:]], dim=-1)
    refined = torch.where(out["failed"][:, None], init64, refined)
    return RefineResult(
        pose=Pose2(refined.to(init_pose.dtype)),
        covariance=out["covariance"].to(init_pose.dtype),
        cost=out["cost"],
        iterations=out["iterations"],
        converged=out["converged"],
        failed=out["failed"],
        num_points=out["num_points"],
        sigma2=out["sigma2"],
    )


def _check_inputs(
    ground_feats: Sequence[Tensor],
    ground_confs: Sequence[Tensor],
    chip_feats: Sequence[Tensor],
    chip_confs: Sequence[Tensor],
    init_pose: Pose2,
) -> int:
    """Validate shapes; returns the batch size B."""
    levels = len(chip_feats)
    if levels == 0 or not (len(ground_feats) == len(ground_confs) == len(chip_confs) == levels):
        counts = [len(x) for x in (ground_feats, ground_confs, chip_feats, chip_confs)]
        raise RefinementError(f"refiner: ground/chip features and confidences need the same levels, got {counts}")
    if init_pose.data.dim() != 2:
        raise RefinementError(f"refiner: init_pose must have batch shape (B,), got {tuple(init_pose.shape)}")
    batch = init_pose.data.shape[0]
    for level in range(levels):
        gf, gc, cf, cc = ground_feats[level], ground_confs[level], chip_feats[level], chip_confs[level]
        shapes = f"ground {tuple(gf.shape)}/{tuple(gc.shape)}, chip {tuple(cf.shape)}/{tuple(cc.shape)}"
        if gf.dim() != 4 or cf.dim() != 4 or gc.shape != (gf.shape[0], 1, *gf.shape[2:]):
            raise RefinementError(f"refiner level {level}: expected (B, C, H, W) maps and (B, 1, H, W) confs, {shapes}")
        if cc.shape != (cf.shape[0], 1, *cf.shape[2:]) or cf.shape[0] != batch:
            raise RefinementError(f"refiner level {level}: chip maps must have batch {batch} (init_pose), {shapes}")
        if gf.shape[1] != cf.shape[1]:
            raise RefinementError(f"refiner level {level}: ground and chip channels differ, {shapes}")
        if batch % gf.shape[0] != 0:
            raise RefinementError(f"refiner level {level}: ground batch {gf.shape[0]} does not divide B = {batch}")
        if min(cf.shape[-2:]) < 2:
            raise RefinementError(f"refiner level {level}: chip maps need at least 2x2 cells, {shapes}")
    return batch


def _level_offsets(cell_offsets: float | Sequence[float], levels: int) -> list[float]:
    if isinstance(cell_offsets, (int, float)):
        return [float(cell_offsets)] * levels
    offsets = [float(o) for o in cell_offsets]
    if len(offsets) != levels or not all(math.isfinite(o) for o in offsets):
        raise RefinementError(f"refiner: cell_offsets {cell_offsets!r} must be finite, one per level ({levels})")
    return offsets


def _repeat_images(tensor: Tensor, batch: int) -> Tensor:
    """(B_img, ...) -> (B, ...) with every image repeated for its B / B_img candidates (image-major)."""
    repeats = batch // tensor.shape[0]
    return tensor if repeats == 1 else tensor.repeat_interleave(repeats, dim=0)


def _per_element(value: Tensor | float, batch: int) -> Tensor | float:
    """A number stays a number; a (B_img,) or (B,) tensor becomes (B,)."""
    if not isinstance(value, Tensor) or value.dim() == 0:
        return value
    value = value.reshape(-1)
    if batch % value.numel() != 0:
        raise RefinementError(f"refiner: per-element value of length {value.numel()} does not divide B = {batch}")
    return _repeat_images(value, batch)


def _camera_per_element(camera: Camera, batch: int) -> Camera:
    if not isinstance(camera, PinholeCamera):
        return camera
    params = [_per_element(getattr(camera, name), batch) for name in ("fx", "fy", "cx", "cy")]
    return PinholeCamera(camera.width, camera.height, *params)


def _finite_per_element(*tensors: Tensor) -> Tensor:
    finite = None
    for tensor in tensors:
        ok = torch.isfinite(tensor).flatten(1).all(-1)
        finite = ok if finite is None else finite & ok
    return finite


def _zero_nonfinite(tensor: Tensor) -> Tensor:
    """NaN/inf -> 0, so that a broken element cannot poison batched reductions (it is flagged failed anyway)."""
    return torch.where(torch.isfinite(tensor), tensor, torch.zeros_like(tensor))

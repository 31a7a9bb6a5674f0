"""Feature residuals between a ground image and a north-up map chip, and their Jacobians with respect to the pose.

Formulation (image -> map, as in HighlyAccurate, Shi & Li, CVPR 2022): every pixel ``k`` of the ground feature map
that looks below the horizon sees one ground point. Its body coordinates ``b_k = (right, forward)`` depend only on
the camera, its height and tilt (:func:`crossview.geometry.ground.image_to_ground` at the identity pose), so they
are computed once per level. At the pose ``p = (x_m, y_m, heading_rad)`` the point lies at ``X_k = t + R(h) b_k``
in the map frame, and the residual compares the ground feature with the map-chip feature sampled there:

    r_k(p) = F_map(X_k(p)) - F_ground(k),    weight w_k = c_ground(k) * c_map(X_k(p)).

Why this direction rather than projecting map points into the ground image (PixLoc's direction):

* The translation Jacobian is the map feature gradient itself, ``dX_k / d(x, y) = I``: every point constrains the
  position with the map's uniform metric resolution. Projecting ground points into a panorama instead has
  ``d(u, v) / d(x, y)`` growing without bound near the camera's foot (the azimuth of a point 0.1 m away turns by
  tens of degrees per centimetre), so a few near points dominate the Hessian and the problem is badly conditioned
  and strongly non-linear there; near the horizon the same map points crowd into a few image rows.
* Ground features are used where they were computed (pixel centres, never interpolated); only the map, which is
  north-up with square cells, is resampled bilinearly, so at the true pose the residual of an exact feature field
  is the map's interpolation error alone (a few millimetres of pose bias at 0.2 m cells in the tests, centimetres
  at 2.25 m cells), and the geometry (``b_k``) is shared by every candidate of an image and every iteration.
* The price: near-camera pixels of a panorama crowd onto a few map cells (redundant, but harmless), and the
  ground beyond the chip is unused; rows just below the horizon reach farthest.
* The heading enters only through ``dX_k / dh = (X_n - y, -(X_e - x))``: the lever arm of each point.

Points are pose-dependent only through the map lookup: a point is valid while ``X_k`` falls inside the chip (and the
pixel is valid and confident). The weights are held constant within a step (IRLS), as usual.

Coordinates are relative to the chip centre (``p_local = p - (cx, cy, 0)``), so float32 keeps millimetres even
with UTM coordinates of millions of metres. Chip pixels follow :class:`crossview.geometry.ground.MapChip`:
``u = W/2 + x_local / gsd``, ``v = H/2 - y_local / gsd`` (edge-based, pixel centres at ``+0.5``), sampled as
``grid_sample(align_corners=False, padding_mode="border")`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from crossview.geometry.cameras import Camera, PanoramaCamera, PinholeCamera, pixel_centers
from crossview.geometry.ground import image_to_ground, sample_image
from crossview.geometry.pose import Pose2

__all__ = [
    "JACOBIANS",
    "LevelProblem",
    "Linearization",
    "bilinear_with_gradient",
    "build_level",
    "chip_jacobian",
    "level_camera",
    "linearize",
    "normal_equations",
    "points_to_chip",
]

JACOBIANS = ("analytic", "autograd")


@dataclass
class LevelProblem:
    """The data of one pyramid level, batched over ``B`` (images x candidates) and ``N`` ground-image pixels.

    Attributes:
        body_m: (B, N, 2) ground points seen by the pixels in the camera body frame (right, forward), metres.
        ground_features: (B, N, C) ground-image features at those pixels.
        ground_confidence: (B, N) their confidences, 0 for pixels that do not see the ground.
        chip_table: (B, Hc * Wc, C + 1) chip features with the chip confidence as the last channel, channels last
            (the analytic sampler gathers rows of it).
        chip_features: (B, C, Hc, Wc) and chip_confidence: (B, 1, Hc, Wc), the chip maps (autograd path).
        gsd_m: metres per chip feature pixel at this level.
        cell_offset: where the feature cells' centres sit relative to edge-based tiling, in cells (0: cell
            ``(i, j)`` is centred at ``(j + 0.5, i + 0.5)`` level pixels; see :func:`build_level`).
    """

    body_m: Tensor
    ground_features: Tensor
    ground_confidence: Tensor
    chip_table: Tensor
    chip_features: Tensor
    chip_confidence: Tensor
    gsd_m: float
    cell_offset: float = 0.0

    @property
    def chip_hw(self) -> tuple[int, int]:
        return int(self.chip_features.shape[-2]), int(self.chip_features.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.ground_features.shape[-1])


@dataclass
class Linearization:
    """Residuals at a pose and their Jacobian ``J = d r / d(x_m, y_m, heading_rad)``.

    The analytic path keeps ``J`` factored as ``d F / d(u, v)`` (``feature_gradient``) times the chip-coordinate
    Jacobian of the point (from ``offset_m`` and ``gsd_m``, see :func:`chip_jacobian`), which makes the normal
    equations cheap; the autograd path stores ``J`` itself. :meth:`full_jacobian` gives ``J`` either way.
    Residuals and Jacobians are not zeroed where a point is invalid: its weight is 0 there.

    Attributes:
        residuals: (B, N, C) ``F_map(X) - F_ground``.
        weights: (B, N) ``c_ground * c_map(X)`` at valid points, 0 elsewhere.
        valid: (B, N) bool, the point is seen, confident and inside the chip.
        gsd_m: metres per chip cell.
        feature_gradient: ``(d F_map / du, d F_map / dv)`` at the points, each (B, N, C), or None.
        offset_m: (B, N, 2) ``X - t`` (east, north) of the points, metres, or None.
        jacobian: (B, N, C, 3), or None.
    """

    residuals: Tensor
    weights: Tensor
    valid: Tensor
    gsd_m: float
    feature_gradient: tuple[Tensor, Tensor] | None = None
    offset_m: Tensor | None = None
    jacobian: Tensor | None = None

    def full_jacobian(self) -> Tensor:
        """(B, N, C, 3) ``d r / d(x_m, y_m, heading_rad)``."""
        if self.jacobian is not None:
            return self.jacobian
        assert self.feature_gradient is not None and self.offset_m is not None
        return torch.stack(self.feature_gradient, dim=-1) @ chip_jacobian(self.offset_m, self.gsd_m)


def level_camera(camera: Camera, width: int, height: int) -> Camera:
    """The camera of a feature map of ``width`` x ``height`` cells covering the whole image (edge-based scaling).

    Feature cell (i, j) is centred on image pixel coordinate ``((j + 0.5) W / width, (i + 0.5) H / height)``: the
    cells tile the image exactly, so intrinsics scale by ``width / W`` horizontally and ``height / H`` vertically.
    """
    if isinstance(camera, PanoramaCamera):
        return PanoramaCamera(width, height)
    scale_x, scale_y = width / camera.width, height / camera.height
    return PinholeCamera(
        width, height, camera.fx * scale_x, camera.fy * scale_y, camera.cx * scale_x, camera.cy * scale_y
    )


def build_level(
    ground_features: Tensor,
    ground_confidence: Tensor,
    chip_features: Tensor,
    chip_confidence: Tensor,
    *,
    chip_extent_m: tuple[float, float],
    camera: Camera,
    camera_height_m: Tensor | float,
    R_cam_from_level: Tensor | None = None,
    max_distance_m: float | None = None,
    cell_offset: float = 0.0,
) -> LevelProblem:
    """Precompute one level: ground points of the pixels, their features, and the chip's lookup table.

    Pixels that see the ground for no batch element are dropped (the sky half of a panorama), so ``N`` is the
    number of pixels that may contribute.

    Args:
        ground_features: (B, C, H, W) ground-image features; ground_confidence: (B, 1, H, W) in [0, 1].
        chip_features: (B, C, Hc, Wc) map-chip features; chip_confidence: (B, 1, Hc, Wc) in [0, 1].
        chip_extent_m: (width, height) of the chip on the ground, metres; cells are square (``gsd = width / Wc``).
        camera: the ground camera at the ground image's input resolution (scaled here to H x W).
        camera_height_m: camera height above the ground, a number or (B,), metres.
        R_cam_from_level: optional (B, 3, 3) or (3, 3) camera tilt (see ``level_to_camera_rotation``).
        max_distance_m: ignore ground points farther than this from the camera (metres); None keeps all.
        cell_offset: centre of feature cell ``(i, j)`` at level pixel ``(j + 0.5 + o, i + 0.5 + o)`` in both
            views (0 for features that tile the image edge to edge; a CNN whose stride-``s`` cell ``j`` is centred
            on input pixel index ``s j`` has ``o = (0.5 - s / 2) / s``, e.g. -0.375 at stride 4).

    Returns:
        The :class:`LevelProblem`.
    """
    batch, channels, height, width = ground_features.shape
    dtype, device = ground_features.dtype, ground_features.device
    cam = level_camera(camera, width, height)
    uv = pixel_centers(width, height, dtype=dtype, device=device).reshape(1, -1, 2).expand(batch, -1, -1)
    uv = uv + cell_offset
    identity = Pose2.identity((batch,), dtype=dtype, device=device)
    body_m, seen = image_to_ground(
        uv, identity, cam, camera_height_m, R_cam_from_level=R_cam_from_level, max_distance_m=max_distance_m
    )
    confidence = ground_confidence.reshape(batch, -1) * seen.to(dtype)
    confidence = torch.where(torch.isfinite(confidence), confidence, torch.zeros_like(confidence))
    keep = (confidence > 0).any(0).nonzero().squeeze(-1)
    features = ground_features.reshape(batch, channels, -1).transpose(1, 2)
    chip_hw = chip_features.shape[-2:]
    table = torch.cat([chip_features, chip_confidence.to(dtype)], dim=1).flatten(2).transpose(1, 2).contiguous()
    return LevelProblem(
        body_m=body_m[:, keep].contiguous(),
        ground_features=features[:, keep].contiguous(),
        ground_confidence=confidence[:, keep].contiguous(),
        chip_table=table,
        chip_features=chip_features,
        chip_confidence=chip_confidence.to(dtype),
        gsd_m=float(chip_extent_m[0]) / int(chip_hw[-1]),
        cell_offset=float(cell_offset),
    )


def points_to_chip(body_m: Tensor, pose_local: Tensor, gsd_m: float, chip_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Chip pixel coordinates of body-frame ground points at a pose.

    Args:
        body_m: (B, N, 2) points (right, forward), metres.
        pose_local: (B, 3) ``(x_m, y_m, heading_rad)`` relative to the chip centre.
        gsd_m: metres per chip pixel.
        chip_hw: (Hc, Wc) chip size in pixels.

    Returns:
        uv: (B, N, 2) chip pixel coordinates (u = column, v = row, edge-based);
        offset_m: (B, N, 2) ``X - t = R(h) b`` (east, north), metres: the lever arms of :func:`chip_jacobian`.
    """
    cos_h = torch.cos(pose_local[:, 2:3])
    sin_h = torch.sin(pose_local[:, 2:3])
    right, forward = body_m[..., 0], body_m[..., 1]
    # R = [[cos, sin], [-sin, cos]] (pose.py's map_from_body rotation).
    east = cos_h * right + sin_h * forward
    north = -sin_h * right + cos_h * forward
    u = chip_hw[1] / 2 + (pose_local[:, 0:1] + east) / gsd_m
    v = chip_hw[0] / 2 - (pose_local[:, 1:2] + north) / gsd_m
    return torch.stack([u, v], dim=-1), torch.stack([east, north], dim=-1)


def chip_jacobian(offset_m: Tensor, gsd_m: float) -> Tensor:
    """(B, N, 2, 3) ``d(u, v) / d(x_m, y_m, heading_rad)`` of :func:`points_to_chip` from its lever arms.

    ``X = t + R(h) b`` gives ``dX/dt = I`` and ``dX/dh = (north offset, -east offset)``; ``u`` grows with east and
    ``v`` with south, both by ``1 / gsd`` per metre.
    """
    east, north = offset_m.unbind(-1)
    ones, zeros = torch.ones_like(east), torch.zeros_like(east)
    d_u = torch.stack([ones, zeros, north], dim=-1)
    d_v = torch.stack([zeros, -ones, east], dim=-1)
    return torch.stack([d_u, d_v], dim=-2) / gsd_m


def bilinear_with_gradient(table: Tensor, chip_hw: tuple[int, int], uv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear samples of a channels-last map and their exact derivatives with respect to u and v.

    Matches ``grid_sample(mode="bilinear", padding_mode="border", align_corners=False)`` at continuous, edge-based
    pixel coordinates: the sample point ``(u - 0.5, v - 0.5)`` in cell-centre units is clamped to the map, and its
    derivative is zero where clamped. The derivative is that of the bilinear interpolant (piecewise linear), i.e.
    exactly what autograd through ``grid_sample`` returns.

    Args:
        table: (B, H * W, K) map values, row-major, channels last.
        chip_hw: (H, W), each at least 2.
        uv: (B, N, 2) pixel coordinates.

    Returns:
        values, d_du, d_dv: each (B, N, K).
    """
    height, width = chip_hw
    batch, cells, channels = table.shape
    x = uv[..., 0] - 0.5
    y = uv[..., 1] - 0.5
    inside_x = ((x >= 0) & (x <= width - 1)).to(uv.dtype).unsqueeze(-1)
    inside_y = ((y >= 0) & (y <= height - 1)).to(uv.dtype).unsqueeze(-1)
    x = x.clamp(0, width - 1)
    y = y.clamp(0, height - 1)
    x0 = torch.floor(x).clamp(max=width - 2)
    y0 = torch.floor(y).clamp(max=height - 2)
    a = (x - x0).unsqueeze(-1)
    b = (y - y0).unsqueeze(-1)
    # Rows of the flattened (B * H * W, K) table: one contiguous K-vector per corner (index_select copies rows).
    first = (y0.long() * width + x0.long()) + torch.arange(batch, device=uv.device).unsqueeze(-1) * cells
    rows = torch.stack([first, first + 1, first + width, first + width + 1], dim=-1).reshape(-1)
    f00, f01, f10, f11 = table.reshape(-1, channels).index_select(0, rows).reshape(batch, -1, 4, channels).unbind(-2)
    dx_top, dx_bottom = f01 - f00, f11 - f10
    top = f00 + a * dx_top
    bottom = f10 + a * dx_bottom
    d_dv = bottom - top
    values = top + b * d_dv
    d_du = (dx_top + b * (dx_bottom - dx_top)) * inside_x
    return values, d_du, d_dv * inside_y


def _inside_chip(uv: Tensor, chip_hw: tuple[int, int]) -> Tensor:
    u, v = uv[..., 0], uv[..., 1]
    return (u >= 0) & (u < chip_hw[1]) & (v >= 0) & (v < chip_hw[0])


def linearize(problem: LevelProblem, pose_local: Tensor, jacobian: str = "analytic") -> Linearization:
    """Residuals, weights and the pose Jacobian at ``pose_local`` (relative to the chip centre).

    Args:
        problem: one level's data.
        pose_local: (B, 3) ``(x_m, y_m, heading_rad)`` relative to the chip centre.
        jacobian: ``"analytic"`` (chain rule: bilinear feature gradients times :func:`chip_jacobian`) or
            ``"autograd"`` (forward-mode automatic differentiation through ``grid_sample``).

    Returns:
        The :class:`Linearization`.
    """
    if jacobian not in JACOBIANS:
        raise ValueError(f"unknown jacobian {jacobian!r}; available: {', '.join(JACOBIANS)}")
    uv, offset_m = points_to_chip(problem.body_m, pose_local, problem.gsd_m, problem.chip_hw)
    uv_cells = uv - problem.cell_offset if problem.cell_offset else uv  # where the chip's cells are sampled
    if jacobian == "analytic":
        values, d_du, d_dv = bilinear_with_gradient(problem.chip_table, problem.chip_hw, uv_cells)
        channels = problem.channels
        residuals, chip_conf = values[..., :channels] - problem.ground_features, values[..., channels]
        jac = None
    else:
        residuals, jac = _autograd_residuals(problem, pose_local)
        chip_conf = _sample(problem.chip_confidence, uv_cells)[..., 0]
    weights = problem.ground_confidence * chip_conf
    valid = _inside_chip(uv, problem.chip_hw) & (weights > 0)
    weights = torch.where(valid, weights, torch.zeros_like(weights))
    lin = Linearization(residuals, weights, valid, problem.gsd_m, jacobian=jac)
    if jac is None:
        lin.feature_gradient = (d_du[..., :channels], d_dv[..., :channels])
        lin.offset_m = offset_m
    return lin


def _sample(image: Tensor, uv: Tensor) -> Tensor:
    """grid_sample (border, align_corners=False) of (B, K, H, W) at (B, N, 2) pixel coordinates -> (B, N, K)."""
    everywhere = torch.ones(uv.shape[:-1], dtype=torch.bool, device=uv.device).unsqueeze(1)
    return sample_image(image, uv.unsqueeze(1), everywhere).squeeze(2).transpose(1, 2)


def _autograd_residuals(problem: LevelProblem, pose_local: Tensor) -> tuple[Tensor, Tensor]:
    """Residuals (B, N, C) and their Jacobian (B, N, C, 3) by forward-mode AD through ``grid_sample``.

    Every element depends on its own pose only, so one perturbation ``d`` (3,) shared by the batch gives each
    element's Jacobian: ``d r_b / d d = d r_b / d p_b``, three tangents in one vectorised pass.
    """

    def residual_fn(shift: Tensor) -> Tensor:
        uv, _ = points_to_chip(problem.body_m, pose_local + shift, problem.gsd_m, problem.chip_hw)
        return _sample(problem.chip_features, uv - problem.cell_offset) - problem.ground_features

    zero = torch.zeros(3, dtype=pose_local.dtype, device=pose_local.device)
    jacobian, residuals = torch.func.jacfwd(residual_fn, has_aux=False)(zero), residual_fn(zero)
    return residuals, jacobian


def normal_equations(lin: Linearization, point_weights: Tensor) -> tuple[Tensor, Tensor]:
    """Gauss-Newton gradient ``g = sum w J^T r`` (B, 3) and Hessian ``H = sum w J^T J`` (B, 3, 3).

    Args:
        lin: residuals and Jacobian.
        point_weights: (B, N) weights ``w`` (confidences times IRLS weights).

    With the analytic factorisation ``J_c = (F_u, -F_v, F_u n + F_v e) / gsd`` (``(e, n)`` the lever arm), ``H``
    needs only the per-point moments ``sum_c F_u^2``, ``sum_c F_u F_v``, ``sum_c F_v^2``, never ``J`` itself.
    """
    if lin.jacobian is not None:
        batch = lin.jacobian.shape[0]
        jac = lin.jacobian.reshape(batch, -1, 3)
        weighted = (lin.jacobian * point_weights[..., None, None]).reshape(batch, -1, 3).transpose(1, 2)
        return (weighted @ lin.residuals.reshape(batch, -1, 1)).squeeze(-1), weighted @ jac
    assert lin.feature_gradient is not None and lin.offset_m is not None
    f_u, f_v = lin.feature_gradient
    east, north = lin.offset_m.unbind(-1)
    g_uu, g_uv, g_vv = (f_u * f_u).sum(-1), (f_u * f_v).sum(-1), (f_v * f_v).sum(-1)
    r_u, r_v = (f_u * lin.residuals).sum(-1), (f_v * lin.residuals).sum(-1)
    terms = torch.stack(
        [
            g_uu,
            -g_uv,
            g_uu * north + g_uv * east,
            g_vv,
            -g_uv * north - g_vv * east,
            g_uu * north * north + 2 * g_uv * north * east + g_vv * east * east,
            r_u * lin.gsd_m,
            -r_v * lin.gsd_m,
            (r_u * north + r_v * east) * lin.gsd_m,
        ],
        dim=-1,
    )
    sums = (terms * point_weights.unsqueeze(-1)).sum(1) / (lin.gsd_m * lin.gsd_m)  # (B, 9)
    h00, h01, h02, h11, h12, h22 = sums[:, :6].unbind(-1)
    H = torch.stack([h00, h01, h02, h01, h11, h12, h02, h12, h22], dim=-1).reshape(-1, 3, 3)
    return sums[:, 6:], H

"""Ground-plane geometry between a ground camera and a north-up map chip, batched and differentiable.

The ground is a flat plane ``height_m`` below the camera centre. A camera at ``Pose2`` (x, y, grid heading) sees
the ground point (east, north) through its *level* frame (x right, y down along gravity, z forward along the
heading): ``p_level = (right, height_m, forward)`` where (right, forward) are the body coordinates of the point.
An optional ``R_cam_from_level`` (pitch/roll, see :func:`level_to_camera_rotation`) tilts the camera.

Map chips are north-up rasters of square ``gsd_m`` pixels centred on ``center_xy_m``; chip pixel (u, v) (continuous,
edge-based) lies at ``x = cx + (u - W/2) * gsd``, ``y = cy - (v - H/2) * gsd``.

Shapes: a pose of batch shape (B,) (or unbatched) goes with points of shape (B, ..., 2); camera parameters and
heights are floats or (B,) tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from crossview.geometry.cameras import Camera, PanoramaCamera, pixel_centers, to_grid_sample_coords
from crossview.geometry.pose import Pose2

_EPS = 1e-9


@dataclass(frozen=True)
class MapChip:
    """A north-up map chip: centre (B, 2) or (2,) in map metres, ground sampling distance, size in pixels."""

    center_xy_m: Tensor
    gsd_m: float
    width_px: int
    height_px: int

    @classmethod
    def square(cls, center_xy_m: Tensor, gsd_m: float, size_px: int) -> MapChip:
        return cls(center_xy_m, float(gsd_m), int(size_px), int(size_px))

    def _center(self, like: Tensor) -> Tensor:
        center = self.center_xy_m.to(like)
        return center.reshape(center.shape[:-1] + (1,) * (like.dim() - center.dim()) + (2,))

    def pixel_to_map(self, uv: Tensor) -> Tensor:
        """Chip pixel coordinates (B, ..., 2) -> map (east, north) metres (B, ..., 2)."""
        offset = uv - uv.new_tensor([self.width_px / 2, self.height_px / 2])
        return self._center(uv) + offset * uv.new_tensor([self.gsd_m, -self.gsd_m])

    def map_to_pixel(self, xy_m: Tensor) -> Tensor:
        """Map (east, north) metres (B, ..., 2) -> chip pixel coordinates (B, ..., 2)."""
        offset = (xy_m - self._center(xy_m)) / xy_m.new_tensor([self.gsd_m, -self.gsd_m])
        return offset + xy_m.new_tensor([self.width_px / 2, self.height_px / 2])

    def pixel_centers_map(self, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """(B, H, W, 2) (or (H, W, 2) for an unbatched centre) map coordinates of every chip pixel centre."""
        uv = pixel_centers(self.width_px, self.height_px, dtype=dtype, device=device)
        batch_shape = self.center_xy_m.shape[:-1]
        uv = uv.expand(*batch_shape, *uv.shape)
        return self.pixel_to_map(uv)


def level_to_camera_rotation(pitch_deg: Tensor | float, roll_deg: Tensor | float = 0.0) -> Tensor:
    """``R_cam_from_level`` for a camera pitched up by ``pitch_deg`` then rolled clockwise by ``roll_deg``.

    Positive pitch tilts the optical axis above the horizon; positive roll turns the camera clockwise about its
    optical axis as seen from behind (its right axis dips towards the ground).

    Returns:
        (..., 3, 3) rotation with ``p_cam = R @ p_level``.
    """
    pitch_deg = torch.as_tensor(pitch_deg)
    dtype = pitch_deg.dtype if pitch_deg.is_floating_point() else torch.get_default_dtype()
    pitch = torch.deg2rad(pitch_deg.to(dtype))
    roll = torch.deg2rad(torch.as_tensor(roll_deg, dtype=dtype, device=pitch.device))
    pitch, roll = torch.broadcast_tensors(pitch, roll)
    one, zero = torch.ones_like(pitch), torch.zeros_like(pitch)
    cp, sp, cr, sr = torch.cos(pitch), torch.sin(pitch), torch.cos(roll), torch.sin(roll)
    # Columns are the camera axes expressed in the level frame (y down): pitching up turns the optical axis
    # towards -y, then roll turns the right axis towards +y (down).
    level_from_pitched = torch.stack(
        [
            torch.stack([one, zero, zero], -1),
            torch.stack([zero, cp, sp], -1),
            torch.stack([zero, -sp, cp], -1),
        ],
        dim=-1,
    )
    pitched_from_cam = torch.stack(
        [
            torch.stack([cr, sr, zero], -1),
            torch.stack([-sr, cr, zero], -1),
            torch.stack([zero, zero, one], -1),
        ],
        dim=-1,
    )
    return (level_from_pitched @ pitched_from_cam).transpose(-1, -2)


def _height_like(height_m: Tensor | float, like: Tensor) -> Tensor:
    """Broadcast a scalar or (B,) height against (B, P) data."""
    height = torch.as_tensor(height_m, dtype=like.dtype, device=like.device)
    return height.reshape(height.shape + (1,) * (like.dim() - height.dim())).expand_as(like)


def _rotate(R: Tensor | None, vectors: Tensor) -> Tensor:
    """Apply (B, 3, 3) / (3, 3) rotations to (B, P, 3) vectors."""
    if R is None:
        return vectors
    R = R.to(vectors)
    return (R.unsqueeze(-3) @ vectors.unsqueeze(-1)).squeeze(-1)


def _flatten_points(pose: Pose2, points: Tensor) -> tuple[Tensor, torch.Size]:
    """(B, ..., 2) -> (B, P, 2) so the pose's rotation broadcasts; also returns the spatial shape."""
    n_batch = pose.data.dim() - 1
    spatial = points.shape[n_batch:-1]
    return points.reshape(*points.shape[:n_batch], -1, points.shape[-1]), spatial


def ground_to_image(
    xy_map_m: Tensor,
    pose: Pose2,
    camera: Camera,
    height_m: Tensor | float,
    *,
    R_cam_from_level: Tensor | None = None,
    with_jacobian: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """Project ground points (on the plane ``height_m`` below the camera) into the ground image.

    Args:
        xy_map_m: (B, ..., 2) ground points (east, north) in the map frame, metres.
        pose: camera pose ``T_map_from_body`` of batch shape (B,).
        camera: a :class:`PanoramaCamera` or :class:`PinholeCamera`.
        height_m: camera height above the ground, float or (B,), metres.
        R_cam_from_level: optional (B, 3, 3) or (3, 3) tilt of the camera.
        with_jacobian: also return d(u, v)/d(x_m, y_m, heading_rad) of the pose, analytically.

    Returns:
        uv: (B, ..., 2) ground-image pixel coordinates.
        valid: (B, ..., ) True where the point is seen (in front of a pinhole, inside the image).
        jacobian: (B, ..., 2, 3), only with ``with_jacobian``.
    """
    points, spatial = _flatten_points(pose, xy_map_m)
    delta = points - pose.xy_m.unsqueeze(-2)
    cos_h = torch.cos(pose.heading_rad).unsqueeze(-1)
    sin_h = torch.sin(pose.heading_rad).unsqueeze(-1)
    right = cos_h * delta[..., 0] - sin_h * delta[..., 1]
    forward = sin_h * delta[..., 0] + cos_h * delta[..., 1]
    height = _height_like(height_m, right)
    p_cam = _rotate(R_cam_from_level, torch.stack([right, height, forward], dim=-1))
    uv, valid = camera.project(p_cam)
    outputs = [uv.reshape(*uv.shape[:-2], *spatial, 2), valid.reshape(*valid.shape[:-1], *spatial)]
    if with_jacobian:
        zeros = torch.zeros_like(right)
        # d p_level / d (x, y, heading): rows are (right, height, forward).
        d_level = torch.stack(
            [
                torch.stack([-cos_h.expand_as(right), sin_h.expand_as(right), -forward], dim=-1),
                torch.stack([zeros, zeros, zeros], dim=-1),
                torch.stack([-sin_h.expand_as(right), -cos_h.expand_as(right), right], dim=-1),
            ],
            dim=-2,
        )
        if R_cam_from_level is not None:
            d_level = R_cam_from_level.to(d_level).unsqueeze(-3) @ d_level
        jacobian = camera.project_jacobian(p_cam) @ d_level
        outputs.append(jacobian.reshape(*jacobian.shape[:-3], *spatial, 2, 3))
    return tuple(outputs)  # type: ignore[return-value]


def image_to_ground(
    uv: Tensor,
    pose: Pose2,
    camera: Camera,
    height_m: Tensor | float,
    *,
    R_cam_from_level: Tensor | None = None,
    max_distance_m: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Intersect the rays of ground-image pixels with the ground plane.

    Args:
        uv: (B, ..., 2) ground-image pixel coordinates.
        pose, camera, height_m, R_cam_from_level: as in :func:`ground_to_image`.
        max_distance_m: optionally mark points farther than this (horizontally) from the camera invalid.

    Returns:
        xy_map_m: (B, ..., 2) ground points (east, north), metres (finite; meaningless where not valid).
        valid: (B, ...) True for pixels inside the image whose ray points below the horizon.
    """
    pixels, spatial = _flatten_points(pose, uv)
    rays_cam, inside = camera.unproject(pixels)
    rays_level = rays_cam if R_cam_from_level is None else _rotate(R_cam_from_level.transpose(-1, -2), rays_cam)
    below = rays_level[..., 1] > _EPS
    height = _height_like(height_m, rays_level[..., 1])
    scale = height / torch.where(below, rays_level[..., 1], torch.ones_like(rays_level[..., 1]))
    body = torch.stack([rays_level[..., 0], rays_level[..., 2]], dim=-1) * scale.unsqueeze(-1)
    valid = inside & below
    if max_distance_m is not None:
        valid = valid & (torch.linalg.norm(body, dim=-1) <= max_distance_m)
    xy = pose.transform(body)
    return xy.reshape(*xy.shape[:-2], *spatial, 2), valid.reshape(*valid.shape[:-1], *spatial)


def map_chip_to_image(
    pose: Pose2,
    camera: Camera,
    height_m: Tensor | float,
    chip: MapChip,
    *,
    R_cam_from_level: Tensor | None = None,
    with_jacobian: bool = False,
) -> tuple[Tensor, ...]:
    """For every pixel centre of a map chip, the ground-image pixel that sees that ground point.

    Returns:
        uv: (B, Hc, Wc, 2) ground-image pixel coordinates; valid: (B, Hc, Wc); and with ``with_jacobian`` the
        (B, Hc, Wc, 2, 3) Jacobian with respect to the pose (x_m, y_m, heading_rad).
    """
    xy = chip.pixel_centers_map(dtype=pose.dtype, device=pose.device)
    chip_batch_dims = xy.dim() - 3
    if chip_batch_dims < len(pose.shape):  # one chip shared by a batch of poses
        xy = xy.expand(*pose.shape, *xy.shape)
    return ground_to_image(xy, pose, camera, height_m, R_cam_from_level=R_cam_from_level, with_jacobian=with_jacobian)


def image_to_map_chip(
    pose: Pose2,
    camera: Camera,
    height_m: Tensor | float,
    chip: MapChip,
    *,
    R_cam_from_level: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """For every pixel centre of the ground image, the map-chip pixel it sees.

    Returns:
        uv_chip: (B, H, W, 2) chip pixel coordinates; valid: (B, H, W), True below the horizon and inside the chip.
    """
    uv = pixel_centers(camera.width, camera.height, dtype=pose.dtype, device=pose.device)
    uv = uv.expand(*pose.shape, *uv.shape)
    xy, valid = image_to_ground(uv, pose, camera, height_m, R_cam_from_level=R_cam_from_level)
    uv_chip = chip.map_to_pixel(xy)
    inside = (
        (uv_chip[..., 0] >= 0)
        & (uv_chip[..., 0] < chip.width_px)
        & (uv_chip[..., 1] >= 0)
        & (uv_chip[..., 1] < chip.height_px)
    )
    return uv_chip, valid & inside


def sample_image(image: Tensor, uv: Tensor, valid: Tensor, *, wrap_columns: bool = False) -> Tensor:
    """Bilinearly sample images at continuous pixel coordinates, zero where not valid.

    Samples within half a pixel of the image edge repeat the edge pixel (the mask, not padding, decides validity).

    Args:
        image: (B, C, H, W) float images.
        uv: (B, Ho, Wo, 2) pixel coordinates in ``image``.
        valid: (B, Ho, Wo) mask.
        wrap_columns: treat columns as circular (equirectangular panoramas: no seam at u = 0 / W).

    Returns:
        (B, C, Ho, Wo) samples.
    """
    height, width = image.shape[-2:]
    if wrap_columns:
        image = torch.cat([image[..., -1:], image, image[..., :1]], dim=-1)
        uv = uv + uv.new_tensor([1.0, 0.0])
        width = width + 2
    grid = to_grid_sample_coords(uv, width, height).to(image.dtype)
    sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled * valid.unsqueeze(1).to(sampled.dtype)


def to_bev(
    image: Tensor,
    camera: Camera,
    height_m: Tensor | float,
    *,
    size_px: int,
    gsd_m: float,
    heading_deg: Tensor | float | None = None,
    R_cam_from_level: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Flat-ground bird's-eye view of ground images, centred on the camera.

    Args:
        image: (B, C, H, W) float ground images taken by ``camera``.
        camera: the camera model of the images.
        height_m: camera height above the ground, float or (B,), metres.
        size_px: side of the square BEV in pixels.
        gsd_m: metres per BEV pixel.
        heading_deg: the cameras' grid headings (float or (B,), degrees clockwise from north) for a north-up
            BEV; ``None`` gives a heading-up BEV (the camera looks towards the top of the BEV).
        R_cam_from_level: optional (B, 3, 3) camera tilt.

    Returns:
        bev: (B, C, size_px, size_px); valid: (B, size_px, size_px), True where the ground point is seen.
    """
    batch = image.shape[0]
    dtype = image.dtype if image.is_floating_point() else torch.float32
    heading = torch.zeros(batch, dtype=dtype) if heading_deg is None else torch.as_tensor(heading_deg, dtype=dtype)
    heading = torch.deg2rad(heading.expand(batch).to(image.device))
    zeros = torch.zeros_like(heading)
    pose = Pose2(torch.stack([zeros, zeros, heading], dim=-1))
    chip = MapChip.square(torch.zeros(2, dtype=dtype, device=image.device), gsd_m, size_px)
    uv, valid = map_chip_to_image(pose, camera, height_m, chip, R_cam_from_level=R_cam_from_level)
    wrap = isinstance(camera, PanoramaCamera)
    return sample_image(image.to(dtype), uv, valid, wrap_columns=wrap), valid

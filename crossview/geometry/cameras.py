"""Camera models: equirectangular panoramas and pinhole cameras, batched and differentiable.

Convention:
    Camera frame (both models): x = right, y = down, z = forward (OpenCV). A level camera (no roll/pitch) has its
    y axis along gravity; its forward axis points along the camera heading. Pixel coordinates (u, v) = (column, row)
    are continuous and edge-based: pixel (row i, col j) has its centre at (i + 0.5, j + 0.5), as in GDAL/rasterio and
    ``grid_sample(align_corners=False)``.

    Panorama (W x H equirectangular): column u looks at azimuth ``heading + (u / W - 0.5) * 360°`` (clockwise), row v
    at elevation ``90° - 180° * v / H``; the horizon is the middle row.

    Pinhole: ``u = fx * x / z + cx``, ``v = fy * y / z + cy``. From EXIF ``FocalLengthIn35mmFilm`` f35:
    ``fx = fy = f35 / 36 mm * long side``.

Camera parameters may be Python floats or tensors of shape (B,) (one camera per batch element); points and pixels
then have shape (B, ..., 3) / (B, ..., 2). Image sizes are shared by the whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from crossview.errors import CameraError

FILM_35MM_WIDTH_MM = 36.0
_EPS = 1e-9


def _broadcast_param(param: Tensor | float, like: Tensor) -> Tensor:
    """Reshape a scalar or (B,) camera parameter so it broadcasts against (B, ..., k) data (without the last dim)."""
    value = torch.as_tensor(param, dtype=like.dtype, device=like.device)
    extra_dims = like.dim() - 1 - value.dim()
    return value.reshape(value.shape + (1,) * max(extra_dims, 0))


def _inside_image(uv: Tensor, width: int, height: int) -> Tensor:
    u, v = uv[..., 0], uv[..., 1]
    return (u >= 0) & (u < width) & (v >= 0) & (v < height)


def _check_size(width: int, height: int) -> None:
    if int(width) <= 0 or int(height) <= 0:
        raise CameraError(f"image size must be positive, got {width}x{height}")


@dataclass(frozen=True)
class PanoramaCamera:
    """Full 360° x 180° equirectangular camera of ``width`` x ``height`` pixels (normally width = 2 * height)."""

    width: int
    height: int

    def __post_init__(self) -> None:
        _check_size(self.width, self.height)

    @property
    def model(self) -> str:
        return "panorama"

    def scaled(self, scale: float) -> PanoramaCamera:
        """The same camera for an image resized by ``scale`` (sizes rounded to whole pixels)."""
        return PanoramaCamera(round(self.width * scale), round(self.height * scale))

    def project(self, points_cam: Tensor) -> tuple[Tensor, Tensor]:
        """Project camera-frame points to pixels.

        Args:
            points_cam: (..., 3) points (x right, y down, z forward), metres.

        Returns:
            uv: (..., 2) continuous pixel coordinates, u in [0, W), v in [0, H].
            valid: (...) bool, False for points at the camera centre.
        """
        x, y, z = points_cam.unbind(-1)
        horizontal = torch.sqrt(x * x + z * z + _EPS**2)
        azimuth_rad = torch.atan2(x, z)
        elevation_rad = torch.atan2(-y, horizontal)
        u = torch.remainder(self.width * (0.5 + azimuth_rad / (2 * math.pi)), self.width)
        v = self.height * (0.5 - elevation_rad / math.pi)
        valid = (x * x + y * y + z * z) > _EPS
        return torch.stack([u, v], dim=-1), valid

    def project_jacobian(self, points_cam: Tensor) -> Tensor:
        """(..., 2, 3) analytic Jacobian d(u, v) / d(x, y, z) of :meth:`project`."""
        x, y, z = points_cam.unbind(-1)
        rho_sq = x * x + z * z + _EPS**2
        rho = torch.sqrt(rho_sq)
        dist_sq = rho_sq + y * y
        du_scale = self.width / (2 * math.pi)
        du = torch.stack([z / rho_sq, torch.zeros_like(y), -x / rho_sq], dim=-1) * du_scale
        # elevation = atan2(-y, rho); v = H (0.5 - elevation / pi)
        d_elev = torch.stack([y * x / (rho * dist_sq), -rho / dist_sq, y * z / (rho * dist_sq)], dim=-1)
        dv = -self.height / math.pi * d_elev
        return torch.stack([du, dv], dim=-2)

    def unproject(self, uv: Tensor) -> tuple[Tensor, Tensor]:
        """Back-project pixels to unit rays in the camera frame.

        Args:
            uv: (..., 2) continuous pixel coordinates.

        Returns:
            rays: (..., 3) unit vectors (x right, y down, z forward).
            valid: (...) bool, True where the pixel lies inside the image.
        """
        azimuth_rad = (uv[..., 0] / self.width - 0.5) * 2 * math.pi
        elevation_rad = (0.5 - uv[..., 1] / self.height) * math.pi
        cos_e = torch.cos(elevation_rad)
        rays = torch.stack(
            [cos_e * torch.sin(azimuth_rad), -torch.sin(elevation_rad), cos_e * torch.cos(azimuth_rad)],
            dim=-1,
        )
        return rays, _inside_image(uv, self.width, self.height)


@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole camera with intrinsics in pixels; parameters are floats or (B,) tensors."""

    width: int
    height: int
    fx: Tensor | float
    fy: Tensor | float
    cx: Tensor | float
    cy: Tensor | float

    def __post_init__(self) -> None:
        _check_size(self.width, self.height)
        for name in ("fx", "fy"):
            value = torch.as_tensor(getattr(self, name))
            if not bool(torch.all(value > 0)) or not bool(torch.all(torch.isfinite(value))):
                raise CameraError(f"pinhole {name} must be positive and finite, got {value.tolist()}")

    @property
    def model(self) -> str:
        return "pinhole"

    @classmethod
    def from_hfov(cls, width: int, height: int, hfov_deg: Tensor | float) -> PinholeCamera:
        """Centred pinhole camera with square pixels and the given horizontal field of view (degrees)."""
        hfov = torch.as_tensor(hfov_deg, dtype=torch.float64)
        if not bool(torch.all((hfov > 0) & (hfov < 180))):
            raise CameraError(f"horizontal field of view must be in (0, 180) degrees, got {hfov.tolist()}")
        focal_px = (width / 2) / torch.tan(torch.deg2rad(hfov) / 2)
        focal: Tensor | float = focal_px if focal_px.dim() else float(focal_px)
        return cls(width, height, focal, focal, width / 2, height / 2)

    @classmethod
    def from_focal_35mm(cls, width: int, height: int, focal_35mm: float) -> PinholeCamera:
        """Centred pinhole camera from EXIF ``FocalLengthIn35mmFilm`` (mm): fx = f35 / 36 mm * long side."""
        if not focal_35mm or focal_35mm <= 0 or not math.isfinite(focal_35mm):
            raise CameraError(f"35 mm equivalent focal length must be positive, got {focal_35mm}")
        focal_px = focal_35mm / FILM_35MM_WIDTH_MM * max(width, height)
        return cls(width, height, focal_px, focal_px, width / 2, height / 2)

    @property
    def hfov_deg(self) -> Tensor:
        """Horizontal field of view (degrees) of a centred camera, as a tensor of the parameters' shape."""
        return torch.rad2deg(2 * torch.atan(self.width / (2 * torch.as_tensor(self.fx, dtype=torch.float64))))

    def scaled(self, scale: float) -> PinholeCamera:
        """The camera for the image resized by ``scale`` (edge-based pixel coordinates scale exactly)."""
        return PinholeCamera(
            round(self.width * scale),
            round(self.height * scale),
            self.fx * scale,
            self.fy * scale,
            self.cx * scale,
            self.cy * scale,
        )

    def _params(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(_broadcast_param(p, like) for p in (self.fx, self.fy, self.cx, self.cy))  # type: ignore[return-value]

    def project(self, points_cam: Tensor) -> tuple[Tensor, Tensor]:
        """Project camera-frame points to pixels.

        Args:
            points_cam: (..., 3) points (x right, y down, z forward).

        Returns:
            uv: (..., 2) pixel coordinates (finite everywhere; meaningless where not valid).
            valid: (...) bool, True where the point is in front of the camera and inside the image.
        """
        fx, fy, cx, cy = self._params(points_cam)
        x, y, z = points_cam.unbind(-1)
        in_front = z > _EPS
        z_safe = torch.where(in_front, z, torch.ones_like(z))
        uv = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)
        return uv, in_front & _inside_image(uv, self.width, self.height)

    def project_jacobian(self, points_cam: Tensor) -> Tensor:
        """(..., 2, 3) analytic Jacobian d(u, v) / d(x, y, z) of :meth:`project` (for points in front)."""
        fx, fy, _, _ = self._params(points_cam)
        x, y, z = points_cam.unbind(-1)
        z_safe = torch.where(z > _EPS, z, torch.ones_like(z))
        zeros = torch.zeros_like(z)
        du = torch.stack([fx / z_safe, zeros, -fx * x / z_safe**2], dim=-1)
        dv = torch.stack([zeros, fy / z_safe, -fy * y / z_safe**2], dim=-1)
        return torch.stack([du, dv], dim=-2)

    def unproject(self, uv: Tensor) -> tuple[Tensor, Tensor]:
        """Back-project pixels (..., 2) to unit rays (..., 3); valid (...) where the pixel is inside the image."""
        fx, fy, cx, cy = self._params(uv)
        rays = torch.stack([(uv[..., 0] - cx) / fx, (uv[..., 1] - cy) / fy, torch.ones_like(uv[..., 0])], dim=-1)
        return torch.nn.functional.normalize(rays, dim=-1), _inside_image(uv, self.width, self.height)


Camera = PanoramaCamera | PinholeCamera


def pixel_centers(width: int, height: int, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """(height, width, 2) continuous (u, v) coordinates of every pixel centre: (j + 0.5, i + 0.5)."""
    cols = torch.arange(width, dtype=dtype, device=device) + 0.5
    rows = torch.arange(height, dtype=dtype, device=device) + 0.5
    grid_v, grid_u = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([grid_u, grid_v], dim=-1)


def to_grid_sample_coords(uv: Tensor, width: int, height: int) -> Tensor:
    """Continuous pixel coordinates (..., 2) -> normalised [-1, 1] coordinates for grid_sample(align_corners=False)."""
    scale = uv.new_tensor([2.0 / width, 2.0 / height])
    return uv * scale - 1.0

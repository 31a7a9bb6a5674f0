"""Batched 3-DoF poses in a metric map frame.

Convention:
    The map frame has x = east, y = north (metres). A pose's heading is measured clockwise from the map's grid
    north (+y), in radians, so a body with heading ``h`` looks along (east, north) = (sin h, cos h).
    The 2-D body frame has x = right, y = forward. ``Pose2`` is ``T_map_from_body``: ``p_map = R(h) p_body + t``
    with ``R(h) = [[cos h, sin h], [-sin h, cos h]]``. Grid north differs from true north by the meridian
    convergence ``c`` (degrees, clockwise from true north to grid north): ``grid heading = true heading - c``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def rotation_map_from_body(heading_rad: Tensor) -> Tensor:
    """Rotation taking body (right, forward) vectors to map (east, north) vectors.

    Args:
        heading_rad: (...) headings clockwise from grid north, radians.

    Returns:
        (..., 2, 2) rotation matrices ``R`` with ``v_map = R @ v_body``.
    """
    cos_h, sin_h = torch.cos(heading_rad), torch.sin(heading_rad)
    row_east = torch.stack([cos_h, sin_h], dim=-1)
    row_north = torch.stack([-sin_h, cos_h], dim=-1)
    return torch.stack([row_east, row_north], dim=-2)


def _as_tensor(value: Tensor | float | Sequence[float], like: Tensor | None = None) -> Tensor:
    if isinstance(value, Tensor):
        return value if like is None else value.to(like)
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.as_tensor(value, dtype=dtype, device=device)


class Pose2:
    """A batch of 2-D rigid poses ``T_map_from_body`` stored as a (..., 3) tensor ``[x_m, y_m, heading_rad]``.

    Headings are kept unwrapped internally (so optimisation through them stays smooth); the public degree
    accessors wrap to [0, 360).
    """

    __slots__ = ("data",)

    def __init__(self, data: Tensor) -> None:
        if data.shape[-1:] != (3,):
            raise ValueError(f"Pose2 expects a (..., 3) tensor [x_m, y_m, heading_rad], got shape {tuple(data.shape)}")
        self.data = data

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_xy_heading(cls, x_m: Tensor | float, y_m: Tensor | float, heading_rad: Tensor | float) -> Pose2:
        """Pose from broadcastable x, y (metres) and grid heading (radians, clockwise from grid north)."""
        x_m = _as_tensor(x_m)
        y_m, heading_rad = _as_tensor(y_m, x_m), _as_tensor(heading_rad, x_m)
        x_m, y_m, heading_rad = torch.broadcast_tensors(x_m, y_m, heading_rad)
        return cls(torch.stack([x_m, y_m, heading_rad], dim=-1))

    @classmethod
    def from_xy_heading_deg(cls, x_m: Tensor | float, y_m: Tensor | float, heading_deg: Tensor | float) -> Pose2:
        """Pose from x, y (metres) and grid heading in degrees clockwise from grid north."""
        return cls.from_xy_heading(x_m, y_m, torch.deg2rad(_as_tensor(heading_deg, _as_tensor(x_m))))

    @classmethod
    def from_true_heading_deg(
        cls,
        x_m: Tensor | float,
        y_m: Tensor | float,
        heading_deg: Tensor | float,
        convergence_deg: Tensor | float = 0.0,
    ) -> Pose2:
        """Pose from a true-north heading (degrees) and the meridian convergence at the point (degrees).

        ``convergence_deg`` is the clockwise angle from true north to grid north (see
        ``LocalFrame.convergence_deg``); the stored grid heading is ``heading_deg - convergence_deg``.
        """
        x_t = _as_tensor(x_m)
        grid_deg = _as_tensor(heading_deg, x_t) - _as_tensor(convergence_deg, x_t)
        return cls.from_xy_heading_deg(x_t, y_m, grid_deg)

    @classmethod
    def identity(cls, batch_shape: Sequence[int] = (), **tensor_kwargs) -> Pose2:
        """Identity poses of the given batch shape (``dtype``/``device`` keyword arguments are forwarded)."""
        return cls(torch.zeros(*batch_shape, 3, **tensor_kwargs))

    @classmethod
    def stack(cls, poses: Sequence[Pose2], dim: int = 0) -> Pose2:
        """Stack poses along a new batch dimension."""
        return cls(torch.stack([p.data for p in poses], dim=dim if dim >= 0 else dim - 1))

    # ---- accessors ----------------------------------------------------------------------------------------
    @property
    def x_m(self) -> Tensor:
        return self.data[..., 0]

    @property
    def y_m(self) -> Tensor:
        return self.data[..., 1]

    @property
    def xy_m(self) -> Tensor:
        """(..., 2) position (east, north) in metres."""
        return self.data[..., :2]

    @property
    def heading_rad(self) -> Tensor:
        """(...) grid heading in radians, unwrapped."""
        return self.data[..., 2]

    @property
    def heading_deg(self) -> Tensor:
        """(...) grid heading in degrees clockwise from grid north, wrapped to [0, 360)."""
        return wrap_degrees(torch.rad2deg(self.heading_rad))

    def true_heading_deg(self, convergence_deg: Tensor | float = 0.0) -> Tensor:
        """(...) true-north heading in degrees in [0, 360) given the convergence (degrees) at the pose."""
        return wrap_degrees(torch.rad2deg(self.heading_rad) + _as_tensor(convergence_deg, self.data))

    @property
    def forward(self) -> Tensor:
        """(..., 2) unit viewing direction (east, north) = (sin h, cos h)."""
        return torch.stack([torch.sin(self.heading_rad), torch.cos(self.heading_rad)], dim=-1)

    @property
    def shape(self) -> torch.Size:
        """Batch shape (without the trailing 3)."""
        return self.data.shape[:-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    def rotation(self) -> Tensor:
        """(..., 2, 2) ``R_map_from_body``."""
        return rotation_map_from_body(self.heading_rad)

    def to(self, *args, **kwargs) -> Pose2:
        return Pose2(self.data.to(*args, **kwargs))

    def __getitem__(self, index) -> Pose2:
        """Index the batch dimensions (the trailing [x, y, heading] axis is never indexed)."""
        if self.data.dim() == 1:
            raise IndexError("cannot index an unbatched Pose2")
        return Pose2(self.data[index])

    def __len__(self) -> int:
        return self.data.shape[0]

    def __repr__(self) -> str:
        return f"Pose2(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device})"

    # ---- group operations ---------------------------------------------------------------------------------
    def compose(self, other: Pose2) -> Pose2:
        """``self ∘ other``: if self is T_a_from_b and other T_b_from_c, the result is T_a_from_c."""
        xy = (self.rotation() @ other.xy_m.unsqueeze(-1)).squeeze(-1) + self.xy_m
        heading = self.heading_rad + other.heading_rad
        return Pose2(torch.cat([xy, heading.unsqueeze(-1)], dim=-1))

    def __matmul__(self, other: Pose2) -> Pose2:
        return self.compose(other)

    def inverse(self) -> Pose2:
        """T_body_from_map for T_map_from_body."""
        xy = -(self.rotation().transpose(-1, -2) @ self.xy_m.unsqueeze(-1)).squeeze(-1)
        return Pose2(torch.cat([xy, -self.heading_rad.unsqueeze(-1)], dim=-1))

    def transform(self, points: Tensor) -> Tensor:
        """Apply the pose to points: body (right, forward) -> map (east, north).

        Args:
            points: (..., N, 2) points whose leading dims broadcast with the pose's batch shape.

        Returns:
            (..., N, 2) transformed points, metres.
        """
        rot = self.rotation().unsqueeze(-3)
        return (rot @ points.unsqueeze(-1)).squeeze(-1) + self.xy_m.unsqueeze(-2)

    def inverse_transform(self, points: Tensor) -> Tensor:
        """Map (east, north) points (..., N, 2) to body (right, forward) coordinates (..., N, 2)."""
        rot_t = self.rotation().transpose(-1, -2).unsqueeze(-3)
        return (rot_t @ (points - self.xy_m.unsqueeze(-2)).unsqueeze(-1)).squeeze(-1)

    def magnitude(self) -> tuple[Tensor, Tensor]:
        """(translation norm in metres, absolute wrapped rotation angle in degrees), each (...)."""
        angle = torch.rad2deg(torch.atan2(torch.sin(self.heading_rad), torch.cos(self.heading_rad)))
        return torch.linalg.norm(self.xy_m, dim=-1), angle.abs()


def wrap_degrees(angle_deg: Tensor) -> Tensor:
    """Wrap angles in degrees to [0, 360), never returning 360 through rounding."""
    wrapped = torch.remainder(angle_deg, 360.0)
    return torch.where(wrapped >= 360.0, wrapped - 360.0, wrapped)


def angle_difference_deg(a_deg: Tensor, b_deg: Tensor) -> Tensor:
    """Signed smallest difference ``a - b`` in degrees, in [-180, 180)."""
    return torch.remainder(a_deg - b_deg + 180.0, 360.0) - 180.0

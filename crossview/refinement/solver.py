"""Batched damped Gauss-Newton steps and robust losses for the LM refiner: pure tensor functions.

The refiner minimises ``E(p) = sum_k w_k rho(s_k)`` with ``s_k = ||r_k||^2`` (a feature residual per point) by
iteratively reweighted Gauss-Newton: with ``omega_k = rho'(s_k)`` held fixed, the normal equations of one step are
``H = sum_k w_k omega_k J_k^T J_k`` and ``g = sum_k w_k omega_k J_k^T r_k`` (the factor 2 of the derivatives of
``E`` cancels), and Marquardt's damping solves ``(H + lambda diag(H)) delta = -g`` (Marquardt 1963, as in PixLoc's
damped step, Sarlin et al. CVPR 2021).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ROBUST_LOSSES", "damped_step", "robust_loss"]

ROBUST_LOSSES = ("l2", "huber", "cauchy")

# Marquardt scales the damping by diag(H); a parameter the data does not constrain (diag 0) still gets this much.
_MIN_DIAGONAL = 1e-9


def robust_loss(squared: Tensor, kind: str, scale: float) -> tuple[Tensor, Tensor]:
    """A robust loss ``rho`` of squared residual norms and its derivative (the IRLS weight).

    ``scale`` ``b`` is the residual norm where the loss departs from least squares:

    * ``"l2"``: ``rho(s) = s``, weight 1.
    * ``"huber"``: ``rho(s) = s`` for ``s <= b^2``, else ``2 b sqrt(s) - b^2``; weight ``min(1, b / sqrt(s))``.
    * ``"cauchy"``: ``rho(s) = b^2 log(1 + s / b^2)``; weight ``1 / (1 + s / b^2)``.

    Args:
        squared: (...) squared residual norms ``s >= 0``.
        kind: one of :data:`ROBUST_LOSSES`.
        scale: ``b > 0``, in the residual's units.

    Returns:
        rho: (...) loss values; weight: (...) ``d rho / d s`` in (0, 1].
    """
    if kind == "l2":
        return squared, torch.ones_like(squared)
    b2 = scale * scale
    if kind == "huber":
        norm = torch.sqrt(squared.clamp(min=b2))  # >= b: no division by zero, and the branch below is exact
        inlier = squared <= b2
        rho = torch.where(inlier, squared, 2.0 * scale * norm - b2)
        return rho, torch.where(inlier, torch.ones_like(squared), scale / norm)
    if kind == "cauchy":
        ratio = squared / b2
        return b2 * torch.log1p(ratio), 1.0 / (1.0 + ratio)
    raise ValueError(f"unknown robust loss {kind!r}; available: {', '.join(ROBUST_LOSSES)}")


def damped_step(g: Tensor, H: Tensor, lambda_: Tensor | float, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One Levenberg-Marquardt step per batch element: ``delta = -(H + lambda diag(H))^-1 g``.

    Solved by Cholesky; elements whose damped matrix is not positive definite fall back to LU. Masked, non-finite
    and singular elements get a zero step and ``solved = False`` without touching the others (they are swapped for
    an identity system before the batched factorisation, so a NaN never reaches a LAPACK call).

    Args:
        g: (B, P) gradients ``J^T W r``.
        H: (B, P, P) Gauss-Newton Hessians ``J^T W J``.
        lambda_: damping, a number or (B,); 0 gives the Gauss-Newton step. ``diag(H)`` is clamped to at least
            1e-9 so that unconstrained parameters are damped too.
        mask: (B,) bool, elements to solve (default all).

    Returns:
        delta: (B, P) steps (zero where not solved); solved: (B,) bool.
    """
    batch, params = g.shape
    lam = torch.as_tensor(lambda_, dtype=H.dtype, device=H.device).expand(batch)
    diagonal = H.diagonal(dim1=-2, dim2=-1).clamp(min=_MIN_DIAGONAL)
    damped = H + torch.diag_embed(lam.unsqueeze(-1) * diagonal)
    usable = torch.isfinite(damped).flatten(1).all(-1) & torch.isfinite(g).all(-1) & torch.isfinite(lam)
    if mask is not None:
        usable = usable & mask
    eye = torch.eye(params, dtype=H.dtype, device=H.device).expand_as(damped)
    damped = torch.where(usable[:, None, None], damped, eye)
    rhs = torch.where(usable[:, None], g, torch.zeros_like(g)).unsqueeze(-1)
    factor, info = torch.linalg.cholesky_ex(damped)
    solved = info == 0
    delta = -torch.cholesky_solve(rhs, factor).squeeze(-1)
    if not bool(solved.all()):  # rare: only for indefinite or numerically singular systems
        lu, pivots, lu_info = torch.linalg.lu_factor_ex(damped)
        lu_delta = -torch.linalg.lu_solve(lu, pivots, rhs).squeeze(-1)
        lu_ok = (lu_info == 0) & torch.isfinite(lu_delta).all(-1)
        delta = torch.where(solved[:, None], delta, lu_delta)
        solved = solved | lu_ok
    solved = solved & usable & torch.isfinite(delta).all(-1)
    return torch.where(solved[:, None], delta, torch.zeros_like(delta)), solved

"""damped_step (Marquardt damping, masks, Cholesky -> LU fallback) and the robust losses, against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossview.refinement.solver import ROBUST_LOSSES, damped_step, robust_loss

pytestmark = pytest.mark.usefixtures("single_torch_thread")

F64 = torch.float64


def random_spd(batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, 3, 6, generator=generator, dtype=F64)
    return a @ a.transpose(1, 2)


def numpy_step(g: np.ndarray, H: np.ndarray, lam: float) -> np.ndarray:
    """Marquardt's step by the textbook formula: (H + lam diag(H)) delta = -g."""
    damped = H + lam * np.diag(np.diag(H))
    return -np.linalg.solve(damped, g)


@pytest.mark.parametrize("lam", [0.0, 1e-3, 1.0, 100.0])
def test_damped_step_matches_marquardt_formula(lam):
    H = random_spd(5, seed=1)
    g = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    delta, solved = damped_step(g, H, lam)
    assert solved.all()
    for i in range(5):
        np.testing.assert_allclose(delta[i].numpy(), numpy_step(g[i].numpy(), H[i].numpy(), lam), rtol=1e-10)


def test_damped_step_per_element_lambda_and_large_damping_shrinks_step():
    H = random_spd(1, seed=3).expand(3, 3, 3)
    g = torch.ones(3, 3, dtype=F64)
    delta, _ = damped_step(g, H, torch.tensor([1e-3, 1.0, 1e3], dtype=F64))
    norms = torch.linalg.norm(delta, dim=-1)
    assert norms[0] > norms[1] > norms[2]
    # Very large damping: a gradient step scaled by 1 / (lam diag(H)).
    expected = -g[2] / (1e3 * torch.diagonal(H[2]))
    torch.testing.assert_close(delta[2], expected, rtol=2e-3, atol=0)


def test_damped_step_mask_and_nan_do_not_poison_the_batch():
    H = random_spd(4, seed=4)
    g = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    H_bad, g_bad = H.clone(), g.clone()
    H_bad[1, 0, 0] = math.nan
    g_bad[2, 1] = math.inf
    mask = torch.tensor([True, True, True, False])
    delta, solved = damped_step(g_bad, H_bad, 0.1, mask)
    assert solved.tolist() == [True, False, False, False]
    assert torch.isfinite(delta).all()
    assert (delta[1:] == 0).all()
    alone, _ = damped_step(g[:1], H[:1], 0.1)
    torch.testing.assert_close(delta[:1], alone, rtol=0, atol=0)


def test_damped_step_falls_back_to_lu_for_indefinite_systems():
    # Indefinite: Cholesky fails, LU solves it; the SPD neighbour is solved by Cholesky as usual.
    H = torch.stack([torch.diag(torch.tensor([2.0, -1.0, 3.0], dtype=F64)), random_spd(1, seed=6)[0]])
    g = torch.tensor([[1.0, 2.0, 3.0], [0.5, -0.5, 1.0]], dtype=F64)
    _, info = torch.linalg.cholesky_ex(H[:1])
    assert info.item() != 0  # the fallback is really exercised
    delta, solved = damped_step(g, H, 0.0)
    assert solved.all()
    np.testing.assert_allclose(delta[0].numpy(), -np.linalg.solve(H[0].numpy(), g[0].numpy()), rtol=1e-12)
    np.testing.assert_allclose(delta[1].numpy(), numpy_step(g[1].numpy(), H[1].numpy(), 0.0), rtol=1e-10)


def test_damped_step_singular_system_is_reported_not_solved():
    H = torch.zeros(2, 3, 3, dtype=F64)
    H[1] = random_spd(1, seed=7)[0]
    g = torch.ones(2, 3, dtype=F64)
    delta, solved = damped_step(g, H, 0.0)
    assert solved.tolist() == [False, True]
    assert (delta[0] == 0).all()


def test_damped_step_zero_hessian_with_damping_takes_no_step_from_zero_gradient():
    # No information at all (H = 0, g = 0): the clamped diagonal keeps the damped system solvable, step 0.
    delta, solved = damped_step(torch.zeros(1, 3, dtype=F64), torch.zeros(1, 3, 3, dtype=F64), 0.01)
    assert solved.all() and (delta == 0).all()


@pytest.mark.parametrize("kind", ROBUST_LOSSES)
def test_robust_loss_weight_is_its_derivative(kind):
    squared = torch.linspace(0.0, 3.0, 301, dtype=F64)[1:].requires_grad_(True)
    rho, weight = robust_loss(squared, kind, 0.4)
    (derivative,) = torch.autograd.grad(rho.sum(), squared)
    torch.testing.assert_close(weight, derivative, rtol=1e-12, atol=1e-12)


def test_robust_losses_against_their_formulas():
    s = torch.tensor([0.01, 0.16, 0.25, 1.0, 4.0], dtype=F64)
    b = 0.4
    huber, _ = robust_loss(s, "huber", b)
    expected = [float(x) if x <= b * b else 2 * b * math.sqrt(x) - b * b for x in s]
    np.testing.assert_allclose(huber.numpy(), expected, rtol=1e-12)
    cauchy, weight = robust_loss(s, "cauchy", b)
    np.testing.assert_allclose(cauchy.numpy(), [b * b * math.log(1 + float(x) / b**2) for x in s], rtol=1e-12)
    assert weight[-1] < 0.05 < weight[0]  # outliers (|r| = 2) are down-weighted twenty-fold
    l2, ones = robust_loss(s, "l2", b)
    assert torch.equal(l2, s) and (ones == 1).all()
    with pytest.raises(ValueError, match="unknown robust loss"):
        robust_loss(s, "tukey", b)

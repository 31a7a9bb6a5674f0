"""LM pose refinement: a 3-DoF pose against a map chip on multi-scale features, coarse to fine, batched.

>>> from crossview.refinement import RefinerConfig, refine_candidates
>>> result = refine_candidates(g_feats, g_confs, c_feats, c_confs, chips, camera, 1.6, init_pose)  # doctest: +SKIP
>>> result.pose, result.covariance, result.converged  # doctest: +SKIP
"""

from __future__ import annotations

from crossview.refinement.refiner import RefinementError, RefinerConfig, RefineResult, refine_candidates
from crossview.refinement.solver import damped_step, robust_loss

__all__ = ["RefineResult", "RefinementError", "RefinerConfig", "damped_step", "refine_candidates", "robust_loss"]

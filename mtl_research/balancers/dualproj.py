"""DualProj: the mean gradient projected onto the dual cone of the task gradients.

The aggregator Quinton & Rey compare UPGrad with in "Jacobian Descent for
Multi-Objective Optimization" (arXiv:2406.16232, 2024), adapted from Lopez-Paz
& Ranzato, "Gradient Episodic Memory for Continual Learning" (NeurIPS 2017,
Eq. 11: the proposed gradient projected so that it conflicts with no past
task's gradient). Here every task is a constraint, and the projected vector is
the mean gradient:

  d = A_DualProj(J) = π_J((1/T) Σ_t g_t) = Jᵀ v,   v = argmin_{v ≥ 1/T} vᵀ G v,

π_J the projection onto C = {x : J x ≥ 0} (the paper's Eq. 3) and the QP its
Proposition 1 with u = (1/T)·1 (dual_cone.py). So ⟨d, g_t⟩ = (G v)_t ≥ 0 for
every t, and where the mean gradient conflicts with no task (G·1 ≥ 0) d is
the mean gradient itself. The heads follow Σ_t L_t (gramian.py).

Flags (paper version default):
  --dualproj_scale=mean  project the mean gradient (the paper; TorchJD's default
                         `pref_vector`, 1/T for every task);
                  =sum   project the sum Σ_t g_t (T times the mean, as the
                         projection is positively homogeneous): the scale of
                         the `fixed` balancer's Σ_t L_t.
  --dual_cone_reg_eps, --dual_cone_norm_eps: the projection's numerics
                         (dual_cone.py): 0 and 0 (the exact projection);
                         TorchJD's DualProj uses 1e-4 and 1e-4.

Diagnostics: solver_iterations (linear solves of the active-set method) and
solver_residual (the KKT residual, in units of G/tr(G)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import dual_cone
from mtl_research.balancers.base import Schedule
from mtl_research.balancers.gramian import SCOPE_PARAM, GramianBalancer, Weighting
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import ENUM, Param

MEAN, SUM = "mean", "sum"
PARAMS = (
  SCOPE_PARAM,
  Param(
    "dualproj_scale",
    ENUM,
    MEAN,
    "DualProj: project the mean task gradient (the paper, TorchJD) or their sum (T× larger: the scale of "
    "--balancer=fixed).",
    choices=(MEAN, SUM),
  ),
  dual_cone.REG_EPS_PARAM,
  dual_cone.NORM_EPS_PARAM,
)


def dualproj_weights(
  gramian: tf.Tensor,
  *,
  scale: str = MEAN,
  reg_eps: float = 0.0,
  norm_eps: float = 0.0,
  tolerance: float = dual_cone.DEFAULT_TOLERANCE,
  max_iterations: int | None = None,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """DualProj's float64 weights [T] from the float64 Gramian [T, T] (static T), and its diagnostics."""
  num_tasks = gramian.shape[0]
  matrix = dual_cone.normalized_gramian(gramian, reg_eps, norm_eps)
  target = tf.fill([1, num_tasks], tf.constant(1.0 if scale == SUM else 1.0 / num_tasks, gramian.dtype))
  projection = dual_cone.project_weights(matrix, target, tolerance, max_iterations)
  return projection.weights[0], {
    "solver_iterations": tf.cast(projection.iterations[0], tf.float64),
    "solver_residual": projection.residual[0],
  }


@BALANCERS.register("dualproj", params=PARAMS)
class DualProj(GramianBalancer):
  """Mean gradient projected onto the dual cone of the task gradients (GEM's projection, every task a constraint)."""

  diagnostic_names = ("solver_iterations", "solver_residual")
  relative_only = True  # one task: v = 1, the plain gradient

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.scale = params["dualproj_scale"]
    self.reg_eps = float(params[dual_cone.REG_EPS_PARAM.name])
    self.norm_eps = float(params[dual_cone.NORM_EPS_PARAM.name])

  def weigh(self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor, seed: tf.Tensor) -> Weighting:
    del losses, step, seed  # DualProj reads the gradients only
    weights, diagnostics = dualproj_weights(gramian, scale=self.scale, reg_eps=self.reg_eps, norm_eps=self.norm_eps)
    return Weighting(weights, diagnostics)

"""UPGrad: Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232 (2024).

Each task's gradient is projected onto the dual cone C = {x : J x ≥ 0} of all
of them (the directions that conflict with no task; π_J is the paper's Eq. 3),
and the projections are averaged (the paper's definition of UPGrad, the
"unconflicting projection of gradients"):

  d = A_UPGrad(J) = (1/T) Σ_i π_J(g_i).

By the paper's Proposition 1, π_J(g_i) = π_J(Jᵀe_i) = Jᵀ v⁽ⁱ⁾ with
v⁽ⁱ⁾ = argmin_{v ≥ e_i} vᵀ G v, so d = Jᵀ w with the weights

  w = (1/T) Σ_i v⁽ⁱ⁾,

a function of G = J·Jᵀ alone (dual_cone.py solves the T problems in one
batch). Every projection conflicts with no task, so neither does d:
⟨d, g_t⟩ = (G w)_t ≥ 0 for every t. Where no two gradients conflict
(G_ij ≥ 0 for all i, j), every g_i is already in C, v⁽ⁱ⁾ = e_i and d is the
mean gradient. The heads follow Σ_t L_t (gramian.py), as in TorchJD's
`mtl_backward`, where each head gets its own task's gradient.

Flags (paper version default):
  --upgrad_scale=mean   the average of the projections (the paper's definition;
                        TorchJD's default `pref_vector`, 1/T for every task: its
                        weights are Σ_i p_i v⁽ⁱ⁾ for a preference vector p);
                =sum    their sum, T times the mean: the scale of the `fixed`
                        balancer's Σ_t L_t, to compare at one learning rate.
  --dual_cone_reg_eps, --dual_cone_norm_eps: the projection's numerics
                        (dual_cone.py): 0 and 0 (the exact projection); TorchJD's
                        UPGrad uses 1e-4 and 1e-4.

Diagnostics: solver_iterations (batched linear solves of the active-set
method, the same for the T problems) and solver_residual (the largest KKT
residual of the T problems, in units of G/tr(G)).
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
    "upgrad_scale",
    ENUM,
    MEAN,
    "UPGrad: average the projected task gradients (the paper, TorchJD) or sum them (T× larger: the scale of "
    "--balancer=fixed).",
    choices=(MEAN, SUM),
  ),
  dual_cone.REG_EPS_PARAM,
  dual_cone.NORM_EPS_PARAM,
)


def upgrad_weights(
  gramian: tf.Tensor,
  *,
  scale: str = MEAN,
  reg_eps: float = 0.0,
  norm_eps: float = 0.0,
  tolerance: float = dual_cone.DEFAULT_TOLERANCE,
  max_iterations: int | None = None,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """UPGrad's float64 weights [T] from the float64 Gramian [T, T] (static T), and its diagnostics."""
  num_tasks = gramian.shape[0]
  matrix = dual_cone.normalized_gramian(gramian, reg_eps, norm_eps)
  projection = dual_cone.project_weights(matrix, tf.eye(num_tasks, dtype=gramian.dtype), tolerance, max_iterations)
  total = tf.reduce_sum(projection.weights, axis=0)
  weights = total if scale == SUM else total / num_tasks
  return weights, {
    "solver_iterations": tf.cast(tf.reduce_max(projection.iterations), tf.float64),
    "solver_residual": tf.reduce_max(projection.residual),
  }


@BALANCERS.register("upgrad", params=PARAMS)
class UPGrad(GramianBalancer):
  """Quinton & Rey 2024: each task gradient projected onto the dual cone of all of them, then averaged."""

  diagnostic_names = ("solver_iterations", "solver_residual")
  relative_only = True  # one task: v = 1, the plain gradient

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.scale = params["upgrad_scale"]
    self.reg_eps = float(params[dual_cone.REG_EPS_PARAM.name])
    self.norm_eps = float(params[dual_cone.NORM_EPS_PARAM.name])

  def weigh(self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor, seed: tf.Tensor) -> Weighting:
    del losses, step, seed  # UPGrad reads the gradients only
    weights, diagnostics = upgrad_weights(gramian, scale=self.scale, reg_eps=self.reg_eps, norm_eps=self.norm_eps)
    return Weighting(weights, diagnostics)

"""CAGrad: Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021.

The shared parameters follow the direction, within a ball around the mean
gradient g0 = Σ_t b_t g_t (b_t = 1/T), that maximizes the worst task's
first-order improvement (Eq. 2 of the paper):

  max_d min_t ⟨g_t, d⟩   subject to   ‖d − g0‖ ≤ c·‖g0‖.

Its dual (Eq. 3 and Algorithm 1), with φ = c²‖g0‖² and g_w = Σ_t w_t g_t:

  w* = argmin_{w ∈ Δ} wᵀGb + √φ·√(wᵀGw)          (Δ: the simplex)
  d  = g0 + (√φ / ‖g_w*‖)·g_w*,   i.e. weights  b + (√φ / ‖g_w*‖)·w*.

The inner problem is convex but not a QP. It is solved exactly through the
variational form √φ‖u‖ = min_{s>0} (‖u‖²/s + φs)/2: for fixed s the minimizer
w(s) = argmin_{w∈Δ} ½wᵀGw + s·(Gb)ᵀw projects −s·g0 onto the convex hull of
the gradients, and w* = w(s*) at the s* where ‖g_w(s)‖ = √φ·s, so that
√φ/‖g_w*‖ = 1/s*. simplex.follow_path follows w(s) from the min-norm point
(s = 0, MGDA's solution) to s* in a few exact active-set steps.

Degenerate case: if the dual's minimum, 0, is attained at g_w = 0 (the
min-norm point is 0, a Pareto-stationary point such as a task with a zero
gradient, and no point u of the hull has ⟨g0, u⟩ + √φ‖u‖ < 0), then s* = 0 and
the paper's formula is 0/0 (public code adds 1e-8 and returns noise). Every d
in the ball with ⟨g_t, d⟩ ≥ 0 for all t is then optimal; the limit of the path
as s → 0 is the one nearest g0, the projection of g0 onto that cone,
d = g0 + lim u(s)/s (weights b + w¹, the path's slope), which is what is
returned. The weights are not unique when G is singular (a duplicated or zero
gradient); the direction d is. Should the solver reach its iteration cap (not
seen in tests), the mean gradient is used and the residual shows it.

c = 0 or g0 = 0 gives the mean gradient (weights b). Defaults follow the
paper (Algorithm 1, as TorchJD's CAGrad implements it); public code differs in
two places, behind flags:

  --cagrad_c (default 0.5)  the authors' and LibMTL's default; the paper uses
      0.4 in its NYUv2/Cityscapes runs (run.sh) and proves convergence for
      0 ≤ c < 1. c → ∞ approaches MGDA.
  --cagrad_rescale=0|1|2  divide the update by 1 (0), 1 + c² (1) or 1 + c (2).
      Algorithm 1 has no rescaling (0, the default). The authors' supervised
      experiments call cagrad(..., rescale=1) (Cranial-XIX/CAGrad,
      nyuv2/utils.py and cityscapes/utils.py, whose cagrad() defaults differ:
      1 and 0); LibMTL's default is rescale=1.
  --cagrad_scale=mean|sum  the paper's g0 is the mean gradient; the authors'
      supervised code multiplies the update by T "to match the sum loss"
      (sum); LibMTL does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import gramian as gramian_lib
from mtl_research.balancers import simplex
from mtl_research.balancers.base import Schedule
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import ENUM, FLOAT, INT, Param

SCALES = ("mean", "sum")

PARAMS = (
  gramian_lib.SCOPE_PARAM,
  Param(
    "cagrad_c",
    FLOAT,
    0.5,
    "CAGrad's radius c: the update stays within c·‖g0‖ of the mean gradient g0 (0: the mean gradient; "
    "0.5: the authors' and LibMTL's default; the paper's convergence proof needs c < 1).",
    lower=0.0,
  ),
  Param(
    "cagrad_rescale",
    INT,
    0,
    "Divide CAGrad's update by 1 (0: the paper's Algorithm 1), 1 + c² (1: the authors' experiments, LibMTL's "
    "default) or 1 + c (2).",
    lower=0,
    below=3,
  ),
  Param(
    "cagrad_scale",
    ENUM,
    "mean",
    "CAGrad's update at the scale of the mean gradient (mean: paper, LibMTL) or × T (sum: the authors' code).",
    choices=SCALES,
  ),
)

_RESCALE_DIVISORS = {0: lambda c: 1.0, 1: lambda c: 1.0 + c * c, 2: lambda c: 1.0 + c}


def rescale_divisor(c: float, rescale: int) -> float:
  """What --cagrad_rescale divides the update by."""
  if rescale not in _RESCALE_DIVISORS:
    raise ValueError(f"cagrad rescale must be 0, 1 or 2, not {rescale!r}")
  return _RESCALE_DIVISORS[rescale](c)


def cagrad_weights(
  gramian: tf.Tensor, *, c: float = 0.5, rescale: int = 0, scale: str = "mean"
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """CAGrad's weights from the float64 Gramian [T, T] (module docstring).

  Returns (weights [T] float64, {"solver_iterations", "solver_residual"}):
  iterations of the min-norm solve and of the path together; the residual is
  the duality gap of the problem above, F(w*) − min_t ⟨g_t, d⟩ ≥ 0 (0 exactly
  at the optimum; d is in the ball by construction), relative to the largest
  squared gradient norm.
  """
  if c < 0 or scale not in SCALES:
    raise ValueError(f"invalid CAGrad options: c={c!r}, scale={scale!r}")
  divisor = rescale_divisor(c, rescale)
  gramian = tf.convert_to_tensor(gramian, tf.float64)
  num_tasks = simplex.num_tasks_of(gramian)
  unit, _ = simplex.unit_scale(gramian)
  mean = tf.fill([num_tasks], tf.constant(1.0 / num_tasks, tf.float64))
  linear = tf.linalg.matvec(unit, mean)  # (Gb)_t = ⟨g_t, g0⟩
  radius_sq = c * c * tf.maximum(tf.reduce_sum(mean * linear), 0.0)  # φ = c²‖g0‖²

  start = simplex.min_norm_point(unit)
  path = simplex.follow_path(unit, linear, radius_sq, start)
  positive = path.s > 0
  dual = path.intercept + path.s * path.slope  # w*, on the simplex
  # b + w*/s* = b + w⁰/s* + w¹; at s* = 0 (degenerate) w⁰ combines to g_w = 0 and only the slope remains.
  ascent = path.slope + tf.where(positive, path.intercept / tf.where(positive, path.s, 1.0), tf.zeros_like(mean))
  moves = tf.logical_and(radius_sq > 0, path.found)
  weights = mean + tf.where(moves, ascent, tf.zeros_like(mean))

  improvements = tf.linalg.matvec(unit, weights)  # ⟨g_t, d⟩
  dual_norm_sq = tf.maximum(tf.reduce_sum(dual * tf.linalg.matvec(unit, dual)), 0.0)
  dual_value = tf.reduce_sum(linear * dual) + tf.sqrt(radius_sq * dual_norm_sq)  # F(w*)
  gap = tf.where(radius_sq > 0, tf.abs(dual_value - tf.reduce_min(improvements)), tf.zeros_like(radius_sq))
  weights = weights / divisor
  if scale == "sum":
    weights *= num_tasks
  diagnostics = {
    "solver_iterations": tf.cast(start.iterations + path.iterations, tf.float64),
    "solver_residual": gap,
  }
  return weights, diagnostics


@BALANCERS.register("cagrad", params=PARAMS)
class CAGrad(gramian_lib.GramianBalancer):
  """Liu et al. 2021: the best worst-task improvement within c·‖g0‖ of the mean gradient g0."""

  diagnostic_names = ("solver_iterations", "solver_residual")

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.c = float(params["cagrad_c"])
    self.rescale = int(params["cagrad_rescale"])
    self.scale = params["cagrad_scale"]
    # One task: d = (1 + c)·g / divisor, the weight of `fixed` only when that is 1.
    self.relative_only = abs((1.0 + self.c) / rescale_divisor(self.c, self.rescale) - 1.0) < 1e-12

  def weigh(self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor, seed: tf.Tensor) -> gramian_lib.Weighting:
    del losses, step, seed
    weights, diagnostics = cagrad_weights(gramian, c=self.c, rescale=self.rescale, scale=self.scale)
    return gramian_lib.Weighting(weights, diagnostics)

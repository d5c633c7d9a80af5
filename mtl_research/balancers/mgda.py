"""MGDA: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.

The shared parameters follow the minimum-norm point of the convex hull of the
task gradients (§3.1, Eq. 3; Désidéri's multiple gradient descent):

  w* = argmin_{w ∈ Δ} ‖Σ_t w_t g_t‖² = argmin_{w ∈ Δ} wᵀGw,   Δ = {w ≥ 0, Σ_t w_t = 1}
  d  = Σ_t w*_t g_t

Either d = 0 (a Pareto-stationary point) or d is a common descent direction:
⟨g_t, d⟩ ≥ ‖d‖² > 0 for every task (the KKT conditions: (Gw*)_t ≥ w*ᵀGw* with
equality where w*_t > 0). The heads follow their own losses unweighted
(Algorithm 2). The paper solves the problem with Frank-Wolfe (Algorithm 2) and
the closed form for T = 2 (Algorithm 1); here it is solved exactly by Wolfe's
active-set algorithm (mtl_research/balancers/simplex.py), which agrees with the
closed form for T = 2. MGDA-UB (§3.3), the paper's upper bound computed from
the gradients with respect to the shared representation Z (one backward pass
through the trunk), is `--gradient_scope=representation` (gramian.py).

Defaults follow the paper; public code differs in three places, each behind a flag:

  --mgda_normalization=none|l2|loss|loss+  The authors' code
      (intel-isl/MultiObjectiveOptimization, multi_task/min_norm_solvers.py)
      optionally divides each g_t by n_t before solving: l2: ‖g_t‖; loss: L_t;
      loss+: L_t·‖g_t‖ (G' = DGD, D = diag(1/n_t)). The paper has no
      normalization (the code's comment: "optional and not included in the
      paper"); the code has no default (a required field of its params file;
      its sample.json uses loss+); LibMTL's default is none. Default: none.
  --mgda_update=normalized|raw  With a normalization, `normalized` (default)
      follows the min-norm point of the normalized gradients, Σ_t w'_t g_t/n_t,
      i.e. weights w'_t/n_t, still a common descent direction (as LibMTL does
      for parameter gradients); `raw` applies w'_t to the raw gradients, as the
      authors' train_multi_task.py does (scale[t]·loss_t), which the paper's
      experiments therefore used.
  --mgda_scale=mean|sum  Σ_t w_t = 1 (paper, authors' code, LibMTL: the step is
      about T× smaller than that of Σ_t L_t) or × T (the CAGrad authors'
      MGDA baseline, Cranial-XIX/CAGrad, which multiplies the update by T "to
      match the sum loss").

A task whose normalizer n_t is 0 (a zero gradient, or a zero loss) keeps
n_t = 1: its row of G is then zero anyway, and the min-norm point is 0.
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
from mtl_research.params import ENUM, Param

NORMALIZATIONS = ("none", "l2", "loss", "loss+")
UPDATES = ("normalized", "raw")
SCALES = ("mean", "sum")

PARAMS = (
  gramian_lib.SCOPE_PARAM,
  Param(
    "mgda_normalization",
    ENUM,
    "none",
    "Divide each task gradient by n_t before the min-norm solve: none (paper), l2 (‖g_t‖), loss (L_t) or "
    "loss+ (L_t·‖g_t‖), the options of the authors' code.",
    choices=NORMALIZATIONS,
  ),
  Param(
    "mgda_update",
    ENUM,
    "normalized",
    "With a normalization, follow the min-norm point of the normalized gradients (normalized: weights w'_t/n_t) "
    "or apply the solved weights w'_t to the raw gradients (raw: the authors' code).",
    choices=UPDATES,
  ),
  Param(
    "mgda_scale",
    ENUM,
    "mean",
    "Weights summing to 1 (mean: paper, authors' code, LibMTL) or to T (sum: the CAGrad authors' MGDA baseline).",
    choices=SCALES,
  ),
)


def _normalizers(gramian: tf.Tensor, losses: tf.Tensor, normalization: str) -> tf.Tensor:
  """n_t of --mgda_normalization, float64; 1 where it is 0 or not finite (module docstring)."""
  norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gramian), 0.0))
  losses = tf.cast(losses, tf.float64)
  if normalization == "none":
    return tf.ones_like(norms)
  n = {"l2": norms, "loss": losses, "loss+": losses * norms}[normalization]
  return tf.where(tf.logical_and(n > 0, tf.math.is_finite(n)), n, tf.ones_like(n))


def mgda_weights(
  gramian: tf.Tensor,
  losses: tf.Tensor | None = None,
  *,
  normalization: str = "none",
  update: str = "normalized",
  scale: str = "mean",
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """MGDA's weights from the float64 Gramian [T, T] (and the losses [T], read only by the loss normalizations).

  Returns (weights [T] float64, {"solver_iterations", "solver_residual"}):
  the residual is the Frank-Wolfe gap of the solved (normalized) problem,
  relative to its largest squared gradient norm (simplex.min_norm_gap), 0 at
  the exact optimum. All gradients zero: equal weights (any w is optimal).
  """
  if normalization not in NORMALIZATIONS or update not in UPDATES or scale not in SCALES:
    raise ValueError(f"unknown MGDA option: {normalization!r}, {update!r}, {scale!r}")
  gramian = tf.convert_to_tensor(gramian, tf.float64)
  num_tasks = simplex.num_tasks_of(gramian)
  if losses is None:
    if normalization in ("loss", "loss+"):
      raise ValueError(f"--mgda_normalization={normalization} needs the losses")
    losses = tf.ones([num_tasks], tf.float64)
  n = _normalizers(gramian, losses, normalization)
  normalized, largest = simplex.unit_scale(gramian / (n[:, None] * n[None, :]))
  point = simplex.min_norm_point(normalized)
  solved = tf.where(largest > 0, point.weights, tf.fill([num_tasks], tf.constant(1.0 / num_tasks, tf.float64)))
  weights = solved / n if update == "normalized" else solved
  if scale == "sum":
    weights *= num_tasks
  diagnostics = {
    "solver_iterations": tf.cast(point.iterations, tf.float64),
    "solver_residual": simplex.min_norm_gap(normalized, solved),
  }
  return weights, diagnostics


@BALANCERS.register("mgda", params=PARAMS)
class MGDA(gramian_lib.GramianBalancer):
  """Sener & Koltun 2018: the min-norm point of the task gradients' convex hull (MGDA-UB: representation scope)."""

  diagnostic_names = ("solver_iterations", "solver_residual")

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.normalization = params["mgda_normalization"]
    self.update_rule = params["mgda_update"]
    self.scale = params["mgda_scale"]
    # With one task w' = 1; the weight is 1 (as `fixed`) unless it is divided by the task's normalizer.
    self.relative_only = self.normalization == "none" or self.update_rule == "raw"

  def weigh(self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor, seed: tf.Tensor) -> gramian_lib.Weighting:
    del step, seed
    weights, diagnostics = mgda_weights(
      gramian, losses, normalization=self.normalization, update=self.update_rule, scale=self.scale
    )
    return gramian_lib.Weighting(weights, diagnostics)

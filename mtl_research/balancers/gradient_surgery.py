"""PCGrad: Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task Learning", NeurIPS 2020,
Algorithm 1.

For each task i, g_i^PC starts as g_i; for every other task j, in a random order,
if g_i^PC conflicts with the ORIGINAL g_j (⟨g_i^PC, g_j⟩ < 0) it is projected onto
g_j's normal plane:

  g_i^PC ← g_i^PC − ⟨g_i^PC, g_j⟩/‖g_j‖²·g_j,

and the shared parameters follow Σ_i g_i^PC (the paper's sum; `--pcgrad_reduction=mean`
divides by T). Each task draws its own order, as in Algorithm 1 and the authors'
code (tianheyu927/PCGrad, which shuffles the task list for every g_i; it and
LibMTL also visit j = i, which projects only if surgery has turned g_i^PC
against g_i itself; the paper's j ≠ i is followed here).

Every g_i^PC stays a combination Jᵀc_i of the original gradients and every inner
product is a Gramian entry (⟨Jᵀc, g_j⟩ = (Gc)_j), so PCGrad is a Gramian method:
its weights w = Σ_i c_i are exactly the coefficients of the final direction in
the basis of the task gradients (TensorBoard `weight/<task>`), and both
`--gradient_scope` values work. The orders come from the step's stateless seed
(portable_random: the same under XLA, in a graph, on every replica, on resume).

Degenerate input: a zero g_j is never projected on (⟨·, 0⟩ = 0); two identical
gradients never conflict; T = 1 gives w = 1. Diagnostics: `gramian/pcgrad_projections`
(how many projections this step applied) and `gramian/pcgrad_conflicts` (how many
task pairs conflict before surgery).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import portable_random
from mtl_research.balancers.base import Schedule
from mtl_research.balancers.gramian import SCOPE_PARAM, GramianBalancer, Weighting
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import ENUM, Param

REDUCTIONS = ("sum", "mean")

PARAMS = (
  SCOPE_PARAM,
  Param(
    "pcgrad_reduction",
    ENUM,
    "sum",
    "PCGrad: sum the projected task gradients (the paper, the authors' code) or average them (T× smaller).",
    choices=REDUCTIONS,
  ),
)


def draw_orders(seed: tf.Tensor, num_tasks: int) -> tf.Tensor:
  """[T, T] int32: row i is task i's random order of the tasks (the entry i itself is skipped)."""
  keys = portable_random.uniform(seed, [num_tasks, num_tasks])
  return tf.argsort(keys, axis=1, stable=True)


def pcgrad_weights(gramian: tf.Tensor, orders: tf.Tensor, reduction: str = "sum") -> tuple[tf.Tensor, dict]:
  """PCGrad's float64 weights [T] from the Gramian [T, T] and the orders [T, T] (module docstring)."""
  gramian = tf.convert_to_tensor(gramian, tf.float64)
  num_tasks = int(gramian.shape[0])
  squares = tf.linalg.diag_part(gramian)
  rows = []
  projections = tf.constant(0.0, tf.float64)
  for i in range(num_tasks):
    c = tf.one_hot(i, num_tasks, dtype=tf.float64)
    for m in range(num_tasks):
      j = orders[i, m]
      product = tf.gather(tf.linalg.matvec(gramian, c), j)  # ⟨g_i^PC, g_j⟩
      applies = tf.logical_and(tf.not_equal(j, i), product < 0.0)
      step = tf.where(applies, tf.math.divide_no_nan(product, tf.gather(squares, j)), 0.0)
      c -= step * tf.one_hot(j, num_tasks, dtype=tf.float64)
      projections += tf.cast(applies, tf.float64)
    rows.append(c)
  weights = tf.add_n(rows)
  if reduction == "mean":
    weights /= num_tasks
  off_diagonal = 1.0 - tf.eye(num_tasks, dtype=tf.float64)
  conflicts = tf.reduce_sum(tf.cast(gramian < 0, tf.float64) * off_diagonal) / 2.0
  return weights, {"pcgrad_projections": projections, "pcgrad_conflicts": conflicts}


@BALANCERS.register("pcgrad", params=PARAMS)
class PCGrad(GramianBalancer):
  """Yu et al. 2020: each task's gradient projected off the gradients it conflicts with, in a random order."""

  diagnostic_names = ("pcgrad_projections", "pcgrad_conflicts")

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.reduction = params["pcgrad_reduction"]
    # One task: w = 1 (sum) — `fixed`'s weight; with the mean too, since T = 1.
    self.relative_only = True

  def weigh(self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor, seed: tf.Tensor) -> Weighting:
    del losses, step  # PCGrad reads the gradients and the step's draw only
    orders = draw_orders(seed, self.num_tasks)
    weights, diagnostics = pcgrad_weights(gramian, orders, self.reduction)
    return Weighting(weights, diagnostics)

"""GradVac: Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving Multi-task Optimization
in Massively Multilingual Models", ICLR 2021, Algorithm 1 and Eq. 2.

PCGrad (gradient_surgery.py) acts only on negative cosines and pushes them to 0.
GradVac sets an adaptive target instead: an exponential moving average φ̂_ij of
the cosine between tasks i and j, and whenever the current cosine φ_ij of g_i
(as modified so far) with the original g_j falls below φ̂_ij, it adds the
component of g_j that brings the cosine exactly to φ̂_ij (Eq. 2):

  g_i ← g_i + ‖g_i‖·(φ̂_ij·√(1 − φ_ij²) − φ_ij·√(1 − φ̂_ij²)) / (‖g_j‖·√(1 − φ̂_ij²)) · g_j,
  φ̂_ij ← (1 − β)·φ̂_ij + β·φ_ij          (with the cosine φ_ij measured before the change),

visiting the other tasks j in a random order per task i (as LibMTL's GradVac; the
order comes from the step's stateless seed), and the shared parameters follow
Σ_i g_i. φ̂ starts at 0 (LibMTL), so at first GradVac acts like PCGrad. Default
β = 0.5 (LibMTL's `--GradVac_beta`; the paper treats β as a hyperparameter).
`--gradvac_granularity`: `whole` (one φ̂ matrix over all shared parameters, as
LibMTL's default) or `per_variable` (one φ̂ per shared variable, each with its
own cosines: the paper's per-layer-group GradVac at the finest grouping).

As in PCGrad, every modified g_i is a combination Jᵀc_i of the original gradients
and every cosine comes from the Gramian, so the effective weights w = Σ_i c_i
are the coefficients of the final direction in the task gradients (`weight/<task>`);
with `per_variable` each variable has its own weights and `weight/<task>` reports
their mean over the variables. φ̂ is checkpointed; `aggregate` computes the step
and `update` commits φ̂ (only for an applied step). Parameters scope only: the
representation's rows change from batch to batch, so an average of their cosines
has no meaning. Degenerate input: a zero gradient has cosine 0 and receives or
gives nothing; φ̂ = ±1 exactly leaves a pair alone (the formula divides by
√(1 − φ̂²)); T = 1 gives w = 1. Diagnostics: `gradvac/adjustments` (how many
(i, j) adjustments this step made) and `gradvac/target_cosine` (the mean φ̂).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import gradient_surgery
from mtl_research.balancers.base import Balancer, GradientScope, Schedule, StepStats, state_variable
from mtl_research.balancers.gramian import gramian_of
from mtl_research.balancers.registry import BALANCERS
from mtl_research.errors import UserError
from mtl_research.params import ENUM, FLOAT, Param

TAG_PREFIX = "gradvac"
GRANULARITIES = ("whole", "per_variable")

PARAMS = (
  Param(
    "gradvac_beta",
    FLOAT,
    0.5,
    "GradVac: rate β of the moving average of the tasks' cosines, in [0, 1] (0.5: LibMTL's default).",
    lower=0.0,
  ),
  Param(
    "gradvac_granularity",
    ENUM,
    "whole",
    "GradVac: one cosine target over all shared parameters (whole) or one per shared variable (per_variable).",
    choices=GRANULARITIES,
  ),
)


def vaccinate(
  gramian: tf.Tensor, targets: tf.Tensor, orders: tf.Tensor, beta: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """One group's GradVac from its float64 Gramian [T, T] and targets φ̂ [T, T] (module docstring).

  Returns (the weights w [T], the new targets [T, T], the number of adjustments).
  """
  num_tasks = int(gramian.shape[0])
  norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gramian), 0.0))
  new_targets = targets
  rows, adjustments = [], tf.constant(0.0, tf.float64)
  for i in range(num_tasks):
    c = tf.one_hot(i, num_tasks, dtype=tf.float64)
    for m in range(num_tasks):
      j = orders[i, m]
      # j enters as a one-hot vector, not as an index: XLA:CPU ran dynamic slices of the targets by a
      # drawn index about 100x slower than these few multiplications.
      pick = tf.one_hot(j, num_tasks, dtype=tf.float64)
      products = tf.linalg.matvec(gramian, c)
      length = tf.sqrt(tf.maximum(tf.tensordot(c, products, 1), 0.0))  # ‖g_i‖, as modified so far
      norm_j = tf.tensordot(norms, pick, 1)
      cosine = tf.math.divide_no_nan(tf.tensordot(products, pick, 1), length * norm_j)
      target = tf.tensordot(new_targets[i], pick, 1)
      room = tf.sqrt(tf.maximum(1.0 - target * target, 0.0))
      coefficient = tf.math.divide_no_nan(
        length * (target * tf.sqrt(tf.maximum(1.0 - cosine * cosine, 0.0)) - cosine * room), norm_j * room
      )
      other = tf.not_equal(j, i)
      applies = tf.logical_and(other, cosine < target)
      c += tf.where(applies, coefficient, 0.0) * pick
      adjustments += tf.cast(tf.logical_and(applies, coefficient != 0.0), tf.float64)
      moved = (1.0 - beta) * target + beta * cosine
      update = tf.cast(other, tf.float64) * (moved - target)
      new_targets += (
        update
        * tf.one_hot(i, num_tasks, dtype=tf.float64)[:, None]
        * tf.one_hot(j, num_tasks, dtype=tf.float64)[None, :]
      )
    rows.append(c)
  return tf.add_n(rows), new_targets, adjustments


@BALANCERS.register("gradvac", params=PARAMS)
class GradVac(Balancer):
  """Wang et al. 2021: raise each pair's gradient cosine to its moving average, in a random order per task."""

  gradient_scope = GradientScope.SHARED
  aggregates = True
  relative_only = True  # one task: w = 1

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.beta = float(params["gradvac_beta"])
    if self.beta > 1.0:
      raise UserError(f"--gradvac_beta must be in [0, 1] (a moving average's rate), not {self.beta:g}.")
    self.granularity = params["gradvac_granularity"]
    self.targets: tf.Variable | None = None
    self._used = state_variable(tf.ones([self.num_tasks]), name="used_weights")
    self._adjustments = state_variable(tf.constant(0.0), name="adjustments")

  def build(self, scope_variables: Sequence[tf.Variable]) -> None:
    groups = len(scope_variables) if self.granularity == "per_variable" else 1
    self.targets = state_variable(tf.zeros([groups, self.num_tasks, self.num_tasks], tf.float64), name="targets")

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(losses)  # the heads follow their own losses

  def _groups(self, count: int) -> list[list[int]]:
    return [[i] for i in range(count)] if self.granularity == "per_variable" else [list(range(count))]

  def _step(self, stats: StepStats):
    assert stats.task_grads is not None and stats.seed is not None and self.targets is not None
    orders = gradient_surgery.draw_orders(stats.seed, self.num_tasks)
    count = len(stats.task_grads[0])
    targets = self.targets.read_value()
    results = []
    for g, group in enumerate(self._groups(count)):
      gram = gramian_of([[task[i] for i in group] for task in stats.task_grads])
      results.append((group, *vaccinate(gram, targets[g], orders, self.beta)))
    return results, count

  def aggregate(self, stats: StepStats) -> list[tf.Tensor]:
    results, count = self._step(stats)  # the targets are committed in `update`
    assert stats.task_grads is not None
    combined: list[tf.Tensor | None] = [None] * count
    for group, weights, _, _ in results:
      for i in group:
        grads = [tf.convert_to_tensor(task[i]) for task in stats.task_grads]
        w = tf.cast(weights, grads[0].dtype)
        combined[i] = tf.add_n([w[t] * grads[t] for t in range(self.num_tasks)])
    self._used.assign(tf.cast(tf.reduce_mean(tf.stack([r[1] for r in results]), axis=0), tf.float32))
    self._adjustments.assign(tf.cast(tf.add_n([r[3] for r in results]), tf.float32))
    return combined  # type: ignore[return-value]

  def update(self, stats: StepStats) -> dict[str, tf.Tensor]:
    assert self.targets is not None
    results, _ = self._step(stats)  # recomputed: only an applied step commits the targets
    self.targets.assign(tf.stack([r[2] for r in results]))
    return {}

  def summaries(self) -> dict[str, tf.Tensor]:
    assert self.targets is not None
    off_diagonal = 1.0 - tf.eye(self.num_tasks, dtype=tf.float64)
    pairs = tf.cast(tf.shape(self.targets)[0], tf.float64) * max(self.num_tasks * (self.num_tasks - 1), 1)
    mean = tf.reduce_sum(self.targets * off_diagonal) / pairs
    return {
      f"{TAG_PREFIX}/adjustments": self._adjustments.read_value(),
      f"{TAG_PREFIX}/target_cosine": tf.cast(mean, tf.float32),
    }

  def weights(self) -> tf.Tensor:
    return self._used.read_value()

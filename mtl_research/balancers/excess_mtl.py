"""ExcessMTL: He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi & Zhao, "Robust Multi-Task Learning with Excess
Risks", ICML 2024 (the authors' code: yifei-he/ExcessMTL, `weighting/ExcessMTL.py`, ported to LibMTL).

Tasks are weighted by their excess risk (loss above the task's irreducible
loss) rather than by their loss, so that a task with label noise (a large but
irreducible loss) is not up-weighted. The excess risk of task t is estimated
from a second-order expansion with a diagonal AdaGrad preconditioner built from
the task's own squared gradients of the shared parameters:

  H_t ← H_t + g_t²   (elementwise; H_t = 0 before the first step)
  e_t = g_tᵀ·diag(√(H_t + ε))⁻¹·g_t                          (the excess-risk estimate)
  at the first step e_t⁰ = e_t is kept, and afterwards (exponentiated gradient):
  w_t ← w_t·exp(η·e_t / e_t⁰),   w ← T·w / Σ_s w_s,   w = 1 before the first update.

The shared parameters follow Σ_t w_t·g_t with the weights of this step (updated
from this step's gradients, as the authors' code does before its backward pass).
The heads follow Σ_t w_t·L_t with the weights of the previous step: the step
computes the heads' objective before the per-task gradients exist; the two
differ by a factor exp(η·e_t/e_t⁰), about 1 ± 1% at the default η. Defaults and
constants are the authors' code: η = 0.01 (`robust_step_size`), ε = 1e-7, the
first step's estimates as the normalizer, weights summing to T.

Degenerate input: a task whose first-step gradient is zero has no normalizer
(e⁰ = 0); its ratio counts as 0, so it is never up-weighted. T = 1: w = 1 always
(`relative_only`). Under tf.distribute the per-task gradients are global, so
every replica computes the same state; H, w and e⁰ are checkpointed.
Diagnostics: `excess_mtl/excess_risk/<task>` (e_t/e_t⁰ of the last step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Balancer, GradientScope, Schedule, StepStats, state_variable
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import FLOAT, Param

EPSILON = 1e-7  # inside √(H + ε), as the authors' code
TAG_PREFIX = "excess_mtl"

PARAMS = (
  Param(
    "excess_mtl_step_size",
    FLOAT,
    0.01,
    "ExcessMTL: step size η of the weights' exponentiated-gradient update (0.01: the authors' robust_step_size).",
    lower=0.0,
  ),
)


def excess_mtl_step(
  accumulators: Sequence[tf.Tensor],
  weights: tf.Tensor,
  initial: tf.Tensor,
  task_grads: Sequence[Sequence[tf.Tensor]],
  step: tf.Tensor,
  step_size: float,
) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor, tf.Tensor, list[tf.Tensor]]:
  """One ExcessMTL step: (new H per variable, new w [T], e⁰ [T], e/e⁰ [T], Σ_t w_t·g_t per variable)."""
  num_tasks = len(task_grads)
  grads = [
    tf.stack([tf.convert_to_tensor(task_grads[t][i]) for t in range(num_tasks)]) for i in range(len(accumulators))
  ]
  new = [h + g * g for h, g in zip(accumulators, grads)]
  excess = tf.add_n(
    [tf.reduce_sum(tf.reshape(g * g / tf.sqrt(h + EPSILON), [num_tasks, -1]), axis=1) for g, h in zip(grads, new)]
  )
  first = tf.equal(step, 0)
  initial = tf.where(first, excess, initial)
  ratio = tf.math.divide_no_nan(excess, initial)
  moved = weights * tf.exp(step_size * ratio)
  moved = num_tasks * moved / tf.reduce_sum(moved)
  weights = tf.where(first, weights, moved)  # the first step only records its estimates
  combined = [tf.tensordot(weights, g, 1) for g in grads]
  return new, weights, initial, ratio, combined


@BALANCERS.register("excess_mtl", params=PARAMS)
class ExcessMTL(Balancer):
  """He et al. 2024: weights that grow with each task's estimated excess risk (AdaGrad-preconditioned)."""

  gradient_scope = GradientScope.SHARED
  aggregates = True
  relative_only = True  # one task: w = T·w/Σw = 1

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.step_size = float(params["excess_mtl_step_size"])
    self.accumulators: list[tf.Variable] = []
    self.w = state_variable(tf.ones([self.num_tasks]), name="w")
    self.initial = state_variable(tf.zeros([self.num_tasks]), name="initial_excess")
    self._used = state_variable(tf.ones([self.num_tasks]), name="used_w")
    self._ratio = state_variable(tf.zeros([self.num_tasks]), name="excess_ratio")

  def build(self, scope_variables: Sequence[tf.Variable]) -> None:
    self.accumulators = [
      state_variable(tf.zeros([self.num_tasks, *v.shape], v.dtype), name=f"accumulator_{i}")
      for i, v in enumerate(scope_variables)
    ]

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.stop_gradient(self.w) * losses)  # the heads: the previous step's weights

  def _step(self, stats: StepStats):
    assert stats.task_grads is not None
    accumulators = [h.read_value() for h in self.accumulators]
    return excess_mtl_step(
      accumulators, self.w.read_value(), self.initial.read_value(), stats.task_grads, stats.step, self.step_size
    )

  def aggregate(self, stats: StepStats) -> list[tf.Tensor]:
    _, weights, _, ratio, combined = self._step(stats)  # state is committed in `update`
    self._used.assign(weights)
    self._ratio.assign(ratio)
    return combined

  def update(self, stats: StepStats) -> dict[str, tf.Tensor]:
    new, weights, initial, _, _ = self._step(stats)  # recomputed: only an applied step commits its state
    for variable, value in zip(self.accumulators, new):
      variable.assign(value)
    self.w.assign(weights)
    self.initial.assign(initial)
    return {}

  def summaries(self) -> dict[str, tf.Tensor]:
    return {f"{TAG_PREFIX}/excess_risk": self._ratio.read_value()}

  def weights(self) -> tf.Tensor:
    return self._used.read_value()

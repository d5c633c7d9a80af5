"""DB-MTL: Lin, Jiang, Ye, Zhang, Chen, Chen, Liu & Kwok, "Dual-Balancing for Multi-Task Learning",
arXiv:2308.12029 (2023), Algorithm 1.

Two balances, one for the loss scales and one for the gradient magnitudes:

  1. loss-scale balancing: every task's loss is replaced by log L_t (scale-invariant:
     L_t → c·L_t changes nothing), so the heads follow Σ_t log(L_t + ε);
  2. gradient-magnitude balancing: with g_t = ∇_θ log(L_t + ε) = ∇_θ L_t / (L_t + ε) over
     the shared parameters θ and k = 1, 2, ... the step count, an exponential moving
     average
       ĝ_t ← β_k·ĝ_t + (1 − β_k)·g_t,   β_k = β / k^σ,   ĝ_t = 0 before the first step,
     and the shared parameters follow
       Σ_t α_t·ĝ_t,   α_t = max_s ‖ĝ_s‖ / (‖ĝ_t‖ + ε'),
     every task's averaged gradient scaled to the largest norm.

Defaults are the authors' code (the LibMTL implementation, `DB_MTL.py`, which the
authors maintain, and its `--DB_beta` 0.9, `--DB_beta_sigma` 0; the paper writes the
EMA with a constant β): β = 0.9, σ = 0, ε = 1e-8 inside the log, ε' = 1e-8 in α. The
norms are taken over all shared parameters together. DB-MTL works on the
parameters only (LibMTL refuses representation gradients): the EMA follows
parameters, which the rows of a representation are not.

Degenerate input: a task with a zero gradient keeps its EMA decaying and, once
‖ĝ_t‖ = 0, contributes nothing (α_t·0); T = 1 is the EMA of ∇ log L alone, not the
plain gradient (so the method is not `relative_only`).

Weights: the update combines the averaged gradients ĝ_t, not this step's; the
reported weight of task t is α_t, the coefficient of ĝ_t (TensorBoard `weight/<task>`),
and `db_mtl/ema_norm/<task>` is ‖ĝ_t‖ before the scaling. Under tf.distribute the
per-task gradients and losses the step hands over are global, so every replica
computes the same EMA. The EMA is checkpointed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Balancer, GradientScope, Schedule, StepStats, state_variable
from mtl_research.balancers.loss_function import LOG_EPSILON, log_losses  # ε = 1e-8, as the authors' code
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import FLOAT, Param

NORM_EPSILON = 1e-8  # in α_t = max‖ĝ‖ / (‖ĝ_t‖ + ε), as the authors' code
TAG_PREFIX = "db_mtl"

PARAMS = (
  Param(
    "db_mtl_beta",
    FLOAT,
    0.9,
    "DB-MTL: β of the moving average of the tasks' gradients of log L_t, in [0, 1) (0.9: the authors' code).",
    lower=0.0,
    below=1.0,
  ),
  Param(
    "db_mtl_beta_sigma",
    FLOAT,
    0.0,
    "DB-MTL: the average's rate decays as β/k^σ with the step k (0: a constant β, the paper and the authors' default).",
    lower=0.0,
  ),
)


def db_mtl_step(
  averages: Sequence[tf.Tensor],
  task_grads: Sequence[Sequence[tf.Tensor]],
  losses: tf.Tensor,
  step: tf.Tensor,
  beta: float,
  sigma: float,
) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor, list[tf.Tensor]]:
  """One DB-MTL step (module docstring).

  `averages`: ĝ per shared variable, [T, *shape]; `task_grads`: per task, the
  gradients of L_t per variable; `losses` [T]; `step` the count of steps before
  this one. Returns (the new averages, α [T], ‖ĝ_t‖ [T], Σ_t α_t·ĝ_t per variable).
  """
  num_tasks = len(task_grads)
  k = tf.cast(step, tf.float32) + 1.0
  rate = beta / tf.pow(k, sigma)  # β_k
  scale = 1.0 / (tf.cast(losses, tf.float32) + LOG_EPSILON)  # ∇ log(L + ε) = ∇L / (L + ε)
  new = []
  for i, average in enumerate(averages):
    grads = tf.stack([tf.convert_to_tensor(task_grads[t][i]) for t in range(num_tasks)])
    grads *= tf.reshape(scale, [num_tasks] + [1] * (grads.shape.rank - 1))
    new.append(rate * average + (1.0 - rate) * grads)
  squares = tf.add_n([tf.reduce_sum(tf.reshape(a, [num_tasks, -1]) ** 2, axis=1) for a in new])
  norms = tf.sqrt(squares)
  alpha = tf.reduce_max(norms) / (norms + NORM_EPSILON)
  combined = [tf.tensordot(alpha, average, 1) for average in new]
  return new, alpha, norms, combined


@BALANCERS.register("db_mtl", params=PARAMS)
class DBMTL(Balancer):
  """Lin et al. 2023: log losses, and a moving average of their gradients scaled to one norm."""

  gradient_scope = GradientScope.SHARED
  aggregates = True

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.beta = float(params["db_mtl_beta"])
    self.sigma = float(params["db_mtl_beta_sigma"])
    self.averages: list[tf.Variable] = []
    self._alpha = state_variable(tf.ones([self.num_tasks]), name="alpha")
    self._norms = state_variable(tf.zeros([self.num_tasks]), name="ema_norm")

  def build(self, scope_variables: Sequence[tf.Variable]) -> None:
    self.averages = [
      state_variable(tf.zeros([self.num_tasks, *v.shape], v.dtype), name=f"ema_{i}")
      for i, v in enumerate(scope_variables)
    ]

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(log_losses(losses))  # the heads follow the log losses

  def _step(self, stats: StepStats):
    assert stats.task_grads is not None
    averages = [a.read_value() for a in self.averages]
    return db_mtl_step(averages, stats.task_grads, stats.losses, stats.step, self.beta, self.sigma)

  def aggregate(self, stats: StepStats) -> list[tf.Tensor]:
    _, alpha, norms, combined = self._step(stats)  # the averages are committed in `update`
    self._alpha.assign(alpha)
    self._norms.assign(norms)
    return combined

  def update(self, stats: StepStats) -> dict[str, tf.Tensor]:
    new, _, _, _ = self._step(stats)  # the same values `aggregate` used: only an applied step commits them
    for variable, value in zip(self.averages, new):
      variable.assign(value)
    return {}

  def summaries(self) -> dict[str, tf.Tensor]:
    return {f"{TAG_PREFIX}/ema_norm": self._norms.read_value()}

  def weights(self) -> tf.Tensor:
    return self._alpha.read_value()

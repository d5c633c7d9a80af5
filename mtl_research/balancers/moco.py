"""MoCo: Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in Multi-objective
Learning: A Provably Convergent Approach", ICLR 2023, Algorithm 1.

MGDA's weights computed from stochastic gradients are biased; MoCo tracks each
task's gradient with a moving estimate y_t and moves the weights λ by projected
gradient steps on the min-norm problem instead of solving it. At step k = 1, 2, ...
with the per-task gradients g_t of the shared parameters:

  y_t ← y_t − β_k·(y_t − g_t)                                   (tracking)
  λ   ← Π_Δ(λ − γ_k·(YᵀY + ρI)·λ)                               (weights)
  the shared parameters follow Y·λ = Σ_t λ_t·y_t,

Y = [y_1 … y_T], Π_Δ the Euclidean projection onto the simplex, β_k = β/k^{σ_β},
γ_k = γ/k^{σ_γ}, y_t = 0 and λ = 1/T before the first step. The heads follow Σ_t L_t.

Defaults: β 0.5, σ_β 0.5, γ 0.1, σ_γ 0.5, ρ 0, from the authors' shared code as
LibMTL's `MoCo` (`--MoCo_beta` ...) carries it; the paper's Algorithm 1 has the
same form. Two differences of that code, behind flags:

  --moco_lambda_update=projection|softmax  λ ← softmax(λ − γ_k(YᵀY + ρI)λ) in the
      code instead of the paper's projection (default: projection, the paper).
  --moco_normalize=false|true  the code tracks g_t/‖g_t‖·L_t (each gradient rescaled
      to its task's loss) instead of g_t (default: false, the paper).

The paper's projection of y_t onto a bounded set (its assumption for the analysis)
is not applied, as in the code. Π_Δ is the exact sort-based projection.

Weights: the update combines the tracked gradients y_t, not this step's; the
reported weight of task t is λ_t (TensorBoard `weight/<task>`); `moco/tracked_norm`
is ‖y_t‖. Y, λ and nothing else are state, checkpointed; under tf.distribute the
per-task gradients are global, so every replica tracks alike. Degenerate input: a
zero gradient's y_t decays to 0 and λ moves toward it (it minimizes ‖Yλ‖), as MGDA
would; T = 1 gives λ = 1 and the tracked gradient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Balancer, GradientScope, Schedule, StepStats, state_variable
from mtl_research.balancers.registry import BALANCERS
from mtl_research.errors import UserError
from mtl_research.params import BOOL, ENUM, FLOAT, Param

TAG_PREFIX = "moco"
LAMBDA_UPDATES = ("projection", "softmax")
NORM_EPSILON = 1e-8  # in g/(‖g‖ + ε)·L of --moco_normalize, as the authors' code

PARAMS = (
  Param(
    "moco_beta", FLOAT, 0.5, "MoCo: step size β of the tracked gradients, in (0, 1] (authors' code: 0.5).", lower=0.0
  ),
  Param("moco_beta_sigma", FLOAT, 0.5, "MoCo: β_k = β/k^σ (authors' code: 0.5).", lower=0.0),
  Param("moco_gamma", FLOAT, 0.1, "MoCo: step size γ of the weights λ (authors' code: 0.1).", lower=0.0),
  Param("moco_gamma_sigma", FLOAT, 0.5, "MoCo: γ_k = γ/k^σ (authors' code: 0.5).", lower=0.0),
  Param("moco_rho", FLOAT, 0.0, "MoCo: ℓ2 regularization ρ of the weights' update (authors' code: 0).", lower=0.0),
  Param(
    "moco_lambda_update",
    ENUM,
    "projection",
    "MoCo: the weights' step is projected onto the simplex (the paper) or passed through a softmax (the "
    "authors' code, LibMTL).",
    choices=LAMBDA_UPDATES,
  ),
  Param(
    "moco_normalize",
    BOOL,
    False,
    "MoCo: track g_t/‖g_t‖·L_t instead of g_t (the authors' code, LibMTL); off as in the paper.",
  ),
)


def project_to_simplex(v: tf.Tensor) -> tf.Tensor:
  """The Euclidean projection of v [T] onto {w ≥ 0, Σw = 1}: w = max(v − θ, 0) with θ from the sorted v."""
  num = int(v.shape[0])
  u = tf.sort(v, direction="DESCENDING")
  cumulative = tf.cumsum(u) - 1.0
  index = tf.range(1, num + 1, dtype=v.dtype)
  support = tf.cast(u - cumulative / index > 0, tf.int32)
  count = tf.reduce_sum(support)  # ≥ 1: the largest entry always qualifies
  theta = tf.gather(cumulative, count - 1) / tf.cast(count, v.dtype)
  return tf.maximum(v - theta, 0.0)


def moco_step(
  tracked: Sequence[tf.Tensor],
  weights: tf.Tensor,
  task_grads: Sequence[Sequence[tf.Tensor]],
  losses: tf.Tensor,
  step: tf.Tensor,
  *,
  beta: float,
  beta_sigma: float,
  gamma: float,
  gamma_sigma: float,
  rho: float,
  lambda_update: str = "projection",
  normalize: bool = False,
) -> tuple[list[tf.Tensor], tf.Tensor, list[tf.Tensor]]:
  """One MoCo step (module docstring): (the new Y per variable [T, *shape], the new λ [T], Y·λ per variable)."""
  num_tasks = len(task_grads)
  k = tf.cast(step, tf.float64) + 1.0
  beta_k = tf.cast(beta / tf.pow(k, beta_sigma), tf.float32)
  gamma_k = gamma / tf.pow(k, gamma_sigma)
  grads = [tf.stack([tf.convert_to_tensor(task_grads[t][i]) for t in range(num_tasks)]) for i in range(len(tracked))]
  if normalize:
    norms = tf.sqrt(tf.add_n([tf.reduce_sum(tf.reshape(g, [num_tasks, -1]) ** 2, axis=1) for g in grads]))
    factor = tf.cast(losses, tf.float32) / (norms + NORM_EPSILON)
    grads = [g * tf.reshape(factor, [num_tasks] + [1] * (g.shape.rank - 1)) for g in grads]
  new = [y - beta_k * (y - g) for y, g in zip(tracked, grads)]
  flat = [tf.cast(tf.reshape(y, [num_tasks, -1]), tf.float64) for y in new]
  gram = tf.add_n([tf.matmul(y, y, transpose_b=True) for y in flat])  # YᵀY [T, T]
  lam = tf.cast(weights, tf.float64)
  moved = lam - gamma_k * (tf.linalg.matvec(gram, lam) + rho * lam)
  lam = project_to_simplex(moved) if lambda_update == "projection" else tf.nn.softmax(moved)
  lam32 = tf.cast(lam, tf.float32)
  return new, lam32, [tf.tensordot(lam32, y, 1) for y in new]


@BALANCERS.register("moco", params=PARAMS)
class MoCo(Balancer):
  """Fernando et al. 2023: tracked per-task gradients and projected-gradient weights on MGDA's problem."""

  gradient_scope = GradientScope.SHARED
  aggregates = True

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.options = dict(
      beta=float(params["moco_beta"]),
      beta_sigma=float(params["moco_beta_sigma"]),
      gamma=float(params["moco_gamma"]),
      gamma_sigma=float(params["moco_gamma_sigma"]),
      rho=float(params["moco_rho"]),
      lambda_update=params["moco_lambda_update"],
      normalize=bool(params["moco_normalize"]),
    )
    if not 0.0 < self.options["beta"] <= 1.0:
      raise UserError(f"--moco_beta must be in (0, 1] (a step toward the new gradient), not {self.options['beta']:g}.")
    self.tracked: list[tf.Variable] = []
    self.lam = state_variable(tf.fill([self.num_tasks], 1.0 / self.num_tasks), name="lambda")
    self._used = state_variable(tf.fill([self.num_tasks], 1.0 / self.num_tasks), name="used_lambda")
    self._norms = state_variable(tf.zeros([self.num_tasks]), name="tracked_norm")

  def build(self, scope_variables: Sequence[tf.Variable]) -> None:
    self.tracked = [
      state_variable(tf.zeros([self.num_tasks, *v.shape], v.dtype), name=f"tracked_{i}")
      for i, v in enumerate(scope_variables)
    ]

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(losses)  # the heads follow their own losses

  def _step(self, stats: StepStats):
    assert stats.task_grads is not None
    tracked = [y.read_value() for y in self.tracked]
    return moco_step(tracked, self.lam.read_value(), stats.task_grads, stats.losses, stats.step, **self.options)

  def aggregate(self, stats: StepStats) -> list[tf.Tensor]:
    new, lam, combined = self._step(stats)  # Y and λ are committed in `update`
    self._used.assign(lam)
    squares = tf.add_n([tf.reduce_sum(tf.reshape(y, [self.num_tasks, -1]) ** 2, axis=1) for y in new])
    self._norms.assign(tf.sqrt(squares))
    return combined

  def update(self, stats: StepStats) -> dict[str, tf.Tensor]:
    new, lam, _ = self._step(stats)  # recomputed: only an applied step commits its state
    for variable, value in zip(self.tracked, new):
      variable.assign(value)
    self.lam.assign(lam)
    return {}

  def summaries(self) -> dict[str, tf.Tensor]:
    return {f"{TAG_PREFIX}/tracked_norm": self._norms.read_value()}

  def weights(self) -> tf.Tensor:
    return self._used.read_value()

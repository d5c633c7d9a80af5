"""Gramian weighting: the methods that choose task weights from the per-task gradients' inner products.

MGDA, CAGrad, IMTL-G, Nash-MTL, Aligned-MTL, UPGrad, DualProj and FairGrad all
need only G = J·Jᵀ ([T, T], J the per-task gradients stacked as rows) to choose
weights w [T]; the shared parameters then follow Σ_t w_t·g_t, computed per
variable (no concatenation of the shared variables into one vector).

A method is a subclass of `GramianBalancer` that implements `weigh(gramian,
losses, step, seed) -> Weighting`, normally a one-line call of a pure function of the
matrix (each method's file holds its function and its balancer), so that the
function is tested on plain matrices against a NumPy reference. `weigh`
receives the Gramian in float64 (the small solvers are not limited by float32's
7 digits) and returns float64 weights.

The scope (`--gradient_scope`):
  parameters       J holds the gradients of the shared variables (T backward passes);
  representation   J holds the gradients with respect to the shared representation Z
                   (the trunk's output, [batch, d]): MGDA-UB (Sener & Koltun, NeurIPS
                   2018, §3.3), one backward pass through the trunk: the step
                   back-propagates Σ_t w_t·∇_Z L_t from Z.
Either way the task-specific variables (each head) follow their own task's loss
unweighted (Sener & Koltun, Algorithm 2), so `objective` is Σ_t L_t.

The weights a method used at a step are what `weights()` reports for it (they
are set while the step runs, before the step reads them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Balancer, GradientScope, Schedule, StepStats, state_variable
from mtl_research.params import ENUM, Param

PARAMETERS, REPRESENTATION = "parameters", "representation"
# TensorBoard tags of the engine's and the methods' diagnostics: gramian/condition, gramian/<name>.
TAG_PREFIX = "gramian"

SCOPE_PARAM = Param(
  "gradient_scope",
  ENUM,
  PARAMETERS,
  "Gradients the weights are chosen from: of the shared parameters, or of the shared representation (the "
  "trunk's output; MGDA-UB's upper bound, one backward pass through the trunk).",
  choices=(PARAMETERS, REPRESENTATION),
)


@dataclasses.dataclass(frozen=True)
class Weighting:
  """What a method chose at one step: float64 weights [T] and named diagnostics (scalars or [T])."""

  weights: tf.Tensor
  diagnostics: Mapping[str, tf.Tensor] = dataclasses.field(default_factory=dict)


def gramian_of(task_grads: Sequence[Sequence[tf.Tensor]]) -> tf.Tensor:
  """G[s, t] = Σ_variables ⟨g_s, g_t⟩ in float64, from per-task gradients (T tuples of per-variable tensors).

  An embedding's gradient (IndexedSlices) is made dense; a variable a task does
  not reach (None) counts as zeros.
  """
  num_tasks = len(task_grads)
  num_vars = len(task_grads[0])
  total = tf.zeros([num_tasks, num_tasks], tf.float64)
  for i in range(num_vars):
    rows = _dense_rows([grads[i] for grads in task_grads])
    stacked = tf.reshape(tf.cast(tf.stack(rows), tf.float64), [num_tasks, -1])
    total += tf.matmul(stacked, stacked, transpose_b=True)
  return total


def _dense_rows(grads: Sequence[tf.Tensor | None]) -> list[tf.Tensor]:
  """One variable's per-task gradients made dense; None (the task does not reach it) as zeros of its shape."""
  reached = next((tf.convert_to_tensor(g) for g in grads if g is not None), None)
  if reached is None:
    raise ValueError("no task reaches a shared variable: it has no gradient to weigh")
  return [tf.zeros_like(reached) if g is None else tf.convert_to_tensor(g) for g in grads]


def combine(weights: tf.Tensor, task_grads: Sequence[Sequence[tf.Tensor]]) -> list[tf.Tensor]:
  """Σ_t w_t·g_t per variable (float32 gradients, float64 weights cast to each gradient's dtype; None as zeros)."""
  combined = []
  for i in range(len(task_grads[0])):
    grads = _dense_rows([task[i] for task in task_grads])
    w = tf.cast(weights, grads[0].dtype)
    combined.append(tf.add_n([w[t] * grads[t] for t in range(len(grads))]))
  return combined


class GramianBalancer(Balancer):
  """Base class of the Gramian methods: subclasses implement `weigh` (module docstring).

  A subclass that declares `SCOPE_PARAM` among its params gets
  `--gradient_scope`; `self.scope_name` is then the chosen scope. It names
  the scalar diagnostics its `Weighting` returns in `diagnostic_names`
  (solver iterations, residual, ...): they are kept in variables and logged
  with the Gramian's condition number at each loop's end, as TensorBoard's
  `gramian/<name>` and `gramian/condition`.
  """

  aggregates = True
  needs_gramian = True
  diagnostic_names: tuple[str, ...] = ()

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.scope_name = params.get(SCOPE_PARAM.name, PARAMETERS)
    self.gradient_scope = GradientScope.REPRESENTATION if self.scope_name == REPRESENTATION else GradientScope.SHARED
    # The last step's weights, Gramian and diagnostics: written while the step runs, before it reads them.
    self._used = state_variable(tf.ones([self.num_tasks]), name="used_weights")
    self._gramian = state_variable(tf.eye(self.num_tasks, dtype=tf.float64), name="last_gramian")
    self._diagnostics = {
      name: state_variable(tf.constant(0.0), name=f"diagnostic_{name}") for name in self.diagnostic_names
    }

  def weigh(self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor, seed: tf.Tensor) -> Weighting:
    """The weights for this step from the float64 Gramian [T, T], the global losses [T], the int64 step and
    the step's stateless seed (int64 [2], for a method's random draws: `portable_random.uniform(seed, ...)`)."""
    raise NotImplementedError

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(losses)  # what the heads follow; the shared variables get the weighted gradient

  def choose(self, stats: StepStats) -> tf.Tensor:
    """The float64 weights of this step (`weigh`), recorded for `weights()` and the summaries."""
    assert stats.gramian is not None and stats.seed is not None
    gramian = tf.cast(stats.gramian, tf.float64)
    weighting = self.weigh(gramian, stats.losses, stats.step, stats.seed)
    if set(weighting.diagnostics) != set(self.diagnostic_names):
      raise ValueError(f"{type(self).__name__}.weigh returned {sorted(weighting.diagnostics)}, not diagnostic_names")
    self._used.assign(tf.cast(weighting.weights, tf.float32))
    self._gramian.assign(gramian)
    for name, value in weighting.diagnostics.items():
      self._diagnostics[name].assign(tf.cast(value, tf.float32))
    return weighting.weights

  def aggregate(self, stats: StepStats) -> list[tf.Tensor]:
    """Σ_t w_t·g_t per scope tensor: each shared variable's gradient, or (representation scope) ∇_Z."""
    assert stats.task_grads is not None
    return combine(self.choose(stats), stats.task_grads)

  def summaries(self) -> dict[str, tf.Tensor]:
    eigenvalues = tf.linalg.eigvalsh(self._gramian)
    # λ_max / λ_min of G (the square of J's condition number); inf when the gradients are dependent.
    condition = tf.math.divide_no_nan(eigenvalues[-1], tf.maximum(eigenvalues[0], 0.0))
    condition = tf.where(eigenvalues[0] > 0, condition, float("inf"))
    # One TensorBoard section for every Gramian method, so that runs of different methods share charts.
    return {
      f"{TAG_PREFIX}/condition": tf.cast(condition, tf.float32),
      **{f"{TAG_PREFIX}/{name}": variable.read_value() for name, variable in self._diagnostics.items()},
    }

  def weights(self) -> tf.Tensor:
    return self._used.read_value()

"""Balancers whose objective is a function of the task losses: the loss-weighting family.

A method here writes `scalarize(losses)`, the scalar the model minimizes (the
geometric mean of the losses, Σ log L_t, a smooth maximum, ...). Its effective
weights are what the step's gradient actually multiplies each task's gradient
by, by the chain rule

  ∇_θ scalarize(L(θ)) = Σ_t w_t·∇_θ L_t,   w_t = ∂scalarize/∂L_t at this step's losses,

so they are computed from `scalarize` by automatic differentiation, at the
step's losses, and kept in a state variable that `weights()` reads: the step
reports the weights it used (a linear scalarization Σ w_t·L_t reports its w),
and `metrics.json` the last step's. Each method's tests check them against the
weights its paper writes down (for the geometric mean, ∝ 1/L_t).

`scalarize` must be a pure function of the losses and of the balancer's state
(it is evaluated twice per step: once on the step's tape, once for the weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Balancer, Schedule, state_variable

# Inside every log of a loss (log(L + ε)): a loss of exactly 0 (a classification task fitted
# perfectly) keeps a finite objective and gradient. The value of DB-MTL's and FAMO's authors' code.
LOG_EPSILON = 1e-8


def log_losses(losses: tf.Tensor, epsilon: float = LOG_EPSILON) -> tf.Tensor:
  """log(L_t + ε), elementwise."""
  return tf.math.log(losses + epsilon)


class LossFunctionBalancer(Balancer):
  """Base of the balancers whose objective is `scalarize(losses)`; reports w_t = ∂scalarize/∂L_t."""

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self._used_weights = state_variable(tf.ones([self.num_tasks]), "used_weights")

  def scalarize(self, losses: tf.Tensor) -> tf.Tensor:
    """The scalar the model minimizes, a function of the [T] losses (and the balancer's state)."""
    raise NotImplementedError

  def weights_at(self, losses: tf.Tensor) -> tf.Tensor:
    """[T] ∂scalarize/∂L_t at `losses` (constants: nothing differentiates through them)."""
    at = tf.stop_gradient(losses)
    # watch_accessed_variables=False: only the losses are differentiated, not joint variables.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(at)
      value = self.scalarize(at)
    return tf.stop_gradient(tape.gradient(value, at, unconnected_gradients=tf.UnconnectedGradients.ZERO))

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    self._used_weights.assign(self.weights_at(losses))
    return self.scalarize(losses)

  def weights(self) -> tf.Tensor:
    return self._used_weights.read_value()

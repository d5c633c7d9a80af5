"""Adam on a balancer's own variables, written as plain assignments.

Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Alg. 1,
in Keras's form (ε outside the square root, bias corrections folded into the
step size α_t = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)); the arithmetic is that of
`mtl_research.optim.adam.Adam`, so a balancer gets the same numbers as with Keras.

Why not a Keras optimizer: Keras synchronizes replicas inside
`apply_gradients` (a merge_call), which TensorFlow forbids inside `tf.cond`
(GradNorm holds its weights during the L(0) window) and which would sum, over
the replicas, a gradient that every replica computed alike from all-reduced
values. Here each replica applies the same update to ONLY_FIRST_REPLICA
variables, so the copies stay equal with no communication.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from mtl_research.replicated import state_variable


class StateAdam(tf.Module):
  """Adam for a few balancer variables; its state is checkpointed with the balancer."""

  def __init__(
    self,
    learning_rate: float,
    variables: Sequence[tf.Variable],
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
  ):
    super().__init__(name="state_adam")
    self.learning_rate = float(learning_rate)
    self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
    self.targets = list(variables)
    self.iterations = state_variable(tf.constant(0, tf.int64), "iterations")
    self.momentums = [state_variable(tf.zeros_like(v), "m") for v in self.targets]
    self.velocities = [state_variable(tf.zeros_like(v), "v") for v in self.targets]

  @property
  def variables(self) -> list[tf.Variable]:
    return [self.iterations, *self.momentums, *self.velocities]

  def apply(self, grads: Sequence[tf.Tensor], active: tf.Tensor | None = None) -> None:
    """One Adam step on `targets` with `grads` (same order).

    `active` (a bool tensor): take the step only where it is True, leaving
    every variable (and the step count) as it is otherwise. A `tf.where`, not
    a `tf.cond`: an assignment to a distributed variable synchronizes the
    replicas, which TensorFlow does not allow inside control flow.
    """

    def keep(new: tf.Tensor, old: tf.Variable) -> tf.Tensor:
      return new if active is None else tf.where(active, new, old)

    step = tf.cast(self.iterations + 1, tf.float32)
    alpha = (
      tf.constant(self.learning_rate, tf.float32)
      * tf.sqrt(1 - tf.pow(tf.constant(self.beta_2), step))
      / (1 - tf.pow(tf.constant(self.beta_1), step))
    )
    for grad, var, m, v in zip(grads, self.targets, self.momentums, self.velocities):
      m.assign(keep(m + (grad - m) * (1 - self.beta_1), m))
      v.assign(keep(v + (tf.square(grad) - v) * (1 - self.beta_2), v))
      var.assign(keep(var - (m * alpha) / (tf.sqrt(v) + self.epsilon), var))
    increment = tf.constant(1, tf.int64) if active is None else tf.cast(active, tf.int64)
    self.iterations.assign_add(increment)

"""Keras Adam and AdamW with their per-step scalars computed once per step.

Keras 3's `Adam.update_step` reads `iterations` and recomputes the bias
corrections `lr·√(1−β₂ᵗ)/(1−β₁ᵗ)` for every variable. Reads of a variable are
stateful, so Grappler cannot merge those copies, and on a small model on a CPU
they are a large share of the step (scripts/benchmark.py). These subclasses
compute the scalar once per `apply` and then do exactly Keras's per-variable
arithmetic with one fused assign per slot, so results are bitwise identical (tests/test_adam.py); slots,
checkpoints, schedules and distribution support are Keras's own.

Still worth keeping with the loop under XLA, which merges repeated reads itself:
measured with the benchmark's model and batch (fixed balancer, medians of 7
interleaved repetitions on 2 cores), these gave 10,894 steps/s against Keras
Adam's 10,281 under XLA, and 3,950 against 3,403 in the graph loop.
"""

from __future__ import annotations

import tensorflow as tf


class _OncePerStep:
  """Mixin for keras Adam-family optimizers (float32 variables, no amsgrad)."""

  _alpha = None

  def _backend_update_step(self, grads, trainable_variables, learning_rate):
    step = tf.cast(self.iterations + 1, tf.float32)
    self._alpha = (
      tf.cast(learning_rate, tf.float32)
      * tf.sqrt(1 - tf.pow(tf.cast(self.beta_2, tf.float32), step))
      / (1 - tf.pow(tf.cast(self.beta_1, tf.float32), step))
    )
    try:
      super()._backend_update_step(grads, trainable_variables, learning_rate)
    finally:
      self._alpha = None

  def update_step(self, gradient, variable, learning_rate):
    if self._alpha is None or self.amsgrad or variable.dtype != tf.float32:
      return super().update_step(gradient, variable, learning_rate)
    index = self._get_variable_index(variable)
    # The slots' tf.Variables: Keras's own assign_add is read + add + assign.
    m, v = self._momentums[index].value, self._velocities[index].value
    m.assign_add((gradient - m) * (1 - self.beta_1))
    v.assign_add((tf.square(gradient) - v) * (1 - self.beta_2))
    variable.assign_sub((m * self._alpha) / (tf.sqrt(v) + self.epsilon))
    return None


class Adam(_OncePerStep, tf.keras.optimizers.Adam):
  """keras.optimizers.Adam, with the bias corrections computed once per step."""


class AdamW(_OncePerStep, tf.keras.optimizers.AdamW):
  """keras.optimizers.AdamW, with the bias corrections computed once per step."""

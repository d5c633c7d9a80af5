"""Detection of non-finite losses and gradients inside the compiled loop.

Each step computes one boolean, "everything finite", from its losses, its
objective and the gradients it is about to apply. The loop carries a small
record of the first failing step (its index and its per-task losses) and a
count of failing steps, and returns it with the logs of its last step: the
trainer learns of a failure once per loop, with no round trip to Python per
step. What happens to a failing step is `--nan_policy`:

  stop        the update is applied (the run is lost anyway); the trainer stops
              at the end of the loop, before any evaluation or checkpoint, so
              the last checkpoint on disk is the last good state;
  skip_batch  the update (model optimizer and balancer state) is not applied;
              the step counter still advances, so the next batch is the one an
              undisturbed run would see, and the trainer counts the skip.

Either way, finite inputs whose update leaves a non-finite variable (a
balancer's own arithmetic overflowing) stop the run: that update cannot be
skipped after the fact, and no checkpoint is written from such a state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from mtl_research.errors import UserError


class NonFiniteError(UserError):
  """A non-finite loss or gradient stopped the run (--nan_policy=stop)."""


class GuardState(NamedTuple):
  """What a loop learned about non-finite steps (loop-carried tensors)."""

  first_bad_step: tf.Tensor  # int64 index (steps done before it) of the first failing step; -1: none
  bad_losses: tf.Tensor  # [T] float32 per-task losses of that step
  count: tf.Tensor  # int32 number of failing steps


def initial_state(num_tasks: int) -> GuardState:
  """The record of a loop before its first step: no failure yet."""
  return GuardState(tf.constant(-1, tf.int64), tf.zeros([num_tasks]), tf.constant(0, tf.int32))


def all_finite(objective: tf.Tensor, losses: tf.Tensor, grads: Sequence[tf.Tensor | None]) -> tf.Tensor:
  """True iff the objective, every loss and every gradient element is finite.

  A sum is finite only if every term is (NaN and ±inf propagate), so one
  reduction per tensor and one add replace an elementwise test of every
  tensor, which matters at ~1 µs per op on a small model. Finite values whose
  sum overflows float32 (≈3e38) also count as a failure; training has diverged
  by then anyway.
  """
  sums = [tf.reduce_sum(g) for g in grads if g is not None]
  return tf.math.is_finite(tf.add_n(sums + [objective, tf.reduce_sum(losses)]))


def variables_finite(variables: Sequence[tf.Variable]) -> tf.Tensor:
  """True iff every element of every floating-point variable is finite."""
  # In float64: variables of both widths (a balancer's float64 state) add up, and float32 sums cannot overflow there.
  sums = [tf.cast(tf.reduce_sum(v), tf.float64) for v in variables if tf.as_dtype(v.dtype).is_floating]
  return tf.math.is_finite(tf.add_n(sums)) if sums else tf.constant(True)


def record(state: GuardState, ok: tf.Tensor, step: tf.Tensor, losses: tf.Tensor) -> GuardState:
  """`state` after a step with index `step` whose finiteness is `ok`."""
  failed = tf.logical_not(ok)
  first = tf.logical_and(failed, state.first_bad_step < 0)
  return GuardState(
    tf.where(first, step, state.first_bad_step),
    tf.where(first, losses, state.bad_losses),
    state.count + tf.cast(failed, tf.int32),
  )


def merge(earlier: GuardState, later: GuardState) -> GuardState:
  """The record of two consecutive runs of steps (NumPy values), the earlier one first."""
  if earlier.first_bad_step >= 0 or later.first_bad_step < 0:
    return earlier._replace(count=earlier.count + later.count)
  return later._replace(count=earlier.count + later.count)


def describe(record: GuardState, task_names: Sequence[str]) -> str:
  """The first failing step of `record` (NumPy values) in words, steps counted from 1."""
  step = int(record.first_bad_step) + 1
  losses = np.asarray(record.bad_losses)
  bad = [f"{name} ({value})" for name, value in zip(task_names, losses) if not np.isfinite(value)]
  if bad:
    return f"non-finite loss at step {step} in task(s) {', '.join(bad)}"
  return f"non-finite value at step {step} with every task loss finite (in the objective, a gradient or the update)"

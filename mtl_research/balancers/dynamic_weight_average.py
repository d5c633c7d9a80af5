"""DWA, dynamic weight average: Liu, Johns & Davison, "End-to-End Multi-Task Learning with
Attention", CVPR 2019, its Dynamic Weight Average (λ_k(t) = K·exp(w_k(t−1)/T) / Σ_i
exp(w_i(t−1)/T), w_k(t−1) = L_k(t−1)/L_k(t−2), written here with T tasks and temperature τ):

  λ_t(e) = T · exp(r_t(e−1)/τ) / Σ_i exp(r_i(e−1)/τ),   r_t(e−1) = L̄_t(e−1) / L̄_t(e−2),

where e counts epochs, L̄_t(e) is task t's training loss averaged over the steps of
epoch e, and τ the temperature (the paper's 2). λ_t(e) = 1 for the first two epochs,
when the ratio does not exist yet. A task whose loss fell less over the last epoch
(r closer to 1, or above it) gets a larger weight; the weights sum to T.

The epoch means are kept as checkpointed state: the sum and count of this epoch's
losses (added in `update`, so a batch skipped by --nan_policy=skip_batch does not
count) and the last two epochs' means, which `begin_step` rolls over at the first
step of each epoch (epoch = step // steps_per_epoch). The losses are the step's
global-batch training losses, those the public code averages (the authors' `mtan`
code and LibMTL's `DWA`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Schedule, StepStats, state_variable
from mtl_research.balancers.loss_function import LossFunctionBalancer
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import FLOAT, Param

PARAMS = (Param("dwa_temperature", FLOAT, 2.0, "DWA: the softmax temperature τ, > 0 (2: the paper).", above=0.0),)


def dwa_weights(last: tf.Tensor, before_last: tf.Tensor, temperature: float) -> tf.Tensor:
  """λ = T·softmax(r/τ), r = last / before_last (epoch means of the losses)."""
  num_tasks = last.shape[0]
  return num_tasks * tf.nn.softmax((last / before_last) / temperature)


@BALANCERS.register("dwa", params=PARAMS)
class DynamicWeightAverage(LossFunctionBalancer):
  """Liu et al. 2019: weights from the ratio of the last two epochs' mean losses."""

  relative_only = True  # one task: T·softmax = 1

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.temperature = float(params["dwa_temperature"])
    self.steps_per_epoch = max(int(schedule.steps_per_epoch), 1)
    ones = tf.ones([self.num_tasks])
    self._epoch = state_variable(tf.constant(0, tf.int64), "epoch")  # the epoch `_sum` belongs to
    self._sum = state_variable(tf.zeros([self.num_tasks]), "epoch_loss_sum")
    self._count = state_variable(tf.constant(0.0), "epoch_steps")
    self._last = state_variable(ones, "last_epoch_mean")  # L̄(e−1)
    self._before_last = state_variable(ones, "before_last_epoch_mean")  # L̄(e−2)
    self._means = state_variable(tf.constant(0, tf.int64), "epoch_means")  # how many epochs closed

  def begin_step(self, step: tf.Tensor, seed: tf.Tensor) -> None:
    del seed
    epoch = tf.cast(step, tf.int64) // self.steps_per_epoch
    # An epoch with no applied step (every batch skipped) leaves the means as they were.
    close = tf.logical_and(epoch > self._epoch, self._count > 0)
    mean = self._sum / tf.maximum(self._count, 1.0)
    last = self._last.read_value()
    self._before_last.assign(tf.where(close, last, self._before_last))
    self._last.assign(tf.where(close, mean, last))
    self._means.assign_add(tf.cast(close, tf.int64))
    new_epoch = epoch > self._epoch
    self._sum.assign(tf.where(new_epoch, tf.zeros_like(self._sum), self._sum))
    self._count.assign(tf.where(new_epoch, 0.0, self._count))
    self._epoch.assign(tf.maximum(epoch, self._epoch))

  def current_weights(self) -> tf.Tensor:
    """λ of this epoch: 1 until two epochs have means."""
    ready = self._means >= 2
    computed = dwa_weights(self._last, self._before_last, self.temperature)
    return tf.where(ready, computed, tf.ones_like(computed))

  def scalarize(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(self.current_weights() * losses)

  def update(self, stats: StepStats) -> dict[str, tf.Tensor]:
    self._sum.assign_add(tf.cast(stats.losses, tf.float32))
    self._count.assign_add(1.0)
    return {}

  def summaries(self) -> dict[str, tf.Tensor]:
    return {"dwa/loss_ratio": self._last / self._before_last}

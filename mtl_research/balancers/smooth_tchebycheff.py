"""STCH, smooth Tchebycheff scalarization: Lin, Zhang, Yang, Liu, Wang & Zhang (Xi Lin
et al.), "Smooth Tchebycheff Scalarization for Multi-Objective Optimization", ICML 2024,
the smooth Tchebycheff function

  g_μ(x | λ) = μ·log Σ_t exp(λ_t·(f_t(x) − z*_t) / μ),

a smooth upper bound of the Tchebycheff scalarization max_t λ_t·(f_t − z*_t) that tends
to it as μ → 0 (μ·log T ≥ g_μ − max ≥ 0), and whose gradient is a softmax-weighted sum
of the objectives' gradients: ∂g_μ/∂f_t = λ_t·softmax_t(λ·(f − z*)/μ). As μ grows the
softmax flattens towards 1/T (a mean-like weighting); as μ → 0 it concentrates on the
worst objective.

For multi-task learning the authors' code (STCH_MTL, `LibMTL/weighting/STCH.py`,
maintained in LibMTL) fixes what the paper leaves to the application, and this module
follows it: λ_t = 1; the objectives are the log losses normalized by a nadir point,
f_t = log(L_t / n_t + ε) with z* = 0; the nadir n_t is task t's mean training loss over
the last warm-up epoch; the warm-up epochs train on Σ_t log(L_t + ε); after warm-up the
objective is T·g_μ (the factor T keeps the gradient's scale that of a sum of T tasks).
`--stch_objectives=linear` uses f_t = L_t / n_t instead (the paper's general form on
losses normalized by the nadir, ideal point 0).

`--stch_warmup_epochs` = W counts the epochs trained on the log losses; the nadir is
measured over epoch W − 1. The default 5 is the authors' setting: their
`STCH_warmup_epoch=4` trains epochs 0..4 on the log losses, measuring the nadir in
epoch 4, and runs STCH from epoch 5. W = 0 starts STCH at once with n_t = 1. The
nadir's sum and count are checkpointed state; ε = 1e-8 (the authors' code has 1e-20).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Schedule, StepStats, state_variable
from mtl_research.balancers.loss_function import LossFunctionBalancer, log_losses
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import ENUM, FLOAT, INT, Param

PARAMS = (
  Param("stch_mu", FLOAT, 1.0, "STCH: the smoothing μ, > 0 (1: the authors' code).", above=0.0),
  Param(
    "stch_warmup_epochs",
    INT,
    5,
    "STCH: epochs trained on Σ log L before STCH; the last measures the nadir (5: the authors' code; 0: none).",
    lower=0,
  ),
  Param(
    "stch_objectives",
    ENUM,
    "log",
    "STCH: the objectives f_t: log: log(L_t/n_t) (the authors' code); linear: L_t/n_t.",
    choices=("log", "linear"),
  ),
)


def stch(objectives: tf.Tensor, mu: float) -> tf.Tensor:
  """μ·log Σ_t exp(f_t/μ), computed stably (reduce_logsumexp subtracts the maximum)."""
  return mu * tf.reduce_logsumexp(objectives / mu)


@BALANCERS.register("stch", params=PARAMS)
class SmoothTchebycheff(LossFunctionBalancer):
  """Lin et al. 2024: a smooth maximum of the nadir-normalized log losses, after a warm-up."""

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.mu = float(params["stch_mu"])
    self.warmup_epochs = int(params["stch_warmup_epochs"])
    self.log_objectives = params["stch_objectives"] == "log"
    self.steps_per_epoch = max(int(schedule.steps_per_epoch), 1)
    self._active = state_variable(tf.constant(self.warmup_epochs == 0), "active")
    self._measuring = state_variable(tf.constant(False), "measuring_nadir")
    self._nadir_sum = state_variable(tf.zeros([self.num_tasks]), "nadir_loss_sum")
    self._nadir_count = state_variable(tf.constant(0.0), "nadir_steps")

  def begin_step(self, step: tf.Tensor, seed: tf.Tensor) -> None:
    del seed
    epoch = tf.cast(step, tf.int64) // self.steps_per_epoch
    self._active.assign(epoch >= self.warmup_epochs)
    self._measuring.assign(tf.equal(epoch, self.warmup_epochs - 1))

  def nadir(self) -> tf.Tensor:
    """n_t: the mean loss of the last warm-up epoch (1 before it is measured, or with no warm-up)."""
    count = self._nadir_count.read_value()
    return tf.where(count > 0, self._nadir_sum / tf.maximum(count, 1.0), tf.ones([self.num_tasks]))

  def objectives(self, losses: tf.Tensor) -> tf.Tensor:
    normalized = losses / self.nadir()
    return log_losses(normalized) if self.log_objectives else normalized

  def scalarize(self, losses: tf.Tensor) -> tf.Tensor:
    warmup = tf.reduce_sum(log_losses(losses))
    smooth = self.num_tasks * stch(self.objectives(losses), self.mu)
    return tf.where(self._active, smooth, warmup)

  def update(self, stats: StepStats) -> dict[str, tf.Tensor]:
    measuring = self._measuring.read_value()
    self._nadir_sum.assign_add(tf.where(measuring, tf.cast(stats.losses, tf.float32), 0.0))
    self._nadir_count.assign_add(tf.where(measuring, 1.0, 0.0))
    return {}

  def summaries(self) -> dict[str, tf.Tensor]:
    return {"stch/nadir": self.nadir()}

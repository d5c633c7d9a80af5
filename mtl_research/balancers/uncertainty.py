"""Uncertainty weighting: Kendall, Gal & Cipolla, "Multi-Task Learning Using
Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018.

Each task t has a learned s_t = log σ_t², trained with the model on

  regression (Eq. 5):      ½·exp(−s_t)·L_t + ½·s_t      (= L/(2σ²) + log σ)
  classification (Eq. 10): exp(−s_t)·L_t + ½·s_t        (= L/σ² + log σ)

Learning s = log σ² rather than σ keeps the loss finite and avoids dividing by
zero (the paper's §3.2). The effective weight of L_t is the factor in front of
it, c_t·exp(−s_t) with c_t = ½ (regression form) or 1 (classification form).

For a regression task whose loss is a mean squared error, the optimum is
exp(s_t) = L_t: σ_t² estimates the task's residual variance.

`--uncertainty_form=regression` applies the regression form to every task, as
several public implementations do; the default `by_kind` follows the paper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Balancer, Schedule, state_variable
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import ENUM, FLOAT, Param

PARAMS = (
  Param("uncertainty_init_log_var", FLOAT, 0.0, "Initial s_t = log σ_t² of every task."),
  Param(
    "uncertainty_form",
    ENUM,
    "by_kind",
    "by_kind: the paper's regression/classification forms; regression: ½·exp(−s)·L + ½·s for all tasks.",
    choices=("by_kind", "regression"),
  ),
)


@BALANCERS.register("uncertainty", params=PARAMS)
class Uncertainty(Balancer):
  """Kendall et al. 2018 homoscedastic uncertainty weighting, s_t = log σ_t² learned."""

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    regression_form = [
      params["uncertainty_form"] == "regression" or t.kind == tasks_lib.REGRESSION for t in self.task_specs
    ]
    self.scale = tf.constant([0.5 if r else 1.0 for r in regression_form], tf.float32)
    self.log_var = state_variable(
      tf.fill([self.num_tasks], float(params["uncertainty_init_log_var"])), "log_var", trainable=True
    )

  @property
  def joint_variables(self) -> list[tf.Variable]:
    return [self.log_var]

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(self.scale * tf.exp(-self.log_var) * losses + 0.5 * self.log_var)

  def summaries(self) -> dict[str, tf.Tensor]:
    return {"uncertainty/log_var": self.log_var.read_value()}

  def weights(self) -> tf.Tensor:
    return self.scale * tf.exp(-self.log_var)

"""Fixed loss weights: the static weighted sum used by most MTL baselines.

L_total = Σ_t w_t · L_t,   w_t from --task_weights (default 1 for every task).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Balancer, Schedule
from mtl_research.balancers.registry import BALANCERS
from mtl_research.errors import UserError
from mtl_research.params import TASK_FLOATS, Param, check_task_names

PARAMS = (
  Param(
    "task_weights",
    TASK_FLOATS,
    "",
    "Per-task loss weights as name:weight,... for --balancer=fixed; unnamed tasks get 1.0.",
    lower=0.0,
  ),
)


@BALANCERS.register("fixed", params=PARAMS)
class Fixed(Balancer):
  """Static weighted sum of task losses, weights from --task_weights."""

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    given = params["task_weights"]
    check_task_names("task_weights", given, self.task_names)
    weights = [given.get(name, 1.0) for name in self.task_names]
    if not any(weights):  # the objective would be 0: every step a no-op, a run that trains nothing
      raise UserError(
        f"--task_weights gives every task ({', '.join(self.task_names)}) weight 0, so nothing would be trained; "
        "give at least one task a positive weight."
      )
    self._weights = tf.constant(weights, tf.float32)

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(self._weights * losses)

  def weights(self) -> tf.Tensor:
    return self._weights

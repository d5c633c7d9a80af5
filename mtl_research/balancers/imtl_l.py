"""IMTL-L, the loss half of Impartial Multi-Task Learning: Liu, Li, Kuang, Xue, Chen, Yang,
Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021, its loss balance (IMTL-L).

Each task t has a learned scale s_t, trained with the model (by the same optimizer,
on the same objective) on

  L_total = Σ_t (e^{s_t}·L_t − s_t).

For fixed L_t the minimum over s_t is where e^{s_t}·L_t = 1: every scaled loss is
driven to the same value 1, whatever the task's loss scale, which is the paper's
"impartial" loss balance. The weight of task t is e^{s_t}.

How it differs from uncertainty weighting (Kendall et al. 2018, `--balancer=uncertainty`):
Kendall's objective ½·e^{−s}·L + ½·s (regression) or e^{−s}·L + ½·s (classification)
is, with u = −s, a different regularizer per loss kind and a different optimum
(e^{−s} = 1/L or 1/(2L)); IMTL-L uses one form for every loss kind, the scale
enters as e^{s} (not a variance), and its optimum makes every scaled loss exactly 1,
a property the paper derives for its loss balance rather than from a likelihood.
The public implementations (LibMTL's `IMTL`, the loss part of its hybrid) use the
same e^{s}·L − s with s initialized to 0, as here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Schedule, state_variable
from mtl_research.balancers.loss_function import LossFunctionBalancer
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import FLOAT, Param

PARAMS = (Param("imtl_l_init_scale", FLOAT, 0.0, "IMTL-L: the initial s_t of every task (weight e^s; 0: LibMTL)."),)


@BALANCERS.register("imtl_l", params=PARAMS)
class IMTLL(LossFunctionBalancer):
  """Liu et al. 2021 loss balance: learned s_t on e^{s_t}·L_t − s_t."""

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.scale = state_variable(
      tf.fill([self.num_tasks], float(params["imtl_l_init_scale"])), "log_scale", trainable=True
    )

  @property
  def joint_variables(self) -> list[tf.Variable]:
    return [self.scale]

  def scalarize(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.exp(self.scale) * losses - self.scale)

  def summaries(self) -> dict[str, tf.Tensor]:
    return {"imtl_l/scale": self.scale.read_value()}

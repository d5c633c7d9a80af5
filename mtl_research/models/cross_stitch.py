"""Cross-stitch networks: Misra, Shrivastava, Gupta & Hebert, "Cross-stitch Networks for Multi-task
Learning", CVPR 2016: the cross-stitch unit (the 2×2 α of its Eq. 1, here T×T), for dense columns.

One column per task, each a stack of ReLU Dense layers (`--column_units`). After every layer l a
cross-stitch unit, a learned T×T matrix α^l, mixes the columns' activations,

  x̃_i^l = Σ_j α_ij^l · x_j^l,

and column i's next layer (or task i's output layer, after the last unit) reads x̃_i^l. α is
initialized as in the paper's experiments, α_ii = `--cross_stitch_init` (0.9) and α_ij =
(1 − α_ii)/(T − 1) off the diagonal, so each row sums to 1 (the paper's (α_S, α_D) = (0.9, 0.1) for
two tasks); with 1.0 the columns start independent. With one task the unit is the scalar 1.

What the model declares (models/base.py), by what the losses reach: every column layer and every
cross-stitch unit is shared (the units mix every column into every task's path); each task's output
layer is its own. Z is the last unit's output, all tasks' rows concatenated. GradNorm's layer: the
last kernel of every column. The columns are one `ExpertBank` (models/experts.py), column i its
expert i: layer l of every column is one [T, in, out] kernel and one batched product.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.features import FeatureSpec
from mtl_research.models import base
from mtl_research.models import experts as experts_lib
from mtl_research.models.registry import ARCHITECTURES
from mtl_research.params import FLOAT, INTS, Param

PARAMS = (
  Param("column_units", INTS, "64,32", "Cross-stitch: widths of each task column's ReLU Dense layers.", lower=1),
  Param(
    "cross_stitch_init",
    FLOAT,
    0.9,
    "Cross-stitch: the initial α_ii of every unit (off-diagonal (1 − α_ii)/(T − 1)); 0.9: the paper's; 1: independent.",
    lower=0.0,
    upper=1.0,
  ),
  *base.COMMON_PARAMS,
)


def initial_unit(num_tasks: int, diagonal: float) -> np.ndarray:
  """α with `diagonal` on the diagonal and the rest of each row spread evenly (rows sum to 1)."""
  if num_tasks == 1:
    return np.ones([1, 1], np.float32)
  alpha = np.full([num_tasks, num_tasks], (1.0 - diagonal) / (num_tasks - 1), np.float32)
  np.fill_diagonal(alpha, diagonal)
  return alpha


class CrossStitch(base.MultiTaskModel):
  """One Dense column per task, a learned T×T cross-stitch unit after every layer."""

  def __init__(
    self,
    task_specs: Sequence[tasks_lib.TaskSpec],
    feature_spec: FeatureSpec,
    column_units: Sequence[int],
    init: float,
    dropout: float = 0.0,
    l2: float = 0.0,
    embedding_dim: int = 8,
  ):
    super().__init__(task_specs, feature_spec, embedding_dim)
    self.names = [task.name for task in task_specs]
    # Column i is expert i of one bank: layer l of every column is one batched product.
    self.columns = experts_lib.ExpertBank(len(self.names), column_units, l2, dropout, name="columns")
    start = initial_unit(len(self.names), float(init))
    self.units = [
      self.add_weight(
        shape=start.shape, initializer=tf.keras.initializers.Constant(start), name=f"cross_stitch_{layer}"
      )
      for layer in range(len(column_units))
    ]
    self.heads = base.output_layers(self, task_specs, l2)

  def forward(
    self, features: Mapping[str, tf.Tensor], training: bool = False
  ) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    hidden = self.encoder(features)  # [batch, d], read by every column
    if not self.columns.built:  # its layers are run one at a time below, not through __call__
      self.columns.build(hidden.shape)
    for layer, unit in enumerate(self.units):
      activations = self.columns.layer(layer, hidden, training)  # [batch, T, width]
      # x̃_i = Σ_j α_ij x_j, as α·X per example: under XLA:CPU this broadcast matmul ran 1.5-2× faster
      # than the same einsum ("ij,bjd->bid"), forward and backward, at batch 32 and 512, T = 2 and 4.
      hidden = tf.matmul(unit, activations)
    representation = tf.reshape(hidden, [-1, hidden.shape[1] * hidden.shape[2]])
    rows = tf.reshape(representation, [-1, len(self.names), hidden.shape[2]])
    return {name: self.heads[name](rows[:, i]) for i, name in enumerate(self.names)}, representation

  @property
  def shared_variables(self) -> list[tf.Variable]:
    return list(self.encoder.trainable_variables) + list(self.columns.trainable_variables) + list(self.units)

  def task_variables(self, task: str) -> list[tf.Variable]:
    return list(self.heads[task].trainable_variables)

  @property
  def gradnorm_variables(self) -> list[tf.Variable]:
    return [self.columns.last_kernel]


@ARCHITECTURES.register("cross_stitch", params=PARAMS)
def build(
  task_specs: Sequence[tasks_lib.TaskSpec], feature_spec: FeatureSpec, params: Mapping[str, Any]
) -> CrossStitch:
  """Cross-stitch networks (Misra et al., CVPR 2016) on dense columns."""
  return CrossStitch(
    task_specs,
    feature_spec,
    params["column_units"],
    params["cross_stitch_init"],
    params["dropout"],
    params["l2"],
    params["embedding_dim"],
  )

"""A bank of parallel ReLU Dense stacks (experts, or cross-stitch columns) computed as batched products.

n experts of the same widths are n·L small matrix products when each is its own Dense layer; on a CPU
(and under XLA) the cost of a small model is mostly per-operation overhead, so an MMoE of 8 such
experts took 2.96× shared-bottom's step time for 1.00× its FLOPs (`scripts/benchmark.py
--bench_models`). Here layer l of all n experts is one kernel [n, in, out] and one bias [n, out],
applied by one `einsum`: the same function and the same parameters, n× fewer operations.

Each expert's kernel slice is initialized as Keras's `Dense` initializes its own kernel (Glorot
uniform on its own fan-in and fan-out, not on the stacked tensor's), its biases at zero. The L2
penalty of the stacked kernel is the sum of the experts' penalties. A variable holds every expert's
layer, so an architecture may bank together only experts that are all shared or all one task's.
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import tensorflow as tf

from mtl_research.models import base


class ExpertBank(tf.keras.layers.Layer):
  """`count` ReLU Dense stacks of widths `units`; [batch, in] or [batch, count, in] → [batch, count, units[-1]].

  A rank-2 input is read by every expert; a rank-3 input gives expert i its own row `inputs[:, i]`
  (PLE's experts reading different tasks' inputs, cross-stitch columns after a unit).
  """

  def __init__(self, count: int, units: Sequence[int], l2: float = 0.0, dropout: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.count = int(count)
    self.units = [int(width) for width in units]
    self.regularizer = tf.keras.regularizers.L2(l2) if l2 > 0 else None
    self.kernels: list[tf.Variable] = []
    self.biases: list[tf.Variable] = []
    # Tracked one by one: their random-number state belongs in the checkpoint.
    self.dropouts = base.track(self, "dropout_", [base.Dropout(dropout) for _ in self.units] if dropout > 0 else [])

  def build(self, input_shape) -> None:
    fan_in = int(input_shape[-1])
    for i, width in enumerate(self.units):
      limit = math.sqrt(6.0 / (fan_in + width))  # Glorot uniform of one expert's [fan_in, width] kernel
      self.kernels.append(
        self.add_weight(
          shape=(self.count, fan_in, width),
          initializer=tf.keras.initializers.RandomUniform(-limit, limit),
          regularizer=self.regularizer,
          name=f"kernel_{i}",
        )
      )
      self.biases.append(self.add_weight(shape=(self.count, width), initializer="zeros", name=f"bias_{i}"))
      fan_in = width
    # As attributes too: Keras 3 does not make variables held in a list checkpoint children.
    base.track(self, "kernel_", self.kernels)
    base.track(self, "bias_", self.biases)

  def layer(self, index: int, hidden: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Layer `index` of every expert: [batch, in] (shared) or [batch, count, in] → [batch, count, out]."""
    kernel = self.kernels[index]
    if hidden.shape.rank == 2:
      # Every expert reads the same rows: one [in, n·out] product (XLA:CPU runs a batched dot
      # without batch dimensions markedly slower; measured by the benchmark's --bench_models).
      count, fan_in, width = kernel.shape
      wide = tf.reshape(tf.transpose(kernel, [1, 0, 2]), [fan_in, count * width])
      out = tf.reshape(tf.matmul(hidden, wide), [-1, count, width])
    else:
      out = tf.einsum("bni,nio->bno", hidden, kernel)
    hidden = tf.nn.relu(out + self.biases[index])
    if self.dropouts:
      hidden = self.dropouts[index](hidden, training=training)
    return hidden

  def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
    hidden = inputs
    for index in range(len(self.units)):
      hidden = self.layer(index, hidden, training)
    return hidden

  @property
  def last_kernel(self) -> tf.Variable:
    """Every expert's last kernel, [count, in, out]: the bank's last layer (GradNorm's W for an MoE)."""
    return self.kernels[-1]

  def matmul_shapes(self) -> list[tuple[int, int]]:
    """(inputs, units) of each expert's products, as separate Dense layers would have (for FLOP counts)."""
    return [(int(k.shape[1]), int(k.shape[2])) for k in self.kernels for _ in range(self.count)]


def flatten(stacked: tf.Tensor) -> tf.Tensor:
  """[batch, n, d] → [batch, n·d]: expert outputs as one representation row."""
  return tf.reshape(stacked, [-1, stacked.shape[1] * stacked.shape[2]])

"""MMoE, multi-gate mixture-of-experts: Ma, Zhao, Yi, Chen, Hong & Chi, "Modeling Task Relationships in
Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018, §4.2–4.3, Eqs. (5)–(6):

  y_k = h^k(f^k(x)),   f^k(x) = Σ_{i=1}^{n} g^k(x)_i · f_i(x),   g^k(x) = softmax(W_{gk} x),

with n experts f_i (here each a stack of ReLU Dense layers, `--expert_units`), one softmax gate per task
on the input x (the encoded features, `W_{gk}` of shape [d, n], no bias, as in the paper), and one tower
h^k per task (ReLU Dense layers `--tower_units`, then the task's output layer). TensorBoard shows each
task's mean gate weight per expert (`gate/<task>/expert_<i>`, expert utilization) on the last batch of
each loop call.

What the model declares (models/base.py): the experts and the feature encoder are shared (every task's
gate mixes every expert); each task's gate, tower and output layer are its own. The shared
representation Z is the encoded input and the experts' outputs concatenated, [batch, d + n·d_e]: the
cut between the shared and the task-specific part (the gates read x directly, so with embeddings x
must be in Z for ∇_Z L_t to carry every path from the shared variables to the loss). GradNorm's W is
the last layer's kernel of every expert: together they are the last shared layer (the paper's GradNorm
uses the last shared layer; in MMoE that is n parallel layers, none of which alone carries every
task's gradient). The experts are one `ExpertBank` (models/experts.py): layer l of all n experts is
one [n, in, out] kernel and one batched product, so ‖∇_W‖ over that kernel is the norm over the n
experts' kernels.

Defaults: 8 experts (the paper's synthetic and census experiments), one expert layer of 64 units and
one tower layer of 32: about the size of shared-bottom's default trunk on the tutorial data (the run
logs both counts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.features import FeatureSpec
from mtl_research.models import base
from mtl_research.models import experts as experts_lib
from mtl_research.models.registry import ARCHITECTURES
from mtl_research.params import INT, Param

PARAMS = (
  Param("num_experts", INT, 8, "Experts of a mixture-of-experts architecture (mmoe, dselect_k).", lower=1),
  base.EXPERT_UNITS,
  base.TOWER_UNITS,
  *base.COMMON_PARAMS,
)


class MMoE(base.MultiTaskModel):
  """Shared experts, one softmax gate and one tower per task (Ma et al. 2018)."""

  def __init__(
    self,
    task_specs: Sequence[tasks_lib.TaskSpec],
    feature_spec: FeatureSpec,
    num_experts: int,
    expert_units: Sequence[int],
    tower_units: Sequence[int],
    dropout: float = 0.0,
    l2: float = 0.0,
    embedding_dim: int = 8,
    make_gate: Callable[[str], tf.keras.layers.Layer] | None = None,
  ):
    """`make_gate(task)`: the task's gate, x [batch, d] → expert weights [batch, n] (default: the paper's
    softmax(W_gk x), as logits here: softmax is applied by `gate_weights`)."""
    super().__init__(task_specs, feature_spec, embedding_dim)
    self.num_experts = int(num_experts)
    self.expert_width = int(expert_units[-1])
    regularizer = tf.keras.regularizers.L2(l2) if l2 > 0 else None
    self.softmax_gates = make_gate is None
    if make_gate is None:

      def make_gate(task: str) -> tf.keras.layers.Layer:
        return tf.keras.layers.Dense(
          self.num_experts, use_bias=False, kernel_regularizer=regularizer, name=f"gate_{task}"
        )

    self.experts = experts_lib.ExpertBank(self.num_experts, expert_units, l2, dropout, name="experts")
    self.gates = base.track(self, "gate_", {task.name: make_gate(task.name) for task in task_specs})
    self.towers = {
      task.name: base.dense_stack(self, f"tower_{task.name}_", tower_units, l2, dropout) for task in task_specs
    }
    self.heads = base.output_layers(self, task_specs, l2)

  def gate_weights(self, encoded: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
    """g^k(x) per task, [batch, n], rows summing to 1."""
    if self.softmax_gates:
      return {name: tf.nn.softmax(gate(encoded), axis=-1) for name, gate in self.gates.items()}
    return {name: gate(encoded, training=training) for name, gate in self.gates.items()}

  def forward(
    self, features: Mapping[str, tf.Tensor], training: bool = False
  ) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    encoded = self.encoder(features)
    # Z = [x, f_1(x), ..., f_n(x)]: the gates read x itself, so x belongs to the cut between the
    # shared and the task-specific part (the embeddings reach every loss through the gates too).
    representation = tf.concat([encoded, experts_lib.flatten(self.experts(encoded, training=training))], axis=-1)
    width = encoded.shape[-1]
    stacked = tf.reshape(representation[:, width:], [-1, self.num_experts, self.expert_width])
    outputs = {}
    for name, gates in self.gate_weights(representation[:, :width], training).items():
      mixed = base.mix(gates, stacked)  # f^k(x) = Σ_i g^k(x)_i f_i(x)
      layers, drops = self.towers[name]
      outputs[name] = self.heads[name](base.run_stack(layers, drops, mixed, training))
    return outputs, representation

  def summaries(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Expert utilization: each task's mean gate weight of each expert (`gate/<task>/expert_<i>`)."""
    means = {name: tf.reduce_mean(gates, axis=0) for name, gates in self.gate_weights(self.encoder(features)).items()}
    return {f"gate/{name}/expert_{e}": mean[e] for name, mean in means.items() for e in range(self.num_experts)}

  @property
  def shared_variables(self) -> list[tf.Variable]:
    return list(self.encoder.trainable_variables) + list(self.experts.trainable_variables)

  def task_variables(self, task: str) -> list[tf.Variable]:
    layers, _ = self.towers[task]
    tower = [v for layer in layers for v in layer.trainable_variables]
    return list(self.gates[task].trainable_variables) + tower + list(self.heads[task].trainable_variables)

  @property
  def gradnorm_variables(self) -> list[tf.Variable]:
    return [self.experts.last_kernel]


@ARCHITECTURES.register("mmoe", params=PARAMS)
def build(task_specs: Sequence[tasks_lib.TaskSpec], feature_spec: FeatureSpec, params: Mapping[str, Any]) -> MMoE:
  """Multi-gate mixture-of-experts (Ma et al., KDD 2018)."""
  return MMoE(
    task_specs,
    feature_spec,
    params["num_experts"],
    params["expert_units"],
    params["tower_units"],
    params["dropout"],
    params["l2"],
    params["embedding_dim"],
  )

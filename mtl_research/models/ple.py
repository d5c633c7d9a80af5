"""CGC and PLE: Tang, Liu, Zhao & Gong, "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
(MTL) Model for Personalized Recommendations", RecSys 2020: customized gate control (CGC) and its
multi-level extension (PLE).

Customized gate control (one level): each task k has its own experts E_k (`--task_experts`) and shares
the experts E_s (`--shared_experts`); its gate mixes only its own and the shared experts,

  g^k(x) = w^k(x)·S^k(x),   w^k(x) = softmax(W_g^k x),   S^k(x) = [E_k,1(x), ..., E_s,1(x), ...],
  y^k = t^k(g^k(x)).

Progressive layered extraction stacks `--ple_levels` such levels (1 = CGC): at level j, task k's
experts and gate read task k's output of level j − 1, the shared experts read the shared output of
level j − 1, and at every level but the last a shared gate mixes all experts of the level (every
task's and the shared ones) into that shared output: g^{k,j}(x) = w^{k,j}(g^{k,j−1}(x))·S^{k,j}(x).
Experts are ReLU Dense stacks (`--expert_units`), gates softmax layers without bias, and each task
ends in its tower (`--tower_units`) and output layer.

What the model declares (models/base.py), by connectivity: the encoder, every shared expert, the
shared gates, and the task experts of every level but the last are shared (a task's experts at an
intermediate level feed the shared gate, hence every task), and so are the tasks' gates below the
last two levels (they feed intermediate task experts); a task's gates at the last two levels, its
experts at the last level, its tower and its output layer are its own. Z is the cut at the last
level: the tasks' inputs to it (the encoded features when there is one level) and the last level's
shared experts' outputs. GradNorm's layer: the last kernel of every last-level shared expert. Experts
are `ExpertBank`s (models/experts.py), one batched product per layer: below the last level all of a
level's experts (all shared) in one bank; at the last level the shared experts and each task's own.
TensorBoard: each task's mean last-level gate weight per expert (`gate/<task>/task_expert_<i>`,
`gate/<task>/shared_expert_<i>`).

Defaults (ours; the paper tunes them per dataset): two levels, two shared experts and one expert per
task at each, experts of 64 units and towers of 32: 24,232 parameters on the tutorial data (one
level, CGC: 7,168), against shared-bottom's 9,924 and MMoE's 10,084 (the run logs its counts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.features import FeatureSpec
from mtl_research.models import base
from mtl_research.models import experts as experts_lib
from mtl_research.models.registry import ARCHITECTURES
from mtl_research.params import INT, Param

PARAMS = (
  Param("ple_levels", INT, 2, "PLE: extraction levels (1 = CGC).", lower=1),
  Param("shared_experts", INT, 2, "PLE: shared experts per level.", lower=1),
  Param("task_experts", INT, 1, "PLE: experts of each task per level.", lower=1),
  base.EXPERT_UNITS,
  base.TOWER_UNITS,
  *base.COMMON_PARAMS,
)


def _gate(units: int, regularizer, name: str) -> tf.keras.layers.Dense:
  return tf.keras.layers.Dense(units, use_bias=False, kernel_regularizer=regularizer, name=name)


class PLE(base.MultiTaskModel):
  """Task-specific and shared experts per level, per-task gates over their own and the shared experts."""

  def __init__(
    self,
    task_specs: Sequence[tasks_lib.TaskSpec],
    feature_spec: FeatureSpec,
    levels: int,
    shared_experts: int,
    task_experts: int,
    expert_units: Sequence[int],
    tower_units: Sequence[int],
    dropout: float = 0.0,
    l2: float = 0.0,
    embedding_dim: int = 8,
  ):
    super().__init__(task_specs, feature_spec, embedding_dim)
    self.levels, self.num_shared, self.num_task = int(levels), int(shared_experts), int(task_experts)
    self.names = [task.name for task in task_specs]
    regularizer = tf.keras.regularizers.L2(l2) if l2 > 0 else None

    # Below the last level every expert is shared (a task's experts feed the shared gate, hence every
    # task): one bank per level, task k's experts at [k·m, (k + 1)·m), then the shared ones. At the
    # last level a task's experts are its own, so they are banks of their own, apart from the shared.
    every = len(self.names) * self.num_task + self.num_shared
    self.lower = base.track(
      self,
      "bank_",
      [experts_lib.ExpertBank(every, expert_units, l2, dropout, name=f"level{j}_experts") for j in range(levels - 1)],
    )
    last = self.levels - 1
    self.last_shared = experts_lib.ExpertBank(
      self.num_shared, expert_units, l2, dropout, name=f"level{last}_shared_experts"
    )
    self.last_own = base.track(
      self,
      "own_",
      {
        n: experts_lib.ExpertBank(self.num_task, expert_units, l2, dropout, name=f"level{last}_{n}_experts")
        for n in self.names
      },
    )
    self.task_gates = [
      base.track(
        self,
        f"level{j}_gate_",
        {n: _gate(self.num_task + self.num_shared, regularizer, f"l{j}_gate_{n}") for n in self.names},
      )
      for j in range(self.levels)
    ]
    self.shared_gates = base.track(
      self, "shared_gate_", [_gate(every, regularizer, f"l{j}_shared_gate") for j in range(self.levels - 1)]
    )
    self.towers = {n: base.dense_stack(self, f"tower_{n}_", tower_units, l2, dropout) for n in self.names}
    self.heads = base.output_layers(self, task_specs, l2)

  def _extract(self, features, training: bool):
    """(per-task inputs of the towers, Z, the last level's gate weights per task)."""
    x = self.encoder(features)
    task_in = {n: x for n in self.names}
    shared_in = x
    m, first_shared = self.num_task, len(self.names) * self.num_task
    for j, bank in enumerate(self.lower):
      if j == 0:
        inputs = x  # every expert reads the features
      else:  # each expert reads its task's (or the shared) output of the level below
        rows = [task_in[n] for n in self.names for _ in range(m)] + [shared_in] * self.num_shared
        inputs = tf.stack(rows, axis=1)
      out = bank(inputs, training=training)  # [batch, every expert, width]
      outputs = {}
      for k, n in enumerate(self.names):
        weights = tf.nn.softmax(self.task_gates[j][n](task_in[n]), axis=-1)
        outputs[n] = base.mix(weights, tf.concat([out[:, k * m : (k + 1) * m], out[:, first_shared:]], axis=1))
      shared_in = base.mix(tf.nn.softmax(self.shared_gates[j](shared_in), axis=-1), out)
      task_in = outputs
    # The last level. The cut Z: what its task-specific experts and gates read, and its shared experts' outputs.
    inputs = [x] if self.levels == 1 else [task_in[n] for n in self.names]
    shared_out = self.last_shared(shared_in, training=training)
    representation = tf.concat([*inputs, experts_lib.flatten(shared_out)], axis=-1)
    pieces = tf.split(
      representation, [int(t.shape[-1]) for t in inputs] + [shared_out.shape[1] * shared_out.shape[2]], -1
    )
    task_in = {n: pieces[0 if self.levels == 1 else k] for k, n in enumerate(self.names)}
    shared_out = tf.reshape(pieces[-1], [-1, shared_out.shape[1], shared_out.shape[2]])
    tops, gates = {}, {}
    for n in self.names:
      gates[n] = tf.nn.softmax(self.task_gates[-1][n](task_in[n]), axis=-1)
      own = self.last_own[n](task_in[n], training=training)
      tops[n] = base.mix(gates[n], tf.concat([own, shared_out], axis=1))
    return tops, representation, gates

  def forward(
    self, features: Mapping[str, tf.Tensor], training: bool = False
  ) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    tops, representation, _ = self._extract(features, training)
    outputs = {}
    for n in self.names:
      layers, drops = self.towers[n]
      outputs[n] = self.heads[n](base.run_stack(layers, drops, tops[n], training))
    return outputs, representation

  def summaries(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Each task's mean last-level gate weight per expert: its own experts first, then the shared ones."""
    _, _, gates = self._extract(features, False)
    result = {}
    for n, weights in gates.items():
      mean = tf.reduce_mean(weights, axis=0)
      result.update({f"gate/{n}/task_expert_{i}": mean[i] for i in range(self.num_task)})
      result.update({f"gate/{n}/shared_expert_{i}": mean[self.num_task + i] for i in range(self.num_shared)})
    return result

  @property
  def shared_variables(self) -> list[tf.Variable]:
    result = list(self.encoder.trainable_variables)
    for j, bank in enumerate(self.lower):
      result += list(bank.trainable_variables) + list(self.shared_gates[j].trainable_variables)
      if j < self.levels - 2:  # a task's gate feeding intermediate task experts reaches every task too
        result += [v for n in self.names for v in self.task_gates[j][n].trainable_variables]
    return result + list(self.last_shared.trainable_variables)

  def task_variables(self, task: str) -> list[tf.Variable]:
    layers, _ = self.towers[task]
    gates = [
      v for j in range(max(self.levels - 2, 0), self.levels) for v in self.task_gates[j][task].trainable_variables
    ]
    tower = [v for layer in layers for v in layer.trainable_variables]
    return gates + list(self.last_own[task].trainable_variables) + tower + list(self.heads[task].trainable_variables)

  @property
  def gradnorm_variables(self) -> list[tf.Variable]:
    return [self.last_shared.last_kernel]


@ARCHITECTURES.register("ple", params=PARAMS)
def build(task_specs: Sequence[tasks_lib.TaskSpec], feature_spec: FeatureSpec, params: Mapping[str, Any]) -> PLE:
  """Progressive layered extraction (Tang et al., RecSys 2020); --ple_levels=1 is CGC."""
  return PLE(
    task_specs,
    feature_spec,
    params["ple_levels"],
    params["shared_experts"],
    params["task_experts"],
    params["expert_units"],
    params["tower_units"],
    params["dropout"],
    params["l2"],
    params["embedding_dim"],
  )

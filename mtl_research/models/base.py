"""What the trainer and the balancers may assume about any multi-task architecture."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.features import EMBEDDED, NUMERIC, FeatureSpec
from mtl_research.params import FLOAT, INT, INTS, Param

# Flags every architecture reads (one Param object each, so that the flag is defined once).
COMMON_PARAMS = (
  Param(
    "dropout",
    FLOAT,
    0.0,
    "Dropout rate after each hidden layer (trunk, experts, towers), in [0, 1).",
    lower=0.0,
    below=1.0,
  ),
  Param("l2", FLOAT, 0.0, "L2 penalty on every Dense kernel.", lower=0.0),
  Param("embedding_dim", INT, 8, "Width of the embedding of each embedded categorical column.", lower=1),
)


# Flags of the architectures built from experts and towers (mmoe, ple).
EXPERT_UNITS = Param("expert_units", INTS, "64", "Widths of each expert's ReLU Dense layers.", lower=1)
TOWER_UNITS = Param(
  "tower_units", INTS, "32", "Widths of each task tower's ReLU Dense layers (before its output layer).", lower=1
)


def mix(gates: tf.Tensor, experts: tf.Tensor) -> tf.Tensor:
  """Σ_i gates[:, i]·experts[:, i]: the gate-weighted sum of expert outputs ([batch, n] and [batch, n, d])."""
  return tf.einsum("be,bed->bd", gates, experts)


def dense_stack(
  owner: tf.keras.layers.Layer, prefix: str, units: Sequence[int], l2: float, dropout: float
) -> tuple[list, list]:
  """ReLU Dense layers of widths `units` and their dropouts (none at rate 0), tracked on `owner`."""
  regularizer = tf.keras.regularizers.L2(l2) if l2 > 0 else None
  layers = track(
    owner,
    prefix,
    [
      tf.keras.layers.Dense(width, activation="relu", kernel_regularizer=regularizer, name=f"{prefix}{i}")
      for i, width in enumerate(units)
    ],
  )
  dropouts = track(owner, f"{prefix}dropout_", [Dropout(dropout) for _ in layers] if dropout > 0 else [])
  return layers, dropouts


def output_layers(owner: tf.keras.layers.Layer, task_specs: Sequence[tasks_lib.TaskSpec], l2: float) -> dict:
  """Each task's linear output layer (`head_<task>`: its logits, 1 unit for regression), tracked on `owner`."""
  regularizer = tf.keras.regularizers.L2(l2) if l2 > 0 else None
  return track(
    owner,
    "head_",
    {
      task.name: tf.keras.layers.Dense(task.output_units, kernel_regularizer=regularizer, name=f"head_{task.name}")
      for task in task_specs
    },
  )


def run_stack(layers: Sequence, dropouts: Sequence, hidden: tf.Tensor, training: bool) -> tf.Tensor:
  for i, layer in enumerate(layers):
    hidden = layer(hidden)
    if dropouts:
      hidden = dropouts[i](hidden, training=training)
  return hidden


def track(owner: tf.keras.layers.Layer, prefix: str, layers):
  """Attaches each of `layers` (a list or dict) to `owner` as an attribute and returns them.

  Keras 3 does not expose layers kept in a Python list or dict as checkpoint
  children, so without this a checkpoint of the model alone would not contain
  their weights (only a checkpoint that also holds the optimizer would).
  """
  items = layers.items() if isinstance(layers, dict) else enumerate(layers)
  for key, layer in items:
    setattr(owner, f"{prefix}{key}", layer)
  return layers


class RandomState(tf.Module):
  """The states of a model's Keras SeedGenerators (dropout masks), for its checkpoint.

  Keras 3 keeps each generator's state in a variable that no checkpoint of the
  model contains, so without this a resumed run would draw the dropout masks
  of step 0 again. The order of `states` is the model's layer order.
  """

  def __init__(self, states: Sequence[tf.Variable]):
    super().__init__(name="random_state")
    self.states = list(states)


def random_state(model: tf.keras.Model) -> RandomState:
  """The SeedGenerator states of `model` (built), as one checkpointable object."""
  return RandomState([v for v in model.non_trainable_variables if v.name == "seed_generator_state"])


class Dropout(tf.keras.layers.Layer):
  """Keras's inverted dropout, with masks that also differ between tf.distribute replicas.

  Keras's `Dropout` draws its seed from a SeedGenerator whose state is a
  mirrored variable that every replica advances alike, so replica r would drop
  the same units of its rows as replica 0 of its own. The replica's id is added
  to the seed; on one device (replica 0) the masks are Keras's, bit for bit.
  """

  # Philox named explicitly: it is what "auto_select" picks on CPU and GPU (the same bits), but
  # XLA:CPU compiles the named algorithm far faster (mtl-benchmark's `dropout_philox_vs_auto_xla`).
  rng_alg = "philox"

  def __init__(self, rate: float, **kwargs):
    super().__init__(**kwargs)
    self.rate = float(rate)
    self.seed_generator = tf.keras.random.SeedGenerator()

  def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
    if not training or self.rate == 0.0:
      return inputs
    seed = self.seed_generator.next()
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
      replica = tf.cast(context.replica_id_in_sync_group, seed.dtype)
      seed = seed + tf.stack([replica, tf.zeros_like(replica)])
    if seed.dtype != tf.int32:  # as Keras: stateless ops take int32 seeds
      seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed, rng_alg=self.rng_alg)


class FeatureEncoder(tf.keras.layers.Layer):
  """Numeric features as they are, plus one learned embedding per embedded column."""

  def __init__(self, feature_spec: FeatureSpec, embedding_dim: int, **kwargs):
    super().__init__(**kwargs)
    self.embeddings = track(
      self,
      "embedding_",
      [
        tf.keras.layers.Embedding(size, embedding_dim, name=f"embedding_{i}")
        for i, size in enumerate(feature_spec.embedded_vocab_sizes)
      ],
    )

  def call(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
    parts = [tf.cast(features[NUMERIC], tf.float32)]
    if self.embeddings:
      indices = features[EMBEDDED]
      parts += [layer(indices[:, i]) for i, layer in enumerate(self.embeddings)]
    return tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]


class MultiTaskModel(tf.keras.Model):
  """A model mapping a features dict to a dict of per-task logits.

  Subclasses must create their layers in `__init__` (layers held in a list or
  dict go through `track`), start `forward` with
  `self.encoder(features)`, and declare from their own structure what the
  balancers and the step need (the encoder's embeddings are shared):

  * `shared_variables`: every trainable variable that more than one task's loss
    depends on (gradient-aggregation balancers combine per-task gradients here);
  * `task_variables(task)`: the trainable variables only that task's loss
    depends on (its head, tower, gate);
  * `gradnorm_variables`: GradNorm's W, the variables of the last shared
    layer (one kernel for a trunk; for an architecture with several parallel
    shared blocks, the last layer of each, in a fixed order);
  * `forward(features, training)`: the outputs and the shared representation
    Z they are computed from, for balancers that weigh the tasks' gradients
    with respect to Z (`call` returns the outputs only). Z must be a cut:
    every path from a shared variable to a task's output passes through it
    (the trunk's output; for a mixture of experts whose gates read the input,
    the input and the experts' outputs, concatenated).

  Shared and task variables together are every trainable variable, each in
  exactly one of them; tests/test_architectures.py checks every registered
  architecture's declaration against what its losses actually reach.
  """

  def __init__(
    self, task_specs: Sequence[tasks_lib.TaskSpec], feature_spec: FeatureSpec, embedding_dim: int = 8, **kwargs
  ):
    super().__init__(**kwargs)
    self.task_specs = tuple(task_specs)
    self.feature_spec = feature_spec
    self.encoder = FeatureEncoder(feature_spec, embedding_dim)

  def forward(
    self, features: Mapping[str, tf.Tensor], training: bool = False
  ) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """(per-task outputs, the shared representation Z [batch, d] every head reads)."""
    raise NotImplementedError

  def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
    return self.forward(features, training)[0]

  @property
  def shared_variables(self) -> list[tf.Variable]:
    raise NotImplementedError

  def task_variables(self, task: str) -> list[tf.Variable]:
    raise NotImplementedError

  def summaries(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Named scalars of a forward pass on `features` (an MoE's gate utilization), logged with the train scalars.

    The step computes them once per loop call, on the last step's rows without
    dropout, averaged over replicas; the default is none.
    """
    del features
    return {}

  @property
  def gradnorm_variables(self) -> list[tf.Variable]:
    raise NotImplementedError

  def parameter_counts(self) -> dict:
    """{"total": n, "shared": n, "per_task": {task: n}}: trainable scalars, for comparing architectures."""

    def size(variables) -> int:
      return int(sum(int(np.prod(v.shape)) for v in variables))

    return {
      "total": size(self.trainable_variables),
      "shared": size(self.shared_variables),
      "per_task": {task.name: size(self.task_variables(task.name)) for task in self.task_specs},
    }

  def build_for(self, features: Mapping[str, tf.Tensor]) -> None:
    """Creates all variables by running one forward pass on example features."""
    self({k: v[:1] for k, v in features.items()}, training=False)

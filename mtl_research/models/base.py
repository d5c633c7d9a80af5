"""What the trainer and the balancers may assume about any multi-task architecture."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.features import EMBEDDED, NUMERIC, FeatureSpec


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
  dict go through `track`), start `call` with
  `self.encoder(features)`, and tell the balancers which variables are shared
  between tasks (the encoder's embeddings are):

  * `shared_variables`: every trainable variable that more than one task's loss
    depends on (gradient-aggregation balancers combine per-task gradients here);
  * `last_shared_kernel`: the kernel of the last shared layer, the W of GradNorm;
  * `forward(features, training)`: the outputs and the shared representation
    Z they are computed from (the trunk's output), for balancers that weigh
    the tasks' gradients with respect to Z (`call` returns the outputs only).
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

  @property
  def last_shared_kernel(self) -> tf.Variable:
    raise NotImplementedError

  def build_for(self, features: Mapping[str, tf.Tensor]) -> None:
    """Creates all variables by running one forward pass on example features."""
    self({k: v[:1] for k, v in features.items()}, training=False)

"""What the trainer and the balancers may assume about any multi-task architecture."""

from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

from mtl_research import tasks as tasks_lib


def encode_features(features: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """Concatenates the feature groups (sorted by name) into one float matrix."""
  return tf.concat([tf.cast(features[k], tf.float32) for k in sorted(features)], axis=-1)


class MultiTaskModel(tf.keras.Model):
  """A model mapping a features dict to a dict of per-task logits.

  Subclasses must create their layers in `__init__` and define `call`, and
  tell the balancers which variables are shared between tasks:

  * `shared_variables`: every trainable variable that more than one task's loss
    depends on (gradient-aggregation balancers combine per-task gradients here);
  * `last_shared_kernel`: the kernel of the last shared layer, the W of GradNorm.
  """

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], **kwargs):
    super().__init__(**kwargs)
    self.task_specs = tuple(task_specs)

  @property
  def shared_variables(self) -> list[tf.Variable]:
    raise NotImplementedError

  @property
  def last_shared_kernel(self) -> tf.Variable:
    raise NotImplementedError

  def build_for(self, features: Mapping[str, tf.Tensor]) -> None:
    """Creates all variables by running one forward pass on example features."""
    self({k: v[:1] for k, v in features.items()}, training=False)

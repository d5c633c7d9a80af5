"""Hard parameter sharing (Caruana 1997): a shared Dense trunk and one Dense head per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.features import FeatureSpec
from mtl_research.models import base
from mtl_research.models.registry import ARCHITECTURES
from mtl_research.params import INTS, Param

keras = tf.keras

PARAMS = (
  Param("hidden_units", INTS, "128,64", "Widths of the shared trunk's Dense layers.", lower=1),
  *base.COMMON_PARAMS,
)


class SharedBottom(base.MultiTaskModel):
  """Dense(ReLU) trunk → per-task Dense head emitting logits (1 unit for regression)."""

  def __init__(
    self,
    task_specs: Sequence[tasks_lib.TaskSpec],
    feature_spec: FeatureSpec,
    hidden_units: Sequence[int],
    dropout: float = 0.0,
    l2: float = 0.0,
    embedding_dim: int = 8,
  ):
    super().__init__(task_specs, feature_spec, embedding_dim)
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    self.trunk = base.track(
      self,
      "shared_",
      [
        keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer, name=f"shared_{i}")
        for i, units in enumerate(hidden_units)
      ],
    )
    # Tracked too: their random-number state belongs in the checkpoint.
    self.dropouts = base.track(self, "dropout_", [base.Dropout(dropout) for _ in self.trunk] if dropout > 0 else [])
    self.heads = base.output_layers(self, task_specs, l2)

  def forward(
    self, features: Mapping[str, tf.Tensor], training: bool = False
  ) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    hidden = self.encoder(features)
    for i, layer in enumerate(self.trunk):
      hidden = layer(hidden)
      if self.dropouts:
        hidden = self.dropouts[i](hidden, training=training)
    return {name: head(hidden) for name, head in self.heads.items()}, hidden

  @property
  def shared_variables(self) -> list[tf.Variable]:
    return list(self.encoder.trainable_variables) + [v for layer in self.trunk for v in layer.trainable_variables]

  def task_variables(self, task: str) -> list[tf.Variable]:
    return list(self.heads[task].trainable_variables)

  @property
  def last_shared_kernel(self) -> tf.Variable:
    return self.trunk[-1].kernel

  @property
  def gradnorm_variables(self) -> list[tf.Variable]:
    return [self.last_shared_kernel]


@ARCHITECTURES.register("shared_bottom", params=PARAMS)
def build(
  task_specs: Sequence[tasks_lib.TaskSpec], feature_spec: FeatureSpec, params: Mapping[str, Any]
) -> SharedBottom:
  """Shared Dense trunk with one linear head per task (the tutorial's architecture)."""
  return SharedBottom(
    task_specs, feature_spec, params["hidden_units"], params["dropout"], params["l2"], params["embedding_dim"]
  )

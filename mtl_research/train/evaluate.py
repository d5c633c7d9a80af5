"""Evaluation: batched predictions in one tf.function call, exact metrics in NumPy."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from mtl_research import metrics as metrics_lib
from mtl_research.data.bundle import Split
from mtl_research.data.pipeline import eval_batches
from mtl_research.models.base import MultiTaskModel


class Evaluator:
  """Computes every task's metrics on a split with the current model weights."""

  def __init__(self, model: MultiTaskModel, batch_size: int,
               target_scale: Mapping[str, tuple[float, float]] | None = None):
    self.model = model
    self.batch_size = batch_size
    # Regression targets the model saw as (y − mean) / std; metrics use original units.
    self.target_scale = dict(target_scale or {})
    self._datasets: dict[int, tf.data.Dataset] = {}
    self._predict = tf.function(self._predict_all)

  def _predict_all(self, dataset: tf.data.Dataset) -> dict[str, tf.Tensor]:
    outputs = {task.name: tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False)
               for task in self.model.task_specs}
    index = 0
    for features, _ in dataset:
      batch_outputs = self.model(features, training=False)
      outputs = {name: array.write(index, batch_outputs[name]) for name, array in outputs.items()}
      index += 1
    return {name: array.concat() for name, array in outputs.items()}

  def predict(self, split: Split) -> dict[str, np.ndarray]:
    """Raw head outputs (regression values, class logits) for every row of `split`."""
    key = id(split)
    if key not in self._datasets:
      self._datasets[key] = eval_batches(split, self.batch_size)
    return {name: value.numpy() for name, value in self._predict(self._datasets[key]).items()}

  def original_units(self, task_name: str, values: np.ndarray) -> np.ndarray:
    """Regression values (labels or predictions) back in the target's original units."""
    mean, std = self.target_scale.get(task_name, (0.0, 1.0))
    return np.asarray(values, np.float64) * std + mean

  def training_losses(self, results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Each task's loss in the units the model trains on (standardized targets' MSE).

    Metrics are reported in original units; losses compared across tasks (model
    selection, the eval loss curves next to the training ones) must not be, or a
    target measured in large units would outweigh every other task.
    """
    losses = {}
    for task in self.model.task_specs:
      loss = results[task.name][task.loss_metric]
      if task.name in self.target_scale:
        loss /= self.target_scale[task.name][1] ** 2
      losses[task.name] = loss
    return losses

  def evaluate(self, split: Split) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} on `split`, regression metrics in original units."""
    outputs = self.predict(split)
    results = {}
    for task in self.model.task_specs:
      labels, out = split.labels[task.name], outputs[task.name]
      if task.name in self.target_scale:
        labels, out = self.original_units(task.name, labels), self.original_units(task.name, out)
      results[task.name] = metrics_lib.task_metrics(task, labels, out)
    return results


def mean_loss(losses: Mapping[str, float]) -> float:
  """Mean over tasks of the validation losses (the default selection score)."""
  return float(np.mean(list(losses.values())))

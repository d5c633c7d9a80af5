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

  def __init__(self, model: MultiTaskModel, batch_size: int):
    self.model = model
    self.batch_size = batch_size
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

  def evaluate(self, split: Split) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} on `split`."""
    outputs = self.predict(split)
    return {task.name: metrics_lib.task_metrics(task, split.labels[task.name], outputs[task.name])
            for task in self.model.task_specs}


def mean_loss(results: Mapping[str, Mapping[str, float]], model: MultiTaskModel) -> float:
  """Mean over tasks of each task's loss on a split (the default selection score)."""
  return float(np.mean([results[t.name][t.loss_metric] for t in model.task_specs]))

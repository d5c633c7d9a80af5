"""Task specifications and their per-example losses.

A task is a name, a kind and (for classification) a number of classes. Heads emit
logits; the loss path never applies a softmax (sparse softmax cross-entropy works
on logits, which is both cheaper and numerically safer).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from mtl_research import metrics as metrics_lib
from mtl_research.errors import UserError

REGRESSION = "regression"
CLASSIFICATION = "classification"
KINDS = (REGRESSION, CLASSIFICATION)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task: its name, kind and, for classification, its number of classes."""

  name: str
  kind: str
  num_classes: int = 0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise UserError(f"Task {self.name!r} has kind {self.kind!r}; expected one of {', '.join(KINDS)}.")
    if self.kind == CLASSIFICATION and self.num_classes < 2:
      raise UserError(f"Classification task {self.name!r} needs at least 2 classes, got {self.num_classes}.")

  @property
  def is_regression(self) -> bool:
    """For metrics.py, which cannot import this module's REGRESSION (this module imports it)."""
    return self.kind == REGRESSION

  @property
  def output_units(self) -> int:
    """Width of the task head: 1 for regression, one logit per class otherwise."""
    return 1 if self.kind == REGRESSION else self.num_classes

  @property
  def label_dtype(self) -> tf.DType:
    return tf.float32 if self.kind == REGRESSION else tf.int32

  @property
  def loss_metric(self) -> str:
    """The metric that equals this task's training loss on a split."""
    return metrics_lib.MSE if self.kind == REGRESSION else metrics_lib.CROSS_ENTROPY

  @property
  def metrics(self) -> tuple[str, ...]:
    """The metrics evaluation reports for this task (metrics.task_metrics computes them)."""
    if self.kind == REGRESSION:
      return metrics_lib.REGRESSION_METRICS
    return metrics_lib.BINARY_METRICS if self.num_classes == 2 else metrics_lib.CLASSIFICATION_METRICS


def per_example_loss(task: TaskSpec, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Per-example loss of shape [batch]: squared error or softmax cross-entropy."""
  if task.kind == REGRESSION:
    return tf.square(tf.squeeze(logits, axis=-1) - labels)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)

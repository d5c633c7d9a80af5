"""Evaluation metrics in NumPy, computed on the full split's predictions.

Metrics are exact (AUC by ranks, R² from the whole split), not streaming
approximations, so that a reported number is the number a paper should print.

This module is the one home of the metric names (as metrics.json, TensorBoard
tags, --selection and the reports spell them), of which a task of each kind
reports, and of which way each one is better. It imports no TensorFlow and
nothing of the package, so that tasks.py, the flags and reports/ can all take
the names from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # tasks.py imports this module for the names; only the type is needed here
  from mtl_research import tasks as tasks_lib

MSE = "mse"
MAE = "mae"
R2 = "r2"
ACCURACY = "accuracy"
CROSS_ENTROPY = "cross_entropy"
AUC = "auc"

# What task_metrics() returns for each kind of task; AUC is defined for binary tasks only.
REGRESSION_METRICS = (MSE, MAE, R2)
CLASSIFICATION_METRICS = (ACCURACY, CROSS_ENTROPY)
BINARY_METRICS = CLASSIFICATION_METRICS + (AUC,)

HIGHER_IS_BETTER = frozenset({ACCURACY, AUC, R2})
# Metrics without the task's units (fractions, rank statistics, explained variance): the curves of
# different tasks can share one axis. The others (mse, mae, cross_entropy) scale with the task.
SCALE_FREE = frozenset({ACCURACY, AUC, R2})
LOWER_IS_BETTER = frozenset({MSE, MAE, CROSS_ENTROPY})


# Why a metric can be undefined on a split (metrics.json records it as null with this reason).
_UNDEFINED_REASONS = {
  R2: "the target values of the split are all equal, and R² divides by their variance",
  AUC: "the split holds examples of one class only, and AUC ranks one class against the other",
}


def undefined_reason(metric: str, rows: str = "the split") -> str:
  """Why `metric` came out NaN on `rows` (every metric is NaN without an example of the task)."""
  reason = _UNDEFINED_REASONS.get(metric, "the split has no example with this task's target")
  return reason.replace("the split", rows, 1)


def regression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
  labels = np.asarray(labels, np.float64).reshape(-1)
  predictions = np.asarray(predictions, np.float64).reshape(-1)
  err = predictions - labels
  mse = float(np.mean(err**2))
  total = float(np.sum((labels - labels.mean()) ** 2))
  # R² is undefined for a constant target; NaN says so instead of a fake number. "Constant" up to
  # float32 round-off: labels standardized in float32 and mapped back differ by ~1e-7 relative.
  scale = max(float(np.mean(labels**2)), 1e-300) if len(labels) else 1.0
  r2 = 1.0 - float(np.sum(err**2)) / total if total > 1e-12 * len(labels) * scale else float("nan")
  return {MSE: mse, MAE: float(np.mean(np.abs(err))), R2: r2}


def log_softmax(logits: np.ndarray) -> np.ndarray:
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def binary_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve by the Mann-Whitney rank statistic (ties averaged)."""
  labels = np.asarray(labels).reshape(-1).astype(bool)
  num_pos, num_neg = int(labels.sum()), int((~labels).sum())
  if num_pos == 0 or num_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = np.asarray(scores)[order]
  ranks = np.empty(len(scores), np.float64)
  # Average ranks within runs of equal scores.
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  avg = first + (counts + 1) / 2.0
  ranks[order] = np.repeat(avg, counts)
  return float((ranks[labels].sum() - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


def classification_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  logp = log_softmax(logits)
  result = {
    ACCURACY: float(np.mean(np.argmax(logp, axis=-1) == labels)),
    CROSS_ENTROPY: float(-np.mean(logp[np.arange(len(labels)), labels])),
  }
  if logp.shape[-1] == 2:
    result[AUC] = binary_auc(labels, logp[:, 1] - logp[:, 0])
  return result


def task_metrics(task: tasks_lib.TaskSpec, labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
  """All metrics of `task` (`task.metrics`) for one split, from labels and the head's raw outputs."""
  if task.is_regression:
    return regression_metrics(labels, outputs)
  return classification_metrics(labels, outputs)

"""Evaluation metrics in NumPy, computed on the full split's predictions.

Metrics are exact (AUC by ranks, R² from the whole split), not streaming
approximations, so that a reported number is the number a paper should print.
"""

from __future__ import annotations

import numpy as np

from mtl_research import tasks as tasks_lib

HIGHER_IS_BETTER = frozenset({"accuracy", "auc", "r2"})
LOWER_IS_BETTER = frozenset({"mse", "mae", "cross_entropy"})


def regression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
  labels = np.asarray(labels, np.float64).reshape(-1)
  predictions = np.asarray(predictions, np.float64).reshape(-1)
  err = predictions - labels
  mse = float(np.mean(err**2))
  total = float(np.sum((labels - labels.mean()) ** 2))
  # R² is undefined for a constant target; NaN says so instead of a fake number.
  r2 = 1.0 - float(np.sum(err**2)) / total if total > 0 else float("nan")
  return {"mse": mse, "mae": float(np.mean(np.abs(err))), "r2": r2}


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
      "accuracy": float(np.mean(np.argmax(logp, axis=-1) == labels)),
      "cross_entropy": float(-np.mean(logp[np.arange(len(labels)), labels])),
  }
  if logp.shape[-1] == 2:
    result["auc"] = binary_auc(labels, logp[:, 1] - logp[:, 0])
  return result


def task_metrics(task: tasks_lib.TaskSpec, labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
  """All metrics of `task` for one split, from labels and the head's raw outputs."""
  if task.kind == tasks_lib.REGRESSION:
    return regression_metrics(labels, outputs)
  return classification_metrics(labels, outputs)

"""The in-memory form every dataset source produces: task specs and three splits."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from mtl_research import tasks as tasks_lib
from mtl_research.errors import UserError

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Split:
  """Rows of one split: named feature arrays and one label array per task."""

  features: Mapping[str, np.ndarray]  # "numeric": float32 [N, D]
  labels: Mapping[str, np.ndarray]  # task name -> [N] (float32 or int32)

  def __len__(self) -> int:
    return len(next(iter(self.labels.values())))


@dataclasses.dataclass(frozen=True)
class DatasetBundle:
  """What a dataset source returns: the tasks and the train/val/test splits."""

  tasks: tuple[tasks_lib.TaskSpec, ...]
  train: Split
  val: Split
  test: Split

  @property
  def task_names(self) -> list[str]:
    return [task.name for task in self.tasks]

  def split(self, name: str) -> Split:
    return getattr(self, name)

  def validate(self, batch_size: int) -> None:
    """Checks shapes and label ranges; raises UserError naming the problem."""
    if not self.tasks:
      raise UserError("The dataset defines no tasks.")
    for split_name in SPLITS:
      split = self.split(split_name)
      num = len(split)
      if num == 0:
        raise UserError(f"The {split_name} split is empty.")
      for key, array in split.features.items():
        if len(array) != num:
          raise UserError(f"Feature {key!r} of the {split_name} split has {len(array)} rows, labels have {num}.")
      for task in self.tasks:
        _check_labels(task, split.labels[task.name], split_name)
    if len(self.train) < batch_size:
      raise UserError(
          f"The train split has {len(self.train)} rows, fewer than one batch (--batch_size={batch_size}).")


def _check_labels(task: tasks_lib.TaskSpec, labels: np.ndarray, split_name: str) -> None:
  if task.kind == tasks_lib.REGRESSION:
    if not np.all(np.isfinite(labels)):
      raise UserError(f"Task {task.name!r} has non-finite targets in the {split_name} split.")
  elif labels.min() < 0 or labels.max() >= task.num_classes:
    raise UserError(
        f"Task {task.name!r} has labels outside [0, {task.num_classes - 1}] in the {split_name} split.")

"""The in-memory form every dataset source produces: task specs and three splits.

Features come in two groups: "numeric", a float32 matrix the model reads as is
(standardized numbers, one-hot categories, missing indicators), and optionally
"embedded", an int32 matrix of category indices for columns the model embeds.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from typing import Any

import numpy as np

from mtl_research import tasks as tasks_lib
from mtl_research.data.preprocessing import Preprocessing
from mtl_research.data.summary import DataSummary
from mtl_research.errors import UserError
from mtl_research.features import EMBEDDED, NUMERIC, FeatureSpec  # noqa: F401  (re-exported)

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Split:
  """Rows of one split: named feature arrays and one label array per task."""

  features: Mapping[str, np.ndarray]  # NUMERIC: float32 [N, D]; EMBEDDED (optional): int32 [N, E]
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
  feature_spec: FeatureSpec | None = None  # None: numeric features only (derived from train)
  # Regression targets given to the model as (y − mean) / std: task -> (mean, std).
  # Metrics are reported in original units by undoing this.
  target_scale: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
  class_names: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  # The fitted preprocessing of a tabular source (vocabularies, means, label maps), saved
  # in the run dir so that a resumed or evaluated run encodes data the same way.
  fitted: Preprocessing | None = None
  # What a tabular source read and inferred (rows, feature types, classes, unseen categories),
  # which the trainer prints and keeps in the run dir; None for generated data.
  summary: DataSummary | None = None

  @property
  def preprocessing(self) -> dict[str, Any] | None:
    """The JSON document of `fitted`: what preprocessing.json holds.

    For code that stores or compares the document rather than reading it:
    `run_dir.prepare` writes it. Read `fitted` instead.
    """
    return self.fitted.to_json() if self.fitted is not None else None

  @property
  def features(self) -> FeatureSpec:
    return self.feature_spec or FeatureSpec.of_numeric(self.train.features)

  def only(self, task_name: str) -> DatasetBundle:
    """The same data with one task: the single-task baseline of a multi-task study."""
    if task_name not in self.task_names:
      raise UserError(
        f"--single_task={task_name} is not a task of this dataset (its tasks: {', '.join(self.task_names)})."
      )
    keep = lambda mapping: {k: v for k, v in mapping.items() if k == task_name}  # noqa: E731
    splits = [Split(s.features, keep(s.labels)) for s in (self.train, self.val, self.test)]
    return dataclasses.replace(
      self,
      tasks=tuple(t for t in self.tasks if t.name == task_name),
      train=splits[0],
      val=splits[1],
      test=splits[2],
      target_scale=keep(self.target_scale),
      class_names=keep(self.class_names),
      fitted=self.fitted.with_tasks([task_name]) if self.fitted is not None else None,
      summary=self.summary.with_tasks([task_name]) if self.summary is not None else None,
    )

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
      raise UserError(f"The train split has {len(self.train)} rows, fewer than one batch (--batch_size={batch_size}).")


def _check_labels(task: tasks_lib.TaskSpec, labels: np.ndarray, split_name: str) -> None:
  if task.kind == tasks_lib.REGRESSION:
    if not np.all(np.isfinite(labels)):
      raise UserError(f"Task {task.name!r} has non-finite targets in the {split_name} split.")
  elif labels.min() < 0 or labels.max() >= task.num_classes:
    raise UserError(f"Task {task.name!r} has labels outside [0, {task.num_classes - 1}] in the {split_name} split.")

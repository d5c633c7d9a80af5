"""Model selection: which checkpoint's test metrics a run reports (`--selection`).

  mean_loss     the lowest mean over tasks of the validation loss (MSE of the
                standardized targets, or cross-entropy: the units the model
                trains on, so that no task's units dominate), the default;
  TASK:METRIC   the best value of one validation metric, e.g. income:auc
                (higher is better for accuracy, auc, r2; lower for mse, mae,
                cross_entropy);
  last          no selection: the last step.

Validation is computed every --eval_every steps and at the end; the best
checkpoint is kept in <run_dir>/ckpt/best.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import math

from mtl_research import tasks as tasks_lib
from mtl_research.errors import UserError
from mtl_research.metrics import HIGHER_IS_BETTER
from mtl_research.train.evaluate import mean_loss


@dataclasses.dataclass(frozen=True)
class Criterion:
  """How to score validation results; None task means the mean loss over tasks."""

  name: str
  task: str | None = None
  metric: str = ""
  higher_is_better: bool = False

  def score(self, results: Mapping[str, Mapping[str, float]], losses: Mapping[str, float]) -> float:
    """The score of validation `results` (metrics) and `losses` (in training units)."""
    if self.task is None:
      return mean_loss(losses)
    return results[self.task][self.metric]

  def better(self, score: float, best: float) -> bool:
    if math.isnan(score):
      return False
    if math.isnan(best):
      return True
    return score > best if self.higher_is_better else score < best


def parse(selection: str, task_specs: Sequence[tasks_lib.TaskSpec]) -> Criterion | None:
  """The criterion of `--selection`, or None for `last`; UserError naming the flag."""
  if selection == "last":
    return None
  if selection == "mean_loss":
    return Criterion("mean_loss")
  task, _, metric = selection.partition(":")
  specs = {t.name: t for t in task_specs}
  if task not in specs or metric not in specs[task].metrics:
    known = ", ".join(f"{t.name}:{m}" for t in task_specs for m in t.metrics)
    raise UserError(f"--selection={selection} is not mean_loss, last or a TASK:METRIC of this run ({known}).")
  return Criterion(selection, task, metric, metric in HIGHER_IS_BETTER)

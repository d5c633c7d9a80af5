"""TensorBoard tag names: the one place that spells them.

The trainer writes them (train/loop.py), the custom-scalars layout groups them
(train/tensorboard_meta.py), and the reports read them back from event files
(reports/plots.py). A balancer's diagnostics are tagged `<name>/<task>` for a
per-task value and `<name>` for a scalar, with the names the balancer returns.
"""

from __future__ import annotations

from collections.abc import Sequence

# The `train` run: one value per task under each of these prefixes.
LOSS = "loss"  # the task's training loss (and, in the `eval` run, its validation loss)
WEIGHTED_LOSS = "weighted_loss"
WEIGHT = "weight"
TASK_PREFIXES = (LOSS, WEIGHTED_LOSS, WEIGHT)

# Scalars of the `train` run.
TOTAL_LOSS = "loss/total"
LEARNING_RATE = "learning_rate"
STEPS_PER_SEC = "steps_per_sec"
SKIPPED_BATCHES = "nan_guard/skipped_batches"

# --log_grad_conflict: per-task gradient norms and per-pair cosines on the shared variables.
CONFLICT_GRAD_NORM = "conflict/grad_norm"
CONFLICT_COS = "conflict/cos"

# The `eval` run.
MEAN_LOSS = "loss/mean"  # mean over tasks of the validation losses (what --selection=mean_loss ranks)
EVAL = "eval"
# Also in the `eval` run, written by the summarizer at the selected step (reports/hparams.py): the test
# metrics of metrics.json and the run's Δm%, which the HParams dashboard pairs with the run's values.
TEST = "test"
DELTA_M = "test/delta_m"


def per_task(prefix: str, task: str) -> str:
  return f"{prefix}/{task}"


def conflict_cos(task_a: str, task_b: str) -> str:
  return f"{CONFLICT_COS}/{task_a}__{task_b}"


def eval_metric(task: str, metric: str) -> str:
  return f"{EVAL}/{task}/{metric}"


def final_metric(task: str, metric: str) -> str:
  """A test metric of the selected checkpoint (its name avoids pytest's test_ prefix)."""
  return f"{TEST}/{task}/{metric}"


def task_pairs(task_names: Sequence[str]) -> list[tuple[int, int]]:
  """Index pairs (i < j) of the tasks, in the order the conflict cosines are logged."""
  return [(i, j) for i in range(len(task_names)) for j in range(i + 1, len(task_names))]

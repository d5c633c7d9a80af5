"""Run metadata for TensorBoard: HParams values and a custom-scalars layout.

Each run logs its hyperparameter values, under its own name as the HParams
session's trial ID (the dashboard pairs them with the final metrics when a
sweep root declares the experiment, see reports/hparams.py), and a
custom-scalars layout derived from what the run logs: its tasks (their names
and metrics), the per-task diagnostics the balancer declares
(`TrainLoop.per_task_diagnostics`) and the gradient-conflict norms when they
are logged; no balancer is named here.

The layout puts on one chart only curves that share a scale, so that no task's
units flatten another's curves:

  validation metrics    one chart per scale-free metric (accuracy, AUC, R²) with every task that
                        reports it, and one chart per task for each metric in the task's units
                        (MSE, MAE, cross-entropy)
  task losses           per task: its loss (the train and the validation curve) and its weighted loss
  weights and balancer  the task weights, each per-task diagnostic of the balancer and the
                        conflict norms, every task on one chart (they are compared across tasks)

Where several tasks share a chart, each series is named `<tag> (<run>)` by the
dashboard and every tag holds the task's name (`weight/price`), so the
tooltip tells the tasks apart, not only the marker shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
import re

from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary
from tensorboard.plugins.hparams import api as hp
import tensorflow as tf

from mtl_research import metrics as metrics_lib
from mtl_research import tags
from mtl_research.tasks import TaskSpec
from mtl_research.train.run_dir import RUN_METADATA_SUFFIX, event_files

HParamValue = bool | int | float | str

METRICS_CATEGORY = "validation metrics"
LOSSES_CATEGORY = "task losses"
BALANCER_CATEGORY = "weights and balancer"


def _chart(title: str, tag_regexes: Sequence[str]) -> layout_pb2.Chart:
  return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(tag_regexes)))


def _exact(tag: str) -> str:
  return rf"^{re.escape(tag)}$"


def _metric_charts(task_specs: Sequence[TaskSpec]) -> list[layout_pb2.Chart]:
  charts = []
  names = list(dict.fromkeys(metric for task in task_specs for metric in task.metrics))
  for metric in names:
    having = [task.name for task in task_specs if metric in task.metrics]
    if metric in metrics_lib.SCALE_FREE:
      charts.append(_chart(metric, [_exact(tags.eval_metric(task, metric)) for task in having]))
    else:
      charts.extend(_chart(f"{metric}: {task}", [_exact(tags.eval_metric(task, metric))]) for task in having)
  return charts


def layout(task_specs: Sequence[TaskSpec], per_task_prefixes: Sequence[str]) -> layout_pb2.Layout:
  """The run's custom-scalars layout (see the module docstring).

  `per_task_prefixes`: the balancer's per-task diagnostics and other per-task
  quantities compared across tasks (the conflict norms), each logged as
  `<prefix>/<task>`.
  """
  names = [task.name for task in task_specs]
  losses = []
  for name in names:
    losses.append(_chart(f"loss: {name} (train, validation)", [_exact(tags.per_task(tags.LOSS, name))]))
    losses.append(_chart(f"weighted loss: {name}", [_exact(tags.per_task(tags.WEIGHTED_LOSS, name))]))
  balancer = [
    _chart(prefix if prefix != tags.WEIGHT else "task weights", [_exact(tags.per_task(prefix, n)) for n in names])
    for prefix in [tags.WEIGHT, *per_task_prefixes]
  ]
  return layout_pb2.Layout(
    category=[
      layout_pb2.Category(title=METRICS_CATEGORY, chart=_metric_charts(task_specs)),
      layout_pb2.Category(title=LOSSES_CATEGORY, chart=losses),
      layout_pb2.Category(title=BALANCER_CATEGORY, chart=balancer),
    ]
  )


def write_run_metadata(
  logdir: str,
  trial_id: str,
  hparams: Mapping[str, HParamValue],
  task_specs: Sequence[TaskSpec],
  per_task_prefixes: Sequence[str],
) -> None:
  """Writes the run's HParams values (session `trial_id`) and custom-scalars layout into `logdir`.

  They go into one event file of their own, which replaces any earlier one: a
  resumed or extended run (a longer --train_steps) shows its current values,
  never two sessions.
  """
  for path in event_files(logdir, RUN_METADATA_SUFFIX):  # also a session mtl-summarize added
    os.remove(path)
  writer = tf.summary.create_file_writer(logdir, filename_suffix=RUN_METADATA_SUFFIX)
  with writer.as_default(step=0):
    hp.hparams(dict(hparams), trial_id=trial_id)
    tf.summary.experimental.write_raw_pb(
      custom_scalar_summary.pb(layout(task_specs, per_task_prefixes)).SerializeToString(), step=0
    )
  writer.close()

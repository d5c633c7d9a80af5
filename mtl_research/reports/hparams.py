"""The TensorBoard HParams dashboard of a sweep: `tensorboard --logdir=SWEEP_DIR`.

How the HParams plugin (TensorBoard 2.21, plugins/hparams/list_session_groups.py)
pairs values with metrics: every TensorBoard run (a directory with event files)
holding an `hp.hparams` summary is a *session*, here runs/<name>/train, where
the trainer logs the run's flag values at its start. A metric
`hp.Metric(tag, group=G)` of the experiment is read, for the session in run S,
as the last value of scalar `tag` in run `S/G`. So:

  SWEEP_DIR/hparams/                 the experiment (hp.hparams_config): the swept hyperparameters
                                     (balancer, seed, each grid flag, and single_task when the sweep has
                                     baselines) and the metrics below; the plugin uses the one experiment
                                     summary it finds under the logdir
  runs/<name>/train/final/           the run's final test metrics as scalars (group "final"):
                                     final/<task>/<metric> for every test metric of metrics.json, and
                                     final/delta_m (Δm% of the run against the baseline means) when every
                                     task has a single-task baseline

Both directories are deleted and rewritten on every call, so summarizing again
(after more runs finished) replaces, never duplicates, what the dashboard shows.
A run whose train/ has no hp.hparams summary (not written by this trainer) gets
one with its swept values, in its own file in train/.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
import os
import shutil

from mtl_research.reports.aggregation import run_delta_m
from mtl_research.reports.collect import RunRecord, SweepRecords
from mtl_research.reports.events import read_session_hparams
from mtl_research.reports.table import Table

HPARAMS_DIR = "hparams"
FINAL_GROUP = "final"
DELTA_M_TAG = "final/delta_m"


def metric_tag(task: str, metric: str) -> str:
  return f"{FINAL_GROUP}/{task}/{metric}"


def final_logdir(run: RunRecord) -> str:
  return os.path.join(run.run_dir.train_logdir, FINAL_GROUP)


def parse_value(text: str) -> bool | float | str:
  """A flag value's text as the HParams type a run would log (bool, number or string)."""
  if text in ("true", "false"):
    return text == "true"
  try:
    number = float(text)
  except ValueError:
    return text
  return number if math.isfinite(number) else text


def _swept(run: RunRecord, names: Sequence[str]) -> dict[str, bool | float | str]:
  values: dict[str, bool | float | str] = {"balancer": run.balancer, "seed": float(run.seed)}
  values.update({flag: parse_value(value) for flag, value in run.grid.items()})
  values["single_task"] = run.single_task or ""
  return {name: values[name] for name in names if name in values}


def _domain(values: Sequence):
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top

  if not values:
    return None
  if all(isinstance(v, bool) for v in values):
    return hp.Discrete(sorted(set(values)), dtype=bool)
  if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
    return hp.Discrete(sorted({float(v) for v in values}), dtype=float)
  if all(isinstance(v, str) for v in values):
    return hp.Discrete(sorted(set(values)), dtype=str)
  return None  # mixed types: the dashboard infers nothing wrong from no domain


def write_hparams(sweep: SweepRecords, table: Table) -> tuple[dict[str, object], list[str]]:
  """Writes the experiment config and every finished run's final metrics; returns (paths, notes)."""
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  notes = []
  names = ["balancer", "seed", *sweep.grid_flags] + (["single_task"] if sweep.baseline_runs else [])
  sessions = {run.path: read_session_hparams(run.run_dir.train_logdir) for run in sweep.runs}
  values: dict[str, list] = {name: [] for name in names}
  for run in sweep.runs:
    session = sessions[run.path]
    logged = session[0] if session else _swept(run, names)
    for name in names:
      if name in logged:
        values[name].append(logged[name])
  hparams = [hp.HParam(name, _domain(values[name])) for name in names]

  metrics = []
  for task, task_metrics in table.metrics.items():
    for metric in task_metrics:
      metrics.append(
        hp.Metric(
          metric_tag(task, metric),
          group=FINAL_GROUP,
          display_name=f"{task} {metric} (test)",
          description=f"Test {metric} of task {task} at the selected checkpoint.",
        )
      )
  baseline_means = table.baseline_means()
  if baseline_means is not None:
    metrics.append(
      hp.Metric(
        DELTA_M_TAG,
        group=FINAL_GROUP,
        display_name="Δm% (test)",
        description="Δm% against the single-task baselines' means; positive = better.",
      )
    )

  config_dir = os.path.join(sweep.path, HPARAMS_DIR)
  shutil.rmtree(config_dir, ignore_errors=True)
  writer = tf.summary.create_file_writer(config_dir)
  with writer.as_default():
    hp.hparams_config(hparams=hparams, metrics=metrics)
  writer.close()

  missing = []
  for run in sweep.runs:
    if sessions[run.path] is None:
      missing.append(run.name)
      _write_session(run, _swept(run, names))
    _write_final(run, table, baseline_means)
  if missing:
    notes.append(
      f"{len(missing)} run(s) had no HParams summary in train/; one with their swept values was "
      f"added: {', '.join(missing)}."
    )
  return {"config_dir": config_dir, "final_dirs": [final_logdir(r) for r in sweep.runs]}, notes


def _write_session(run: RunRecord, values: Mapping[str, bool | float | str]) -> None:
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  writer = tf.summary.create_file_writer(run.run_dir.train_logdir, filename_suffix=".hparams")
  with writer.as_default():
    hp.hparams(dict(values))
  writer.close()


def final_scalars(run: RunRecord, table: Table, baseline_means: Mapping[str, float] | None) -> dict[str, float]:
  """{tag: value} of the run's final test metrics (and Δm% for a multi-task run with baselines)."""
  scalars = {}
  for task in table.metrics:
    for metric, value in run.test_metrics(task).items():
      if value is not None:
        scalars[metric_tag(task, metric)] = float(value)
  if baseline_means is not None and not run.is_baseline:
    scalars[DELTA_M_TAG] = run_delta_m(run, table.columns, baseline_means)
  return scalars


def _write_final(run: RunRecord, table: Table, baseline_means: Mapping[str, float] | None) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  logdir = final_logdir(run)
  shutil.rmtree(logdir, ignore_errors=True)
  selection = run.metrics.get("selection") or {}
  step = int(selection.get("step", run.metrics.get("steps", 0)) or 0)
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default(step=step):
    for tag, value in final_scalars(run, table, baseline_means).items():
      tf.summary.scalar(tag, value)
  writer.close()

"""The TensorBoard HParams dashboard of a sweep: `tensorboard --logdir=SWEEP_DIR`.

How the HParams plugin (TensorBoard 2.21, plugins/hparams/list_session_groups.py)
pairs values with metrics: every TensorBoard run (a directory with event files)
holding an `hp.hparams` summary is a *session*, here runs/<name>/eval, where
the trainer logs the run's flag values at its start with the run's name as the
trial ID. A metric `hp.Metric(tag)` of the experiment (no group) is read, for
the session in run S, as the last value of scalar `tag` in S itself. So:

  SWEEP_DIR/hparams/          the experiment (hp.hparams_config): the swept hyperparameters (balancer,
                              seed, each grid flag, and single_task when the sweep has baselines) and the
                              metrics below, Δm% first; the plugin uses the one experiment summary it
                              finds under the logdir
  runs/<name>/eval/*.final    one event file of the run's final test metrics at the selected step:
                              test/<task>/<metric> for every test metric of metrics.json that is
                              defined (not null), and test/delta_m (the run's Δm%) when every task
                              has a single-task baseline and the run a value of each

The final metrics live in the eval run, beside the validation curves, so a
sweep of N runs lists 2N + 1 runs in TensorBoard (runs/<name>/train,
runs/<name>/eval and hparams), not one more per run. The `.final` file is
deleted and rewritten on every call, so summarizing again (after more runs
finished) replaces, never duplicates, what the dashboard shows; what an earlier
version wrote (train/final/, and the session and layout in their own event file
in train/) is removed, so that each run is one session. A run whose
eval/ has no hp.hparams summary (not written by this trainer) gets one with its
swept values and its name, in its own file in eval/.

Integer values (seeds, integer grid flags) are strings: the dashboard prints
every number with five significant digits ("0.0000" for seed 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
import os
import re
import shutil

from mtl_research import tags
from mtl_research.reports.aggregation import run_delta_m
from mtl_research.reports.collect import RunRecord, SweepRecords
from mtl_research.reports.events import read_session_hparams, run_metadata_files
from mtl_research.reports.table import Table
from mtl_research.train.run_dir import FINAL_METRICS_SUFFIX, RUN_METADATA_SUFFIX, event_files

HPARAMS_DIR = "hparams"
FINAL_SUFFIX = FINAL_METRICS_SUFFIX
DELTA_M_TAG = tags.DELTA_M
_LEGACY_FINAL_DIR = "final"  # train/final/, where an earlier version wrote the final metrics
_INTEGER = re.compile(r"^[+-]?\d+$")


def metric_tag(task: str, metric: str) -> str:
  return tags.final_metric(task, metric)


def final_files(run: RunRecord) -> list[str]:
  """The run's event files of final metrics (at most one after `write_hparams`)."""
  return event_files(run.run_dir.eval_logdir, FINAL_SUFFIX)


def parse_value(text: str) -> bool | float | str:
  """A flag value's text as the HParams value a run would log: bool, integer text, float or string."""
  if text in ("true", "false"):
    return text == "true"
  if _INTEGER.match(text):
    return text
  try:
    number = float(text)
  except ValueError:
    return text
  return number if math.isfinite(number) else text


def _swept(run: RunRecord, names: Sequence[str]) -> dict[str, bool | float | str]:
  values: dict[str, bool | float | str] = {"balancer": run.balancer, "seed": str(run.seed)}
  values.update({flag: parse_value(value) for flag, value in run.grid.items()})
  values["single_task"] = run.single_task or ""
  return {name: values[name] for name in names if name in values}


def _sort_key(value: str) -> tuple:
  return (0, int(value), "") if _INTEGER.match(value) else (1, 0, value)


def _domain(values: Sequence):
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top

  if not values:
    return None
  if all(isinstance(v, bool) for v in values):
    return hp.Discrete(sorted(set(values)), dtype=bool)
  if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
    return hp.Discrete(sorted({float(v) for v in values}), dtype=float)
  if all(isinstance(v, str) for v in values):
    return hp.Discrete(sorted(set(values), key=_sort_key), dtype=str)  # seeds 2 before 10
  return None  # mixed types: the dashboard infers nothing wrong from no domain


def _session(run: RunRecord) -> tuple[dict[str, bool | float | str], str] | None:
  return read_session_hparams(run.run_dir.eval_logdir)


def write_hparams(sweep: SweepRecords, table: Table) -> tuple[dict[str, object], list[str]]:
  """Writes the experiment config and every finished run's final metrics; returns (paths, notes)."""
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  notes = []
  names = ["balancer", "seed", *sweep.grid_flags] + (["single_task"] if sweep.baseline_runs else [])
  sessions = {run.path: _session(run) for run in sweep.runs}
  values: dict[str, list] = {name: [] for name in names}
  for run in sweep.runs:
    session = sessions[run.path]
    logged = session[0] if session else _swept(run, names)
    for name in names:
      if name in logged:
        values[name].append(logged[name])
  hparams = [hp.HParam(name, _domain(values[name])) for name in names]

  metrics = []
  baseline_means = table.baseline_means()
  if baseline_means is not None:
    # The sweep's summary number comes first: the dashboard shows only its first five metrics.
    metrics.append(
      hp.Metric(
        DELTA_M_TAG,
        display_name="Δm% (test)",
        description="Δm% against the single-task baselines (see results.md); positive = better.",
      )
    )
  for task, task_metrics in table.metrics.items():
    for metric in task_metrics:
      metrics.append(
        hp.Metric(
          metric_tag(task, metric),
          display_name=f"{task} {metric} (test)",
          description=f"Test {metric} of task {task} at the selected checkpoint.",
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
      f"{len(missing)} run(s) had no HParams summary in eval/; one with their swept values was "
      f"added: {', '.join(missing)}."
    )
  return {"config_dir": config_dir, "final_files": [f for run in sweep.runs for f in final_files(run)]}, notes


def _write_session(run: RunRecord, values: Mapping[str, bool | float | str]) -> None:
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  # The trainer's own suffix: a run resumed later replaces this session instead of adding one.
  writer = tf.summary.create_file_writer(run.run_dir.eval_logdir, filename_suffix=RUN_METADATA_SUFFIX)
  with writer.as_default():
    hp.hparams(dict(values), trial_id=run.name)
  writer.close()


def final_scalars(run: RunRecord, table: Table, baseline_means: Mapping[str, float] | None) -> dict[str, float]:
  """{tag: value} of the run's final test metrics (and Δm% for a multi-task run with baselines).

  The run's Δm (Maninis et al., CVPR 2019; Vandenhende et al., TPAMI 2021) uses
  the table's definition, so that the dashboard agrees with results.md: against
  the baselines of the run's own seed when the table pairs Δm by seed, else
  against `baseline_means` (reports/delta_m.py).
  """
  scalars = {}
  for task in table.metrics:
    for metric, value in run.test_metrics(task).items():
      if value is not None:
        scalars[metric_tag(task, metric)] = float(value)
  if baseline_means is not None and not run.is_baseline:
    reference = table.seed_baselines()[run.seed] if table.delta_m_paired else baseline_means
    delta_m = run_delta_m(run, table.columns, reference)
    if math.isfinite(delta_m):  # a run without a value of every task has no Δm, as in the table
      scalars[DELTA_M_TAG] = delta_m
  return scalars


def _write_final(run: RunRecord, table: Table, baseline_means: Mapping[str, float] | None) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  for path in final_files(run):
    os.remove(path)
  # What an earlier version wrote: final metrics in train/final/, the session and layout in train/.
  shutil.rmtree(os.path.join(run.run_dir.train_logdir, _LEGACY_FINAL_DIR), ignore_errors=True)
  for path in run_metadata_files(run.run_dir.train_logdir):
    os.remove(path)
  selection = run.metrics.get("selection") or {}
  step = int(selection.get("step", run.metrics.get("steps", 0)) or 0)
  writer = tf.summary.create_file_writer(run.run_dir.eval_logdir, filename_suffix=FINAL_SUFFIX)
  with writer.as_default(step=step):
    for tag, value in final_scalars(run, table, baseline_means).items():
      tf.summary.scalar(tag, value)
  writer.close()

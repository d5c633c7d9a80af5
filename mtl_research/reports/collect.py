"""Reads a sweep directory (written by mtl-ablate) into run records.

  SWEEP_DIR/sweep.json          {"balancers", "seeds", "grid": {flag: [values]}, "flags", "with_single_task"}
  SWEEP_DIR/runs/<name>/        a training run directory, plus
      run.json                  {"name", "balancer", "seed", "grid": {flag: value text}, "single_task"}
      FAILED                    marker of a run whose training failed (see its log.txt)

A run is finished when it has metrics.json. Unfinished runs (still running, or
never started) and failed runs are skipped and counted in the notes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from mtl_research.errors import UserError

SWEEP_FILE = "sweep.json"
RUNS_DIR = "runs"
RUN_FILE = "run.json"
FAILED_MARKER = "FAILED"
METRICS_FILE = "metrics.json"  # as train/run_dir.py writes it
FLAGS_FILE = "flags.txt"


@dataclasses.dataclass(frozen=True)
class RunRecord:
  """One finished run: what the sweep asked for (run.json) and what it measured (metrics.json)."""

  name: str
  path: str
  balancer: str
  seed: int
  grid: Mapping[str, str]  # swept flag -> value text
  single_task: str | None  # None: a multi-task run; else the baseline's task
  metrics: Mapping[str, Any]

  @property
  def is_baseline(self) -> bool:
    return self.single_task is not None

  @property
  def train_logdir(self) -> str:
    return os.path.join(self.path, "train")

  @property
  def eval_logdir(self) -> str:
    return os.path.join(self.path, "eval")

  def test_metrics(self, task: str) -> Mapping[str, float]:
    return self.metrics.get("test", {}).get(task, {})


@dataclasses.dataclass(frozen=True)
class Sweep:
  path: str
  spec: Mapping[str, Any]  # sweep.json, {} if absent
  runs: tuple[RunRecord, ...]
  unfinished: tuple[str, ...]
  failed: tuple[str, ...]
  notes: tuple[str, ...]

  @property
  def multi_task_runs(self) -> tuple[RunRecord, ...]:
    return tuple(r for r in self.runs if not r.is_baseline)

  @property
  def baseline_runs(self) -> tuple[RunRecord, ...]:
    return tuple(r for r in self.runs if r.is_baseline)

  @property
  def grid_flags(self) -> list[str]:
    """Swept flags: sweep.json's grid order, then any other flag a run names, sorted."""
    ordered = list(self.spec.get("grid", {}) or {})
    extra = sorted({flag for run in self.runs for flag in run.grid} - set(ordered))
    return ordered + extra


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as handle:
      return json.load(handle)
  except (OSError, ValueError) as error:
    raise UserError(f"{path} cannot be read as JSON ({error}).") from None


def _read_flags(path: str) -> dict[str, str]:
  result = {}
  try:
    with open(path, encoding="utf-8") as handle:
      for line in handle:
        name, sep, value = line.strip().partition("=")
        if name.startswith("--") and sep:
          result[name[2:]] = value
  except OSError:
    pass
  return result


def _record(name: str, path: str, spec: Mapping[str, Any], metrics: Mapping[str, Any]) -> RunRecord:
  run_file = os.path.join(path, RUN_FILE)
  if os.path.isfile(run_file):
    info = _read_json(run_file)
    single_task = info.get("single_task", metrics.get("single_task")) or None
    return RunRecord(name=str(info.get("name", name)), path=path,
                     balancer=str(info.get("balancer", metrics.get("balancer", ""))),
                     seed=int(info.get("seed", 0)),
                     grid={str(k): str(v) for k, v in (info.get("grid") or {}).items()},
                     single_task=single_task, metrics=metrics)
  # A run without run.json (e.g. copied in by hand): its flags.txt says what it was.
  flag_values = _read_flags(os.path.join(path, FLAGS_FILE))
  single_task = metrics.get("single_task") or flag_values.get("single_task") or None
  grid = {} if single_task else {flag: flag_values[flag] for flag in spec.get("grid", {}) or {}
                                 if flag in flag_values}
  return RunRecord(name=name, path=path, balancer=str(metrics.get("balancer", flag_values.get("balancer", ""))),
                   seed=int(flag_values.get("seed", 0) or 0), grid=grid, single_task=single_task,
                   metrics=metrics)


def collect(sweep_dir: str) -> Sweep:
  """Every finished run of `sweep_dir`; UserError if it has no runs/ or no finished run."""
  runs_dir = os.path.join(sweep_dir, RUNS_DIR)
  if not os.path.isdir(runs_dir):
    raise UserError(f"--sweep_dir={sweep_dir} has no {RUNS_DIR}/ directory, so it is not a sweep written by "
                    "mtl-ablate.")
  spec_file = os.path.join(sweep_dir, SWEEP_FILE)
  spec = _read_json(spec_file) if os.path.isfile(spec_file) else {}
  notes = [] if spec else [f"{SWEEP_FILE} is missing: rows and grid columns follow the runs' own run.json."]
  runs, unfinished, failed, no_run_json = [], [], [], []
  for name in sorted(os.listdir(runs_dir)):
    path = os.path.join(runs_dir, name)
    if not os.path.isdir(path):
      continue
    if os.path.exists(os.path.join(path, FAILED_MARKER)):
      failed.append(name)
      continue
    metrics_file = os.path.join(path, METRICS_FILE)
    if not os.path.isfile(metrics_file):
      unfinished.append(name)
      continue
    if not os.path.isfile(os.path.join(path, RUN_FILE)):
      no_run_json.append(name)
    runs.append(_record(name, path, spec, _read_json(metrics_file)))
  if failed:
    notes.append(f"{len(failed)} failed run(s) skipped (see log.txt in each run directory): "
                 f"{', '.join(failed)}.")
  if unfinished:
    notes.append(f"{len(unfinished)} unfinished run(s) skipped (no metrics.json yet): {', '.join(unfinished)}.")
  if no_run_json:
    notes.append(f"{len(no_run_json)} run(s) without run.json described from their flags.txt: "
                 f"{', '.join(no_run_json)}.")
  if not runs:
    raise UserError(f"--sweep_dir={sweep_dir} has no finished run yet ({len(unfinished)} unfinished, "
                    f"{len(failed)} failed; a finished run has metrics.json).")
  return Sweep(sweep_dir, spec, tuple(runs), tuple(unfinished), tuple(failed), tuple(notes))


# TensorBoard event files. TensorFlow is imported here, not at module level, so
# reading a sweep's JSON files stays cheap.

SESSION_START_INFO_TAG = "_hparams_/session_start_info"


def _event_files(logdir: str) -> list[str]:
  if not os.path.isdir(logdir):
    return []
  return sorted(os.path.join(logdir, name) for name in os.listdir(logdir)
                if name.startswith("events.out.tfevents.") and os.path.isfile(os.path.join(logdir, name)))


def _events(logdir: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top
  for path in _event_files(logdir):
    try:
      for record in tf.data.TFRecordDataset(path):
        yield event_pb2.Event.FromString(record.numpy())
    except tf.errors.DataLossError:
      continue  # a file still being written ends with a partial record


def read_scalars(logdir: str, prefixes: tuple[str, ...] = ("",)) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} sorted by step, for the scalar tags of `logdir` starting with a prefix.

  Only the files directly in `logdir` are read (not its subdirectories). A step
  logged twice (a resumed run) keeps its last value.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  found: dict[str, dict[int, float]] = {}
  plugins: dict[str, str] = {}  # a summary names its plugin on its first event at least
  for event in _events(logdir):
    for value in event.summary.value:
      if value.metadata.plugin_data.plugin_name:
        plugins[value.tag] = value.metadata.plugin_data.plugin_name
      if (plugins.get(value.tag, "scalars") != "scalars" or not value.tag.startswith(prefixes)
          or not value.HasField("tensor")):
        continue
      array = tf.make_ndarray(value.tensor)
      if array.size != 1 or array.dtype.kind not in "fiu":
        continue
      found.setdefault(value.tag, {})[int(event.step)] = float(array.reshape(-1)[0])
  return {tag: sorted(points.items()) for tag, points in found.items()}


def read_session_hparams(logdir: str) -> tuple[dict[str, bool | float | str], str] | None:
  """The HParams values a run logged in `logdir` (hp.hparams) and their group name, or None."""
  from tensorboard.plugins.hparams import metadata  # pylint: disable=g-import-not-at-top
  for event in _events(logdir):
    for value in event.summary.value:
      if value.tag == SESSION_START_INFO_TAG:
        info = metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
        values = {}
        for name, proto in info.hparams.items():
          kind = proto.WhichOneof("kind")
          if kind in ("bool_value", "number_value", "string_value"):
            values[name] = getattr(proto, kind)
        return values, info.group_name
  return None

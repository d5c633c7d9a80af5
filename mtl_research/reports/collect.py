"""Reads a sweep directory (written by mtl-ablate) into run records.

  SWEEP_DIR/sweep.json          {"balancers", "seeds", "grid": {flag: [values]}, "flags", "with_single_task"}
  SWEEP_DIR/runs/<name>/        a training run directory, plus
      run.json                  {"name", "balancer", "seed", "grid": {flag: value text}, "single_task"}
      FAILED                    marker of a run whose training failed (see its log.txt)

A run is finished when it has metrics.json. Unfinished runs (still running, or
never started) and failed runs are skipped and counted in the notes. Only JSON
(and flags.txt) is read here; events.py reads the runs' TensorBoard event files.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import json
import os
from typing import Any

from mtl_research.errors import UserError
from mtl_research.sweep.plan import RUNS_DIR, SWEEP_FILE
from mtl_research.train.run_dir import FAILED_FILE, RUN_FILE, RunDir, parse_flagfile


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
  def run_dir(self) -> RunDir:
    return RunDir(self.path)

  def test_metrics(self, task: str) -> Mapping[str, float]:
    return self.metrics.get("test", {}).get(task, {})


@dataclasses.dataclass(frozen=True)
class SweepRecords:
  """What a sweep directory holds: its sweep.json, its finished runs, and the runs skipped and why."""

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
  try:
    with open(path, encoding="utf-8") as handle:
      return parse_flagfile(handle)
  except OSError:
    return {}


def _record(name: str, path: str, spec: Mapping[str, Any], metrics: Mapping[str, Any]) -> RunRecord:
  run_file = os.path.join(path, RUN_FILE)
  if os.path.isfile(run_file):
    info = _read_json(run_file)
    single_task = info.get("single_task", metrics.get("single_task")) or None
    return RunRecord(
      name=str(info.get("name", name)),
      path=path,
      balancer=str(info.get("balancer", metrics.get("balancer", ""))),
      seed=int(info.get("seed", 0)),
      grid={str(k): str(v) for k, v in (info.get("grid") or {}).items()},
      single_task=single_task,
      metrics=metrics,
    )
  # A run without run.json (e.g. copied in by hand): its flags.txt says what it was.
  flag_values = _read_flags(RunDir(path).flags_file)
  single_task = metrics.get("single_task") or flag_values.get("single_task") or None
  grid = {} if single_task else {flag: flag_values[flag] for flag in spec.get("grid", {}) or {} if flag in flag_values}
  return RunRecord(
    name=name,
    path=path,
    balancer=str(metrics.get("balancer", flag_values.get("balancer", ""))),
    seed=int(flag_values.get("seed", 0) or 0),
    grid=grid,
    single_task=single_task,
    metrics=metrics,
  )


def collect(sweep_dir: str) -> SweepRecords:
  """Every finished run of `sweep_dir`; UserError if it has no runs/ or no finished run."""
  runs_dir = os.path.join(sweep_dir, RUNS_DIR)
  if not os.path.isdir(runs_dir):
    raise UserError(
      f"--sweep_dir={sweep_dir} has no {RUNS_DIR}/ directory, so it is not a sweep written by mtl-ablate."
    )
  spec_file = os.path.join(sweep_dir, SWEEP_FILE)
  spec = _read_json(spec_file) if os.path.isfile(spec_file) else {}
  runs, failed, unfinished, no_run_json = _scan(runs_dir, spec)
  if not runs:
    raise UserError(
      f"--sweep_dir={sweep_dir} has no finished run yet ({len(unfinished)} unfinished, "
      f"{len(failed)} failed; a finished run has metrics.json)."
    )
  notes = _notes(spec, failed, unfinished, no_run_json)
  return SweepRecords(sweep_dir, spec, tuple(runs), tuple(unfinished), tuple(failed), tuple(notes))


def _scan(runs_dir: str, spec: Mapping[str, Any]) -> tuple[list[RunRecord], list[str], list[str], list[str]]:
  """(finished runs, failed names, unfinished names, names of finished runs without run.json)."""
  runs, failed, unfinished, no_run_json = [], [], [], []
  for name in sorted(os.listdir(runs_dir)):
    path = os.path.join(runs_dir, name)
    if not os.path.isdir(path):
      continue
    metrics_file = RunDir(path).metrics_file
    if os.path.exists(os.path.join(path, FAILED_FILE)):
      failed.append(name)
    elif not os.path.isfile(metrics_file):
      unfinished.append(name)
    else:
      if not os.path.isfile(os.path.join(path, RUN_FILE)):
        no_run_json.append(name)
      runs.append(_record(name, path, spec, _read_json(metrics_file)))
  return runs, failed, unfinished, no_run_json


def _notes(spec: Mapping[str, Any], failed: list[str], unfinished: list[str], no_run_json: list[str]) -> list[str]:
  notes = [] if spec else [f"{SWEEP_FILE} is missing: rows and grid columns follow the runs' own run.json."]
  if failed:
    notes.append(f"{len(failed)} failed run(s) skipped (see log.txt in each run directory): {', '.join(failed)}.")
  if unfinished:
    notes.append(f"{len(unfinished)} unfinished run(s) skipped (no metrics.json yet): {', '.join(unfinished)}.")
  if no_run_json:
    notes.append(
      f"{len(no_run_json)} run(s) without run.json described from their flags.txt: {', '.join(no_run_json)}."
    )
  return notes

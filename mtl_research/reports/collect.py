"""Reads a sweep directory (written by mtl-ablate) into run records.

  SWEEP_DIR/sweep.json          {"balancers", "seeds", "grid": {flag: [values]}, "flags", "with_single_task"}
  SWEEP_DIR/runs/<name>/        a training run directory, plus
      run.json                  {"name", "balancer", "seed", "grid": {flag: value text}, "single_task"}
      FAILED                    marker of a run whose training failed (see its log.txt)

A run is finished when it has metrics.json. Every file is read by its reader in
schema.py, which checks it against its schema. A run that is unfinished (still
running, or never started), failed, or unreadable (a file it needs is damaged or
not of its schema, or it repeats another run's balancer, grid point and seed) is
never in a table: it is skipped and counted in the notes, with the reason.
sweep.json is the sweep's definition: a damaged one refuses the whole sweep
(a missing one leaves the rows to the runs' own run.json, with a note). A run
without run.json (copied in by hand) is described by its flags.txt, read as the
trainer reads it: a damaged one makes the run unreadable. Only JSON and
flags.txt are read here; events.py reads the runs' TensorBoard event files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import os
from typing import Any

from mtl_research import provenance
from mtl_research.errors import UserError
from mtl_research.reports import schema
from mtl_research.sweep.plan import RUNS_DIR, SWEEP_FILE
from mtl_research.train.run_dir import FAILED_FILE, LOG_FILE, RUN_FILE, RunDir


@dataclasses.dataclass(frozen=True)
class RunRecord:
  """One finished run: what the sweep asked for (run.json) and what it measured (metrics.json)."""

  name: str
  path: str
  balancer: str
  seed: int
  grid: Mapping[str, str]  # swept flag -> value text
  single_task: str | None  # None: a multi-task run; else the baseline's task
  metrics: Mapping[str, Any]  # metrics.json as schema.read_metrics_file returns it: metrics are floats or None

  @property
  def is_baseline(self) -> bool:
    return self.single_task is not None

  @property
  def run_dir(self) -> RunDir:
    return RunDir(self.path)

  def test_metrics(self, task: str) -> Mapping[str, float | None]:
    """{metric: value} of `task` on the test split; None: undefined (null in metrics.json)."""
    return self.metrics.get("test", {}).get(task, {})

  def undefined_reason(self, path: str) -> str | None:
    """Why the metric at `path` (e.g. "test.y.r2") is null, as the trainer wrote it in metrics.json."""
    return (self.metrics.get("undefined") or {}).get(path)

  @property
  def key(self) -> tuple:
    """What makes a run one of a kind in a sweep: two runs with the same key would count one seed twice."""
    return (self.balancer, tuple(sorted(self.grid.items())), self.single_task, self.seed)


@dataclasses.dataclass(frozen=True)
class Unreadable:
  """A finished run that cannot be read correctly, and why."""

  name: str
  reason: str  # relative to the run directory, e.g. 'metrics.json: test.y.mse is "abc", not a number'
  message: str  # the same with the file's full path, one sentence


@dataclasses.dataclass(frozen=True)
class SweepRecords:
  """What a sweep directory holds: its sweep.json, its finished runs, and the runs skipped and why."""

  path: str
  spec: Mapping[str, Any]  # sweep.json (schema.read_sweep_file), {} if absent
  runs: tuple[RunRecord, ...]
  unfinished: tuple[str, ...]
  failed: tuple[str, ...]
  notes: tuple[str, ...]
  unreadable: tuple[Unreadable, ...] = ()

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

  @property
  def spec_file(self) -> str:
    return os.path.join(self.path, SWEEP_FILE)

  def skipped(self) -> list[str]:
    """One sentence per run directory left out of the table (unreadable, failed, unfinished), full paths."""
    runs_dir = os.path.join(self.path, RUNS_DIR)
    return (
      [entry.message for entry in self.unreadable]
      + [f"{os.path.join(runs_dir, name)} failed (see its {LOG_FILE})" for name in self.failed]
      + [f"{os.path.join(runs_dir, name)} is unfinished (no metrics.json yet)" for name in self.unfinished]
    )


def _record(name: str, path: str, spec: Mapping[str, Any]) -> RunRecord:
  """The run in `path`; schema.UnreadableFile if a file it needs is damaged or not of its schema."""
  metrics_file = RunDir(path).metrics_file
  metrics = schema.read_metrics_file(metrics_file)
  run_file = os.path.join(path, RUN_FILE)
  if os.path.lexists(run_file):
    info = schema.read_run_file(run_file, name)
    recorded = metrics.get("single_task")
    if "single_task" in metrics and recorded != info.single_task:
      raise schema.UnreadableFile(
        run_file,
        f"single_task is {_text(info.single_task)}, but its metrics.json says {_text(recorded)}",
      )
    return RunRecord(info.name, path, info.balancer, info.seed, dict(info.grid), info.single_task, metrics)
  # A run without run.json (e.g. copied in by hand): its flags.txt says what it was.
  flag_values, seed = schema.read_run_flags(RunDir(path).flags_file)
  single_task = metrics.get("single_task") or flag_values.get("single_task") or None
  grid = {} if single_task else {flag: flag_values[flag] for flag in spec.get("grid", {}) if flag in flag_values}
  return RunRecord(
    name=name,
    path=path,
    balancer=str(metrics.get("balancer") or flag_values.get("balancer", "")),
    seed=seed,
    grid=grid,
    single_task=single_task,
    metrics=metrics,
  )


def _text(value: str | None) -> str:
  return "null" if value is None else f'"{value}"'


def collect(sweep_dir: str) -> SweepRecords:
  """Every finished run of `sweep_dir` that can be read; UserError if there is none, or sweep.json is damaged."""
  if os.path.exists(sweep_dir) and not os.path.isdir(sweep_dir):
    raise UserError(f"--sweep_dir={sweep_dir} is a file, not a sweep directory written by mtl-ablate.")
  runs_dir = os.path.join(sweep_dir, RUNS_DIR)
  if not os.path.isdir(runs_dir):
    raise UserError(
      f"--sweep_dir={sweep_dir} has no {RUNS_DIR}/ directory, so it is not a sweep written by mtl-ablate."
    )
  spec_file = os.path.join(sweep_dir, SWEEP_FILE)
  spec = _read_spec(spec_file) if os.path.lexists(spec_file) else {}
  runs, failed, unfinished, unreadable, no_run_json = _scan(runs_dir, spec)
  if not runs:
    first = f"; the first unreadable: {unreadable[0].message.rstrip('.')}" if unreadable else ""
    raise UserError(
      f"--sweep_dir={sweep_dir} has no finished run to summarize ({len(unfinished)} unfinished, "
      f"{len(failed)} failed, {len(unreadable)} unreadable; a finished run has metrics.json){first}."
    )
  notes = _notes(spec, failed, unfinished, unreadable, no_run_json) + provenance_notes(runs)
  return SweepRecords(sweep_dir, spec, tuple(runs), tuple(unfinished), tuple(failed), tuple(notes), tuple(unreadable))


def _read_spec(path: str) -> dict[str, Any]:
  """sweep.json, the sweep's definition (its rows' order, its seeds): refused whole when damaged."""
  try:
    return schema.read_sweep_file(path)
  except schema.UnreadableFile as error:
    raise UserError(
      f"{error.path}: {error.detail}, so the sweep's definition cannot be read; restore it, or move it away "
      "to summarize the runs from their own run.json."
    ) from None


def _scan(
  runs_dir: str, spec: Mapping[str, Any]
) -> tuple[list[RunRecord], list[str], list[str], list[Unreadable], list[str]]:
  """(readable finished runs, failed names, unfinished names, unreadable runs, names of runs without run.json)."""
  runs: list[RunRecord] = []
  failed: list[str] = []
  unfinished: list[str] = []
  unreadable: list[Unreadable] = []
  no_run_json: list[str] = []
  try:
    names = sorted(os.listdir(runs_dir))
  except OSError as error:
    raise UserError(f"{runs_dir} cannot be read: {error.strerror}.") from None
  seen: dict[tuple, str] = {}
  for name in names:
    path = os.path.join(runs_dir, name)
    if not os.path.isdir(path):
      continue
    if os.path.exists(os.path.join(path, FAILED_FILE)):
      failed.append(name)
      continue
    if not os.path.isfile(RunDir(path).metrics_file):
      unfinished.append(name)
      continue
    try:
      record = _record(name, path, spec)
    except schema.UnreadableFile as error:
      unreadable.append(Unreadable(name, error.relative_to(path), str(error)))
      continue
    if record.key in seen:  # its seed would count twice in its row
      reason = f"the same balancer, grid point and seed ({record.seed}) as run {seen[record.key]}"
      unreadable.append(Unreadable(name, reason, f"{path} is a run with {reason}."))
      continue
    seen[record.key] = name
    if not os.path.lexists(os.path.join(path, RUN_FILE)):
      no_run_json.append(name)
    runs.append(record)
  return runs, failed, unfinished, unreadable, no_run_json


def _notes(
  spec: Mapping[str, Any],
  failed: list[str],
  unfinished: list[str],
  unreadable: list[Unreadable],
  no_run_json: list[str],
) -> list[str]:
  notes = [] if spec else [f"{SWEEP_FILE} is missing: rows and grid columns follow the runs' own run.json."]
  if failed:
    notes.append(f"{len(failed)} failed run(s) skipped (see log.txt in each run directory): {', '.join(failed)}.")
  if unfinished:
    notes.append(f"{len(unfinished)} unfinished run(s) skipped (no metrics.json yet): {', '.join(unfinished)}.")
  if unreadable:
    notes.append(
      f"{len(unreadable)} unreadable run(s) skipped: "
      + ", ".join(f"{entry.name} ({entry.reason})" for entry in unreadable)
      + "."
    )
  if no_run_json:
    notes.append(
      f"{len(no_run_json)} run(s) without run.json described from their flags.txt: {', '.join(no_run_json)}."
    )
  return notes


def provenance_notes(runs: Sequence[RunRecord]) -> list[str]:
  """What the table's notes say about where `runs` came from (their provenance.json).

  Bit-identical results need the same code, library versions, machine type,
  threads and loop mode: a table whose runs differ in any of them says so, and
  so does one holding runs that recorded nothing (older versions) or whose
  record cannot be read (the run's results still can: it stays in the table).
  """
  recorded, missing, damaged = {}, [], []
  for run in runs:
    try:
      segments = provenance.read(os.path.join(run.path, provenance.PROVENANCE_FILE))
    except UserError:
      damaged.append(run.name)
      continue
    if segments:
      recorded[run.name] = segments
    else:
      missing.append(run.name)
  notes = []
  differences = provenance.differences(recorded)
  if differences:
    notes.append(
      f"The runs were not all trained alike, so their results may differ in more than the seed: "
      f"{'; '.join(differences)} (each run's provenance.json)."
    )
  if missing:
    notes.append(f"{len(missing)} run(s) record no provenance (no provenance.json): {', '.join(missing)}.")
  if damaged:
    notes.append(f"{len(damaged)} run(s) have a provenance.json that cannot be read: {', '.join(damaged)}.")
  return notes

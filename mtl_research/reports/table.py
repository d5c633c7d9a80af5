"""The results table of a sweep as data: columns, rows of per-seed statistics, notes.

Rows: one per (balancer, grid point) of the multi-task runs, plus a
"single-task" row with the baselines' means. Columns: each task's primary test
metric, as mean ± sample standard deviation (ddof=1) over seeds (a Stat's n is
the number of values it aggregates: an undefined value, null in metrics.json, is
none, so n may be below the row's seeds); then Δm% when it is defined (paired
by seed or not: delta_m.py), and the number of seeds.
aggregation.py builds a Table from a sweep; results_md.py, results_tex.py and
results_csv.py render it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import dataclasses
import math

import numpy as np

from mtl_research.reports.collect import RunRecord


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean and sample standard deviation (ddof=1; None for one value) of n values."""

  mean: float
  std: float | None
  n: int


def aggregate(values: Iterable[float]) -> Stat | None:
  """Mean ± std (ddof=1) of `values`; std None for a single value; None for no value."""
  array = np.asarray(list(values), np.float64)
  if array.size == 0:
    return None
  std = float(np.std(array, ddof=1)) if array.size >= 2 else None
  return Stat(float(np.mean(array)), std, int(array.size))


@dataclasses.dataclass(frozen=True)
class Column:
  """One task's primary metric."""

  task: str
  metric: str
  higher_is_better: bool

  @property
  def arrow(self) -> str:
    return "↑" if self.higher_is_better else "↓"


@dataclasses.dataclass
class Row:
  label: str  # the balancer, or "single-task"
  balancer: str
  grid: Mapping[str, str]
  runs: list[RunRecord]
  stats: dict[tuple[str, str], Stat]  # (task, metric) -> over seeds, every test metric
  seeds: dict[str, int]  # task -> number of seeds with a value
  delta_m: Stat | None = None
  baseline: bool = False

  @property
  def description(self) -> str:
    """The balancer and its grid point, e.g. "gradnorm (gradnorm_alpha=0.5)"."""
    if not self.grid:
      return self.label
    return f"{self.label} ({', '.join(f'{k}={v}' for k, v in self.grid.items())})"

  @property
  def num_seeds(self) -> int:
    return len({run.seed for run in self.runs})

  def expected_values(self, task: str) -> int:
    """How many values a cell of `task` would aggregate if no run lacked one: the row's seeds (the baselines of
    `task` in the single-task row). A Stat with a smaller n is shown with its n (cells.py)."""
    return self.seeds.get(task, 0) if self.baseline else self.num_seeds


@dataclasses.dataclass
class Table:
  title: str
  columns: list[Column]
  grid_flags: list[str]
  rows: list[Row]  # multi-task rows
  baseline: Row | None
  has_delta_m: bool
  notes: list[str]
  metrics: dict[str, list[str]]  # task -> every test metric seen (CSV columns)
  # Whether the rows' Δm pairs each seed with the baselines of the same seed (delta_m.py); one definition per table.
  delta_m_paired: bool = False

  @property
  def all_rows(self) -> list[Row]:
    return ([self.baseline] if self.baseline else []) + self.rows

  def baseline_means(self) -> dict[str, float] | None:
    """Primary-metric means of the baselines, by task, when Δm is defined."""
    if not self.has_delta_m or self.baseline is None:
      return None
    return {c.task: self.baseline.stats[(c.task, c.metric)].mean for c in self.columns}

  def seed_baselines(self) -> dict[int, dict[str, float]]:
    """seed -> {task: primary metric of the single-task run with that seed}, for seeds that have every task.

    A value may be NaN (the run lacks the metric); delta_m.can_pair checks that
    each is usable. Two baselines of one task and seed (not a sweep's layout) count
    as their mean.
    """
    if self.baseline is None or not self.columns:
      return {}
    values: dict[int, dict[str, list[float]]] = {}
    for column in self.columns:
      for run in self.baseline.runs:
        if run.single_task == column.task:
          value = run.test_metrics(column.task).get(column.metric)
          values.setdefault(run.seed, {}).setdefault(column.task, []).append(
            math.nan if value is None else float(value)
          )
    return {
      seed: {task: float(np.mean(vals)) for task, vals in by_task.items()}
      for seed, by_task in sorted(values.items())
      if len(by_task) == len(self.columns)
    }

  def delta_m_baseline(self, seed: int) -> dict[str, float] | None:
    """The B_t (by task) that Δm compares a run with `seed` with; None when the table has no Δm.

    Its own seed's baselines when the table's Δm is paired by seed, else the
    baselines' means (delta_m.py).
    """
    if not self.has_delta_m:
      return None
    if self.delta_m_paired:
      return self.seed_baselines()[seed]
    return self.baseline_means()

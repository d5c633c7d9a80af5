"""results.csv: one line per table row, every test metric's mean and std as plain numbers.

Numbers are Python's repr of the float; a cell is empty where the value is
undefined (e.g. the std of one seed). `<task>/<metric>/n` is the number of
values the mean and std are over: fewer than `<task>/seeds` when a run's value
is undefined (null in its metrics.json), 0 (and an empty mean) when none has
one; `delta_m/n` likewise. With Δm, `delta_m/definition` says how a method
row's Δm was computed (delta_m.py): "paired" (each seed against the baselines
of the same seed) or "unpaired" (each seed against the baseline means); a CSV
has no notes to say it.
"""

from __future__ import annotations

import csv
import io

from mtl_research.reports.table import Row, Table

FILE_NAME = "results.csv"
DELTA_M_KEY = "delta_m"
PAIRED, UNPAIRED = "paired", "unpaired"


def header(table: Table) -> list[str]:
  names = ["method", "balancer", *table.grid_flags, "seeds"]
  for task, metrics in table.metrics.items():
    names.append(f"{task}/seeds")
    for metric in metrics:
      names += [f"{task}/{metric}/mean", f"{task}/{metric}/std", f"{task}/{metric}/n"]
  if table.has_delta_m:
    names += [f"{DELTA_M_KEY}/mean", f"{DELTA_M_KEY}/std", f"{DELTA_M_KEY}/n", f"{DELTA_M_KEY}/definition"]
  return names


def render(table: Table) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(header(table))
  for row in table.all_rows:
    writer.writerow(_values(table, row))
  return out.getvalue()


def _values(table: Table, row: Row) -> list:
  values = [row.label, row.balancer, *[row.grid.get(flag, "") for flag in table.grid_flags], row.num_seeds]
  for task, metrics in table.metrics.items():
    values.append(row.seeds.get(task, 0))
    for metric in metrics:
      stat = row.stats.get((task, metric))
      values += [_plain(stat.mean if stat else None), _plain(stat.std if stat else None), stat.n if stat else 0]
  if table.has_delta_m:
    if row.baseline:
      values += [0.0, "", "", ""]
    else:
      stat = row.delta_m
      values += [_plain(stat.mean if stat else None), _plain(stat.std if stat else None), stat.n if stat else 0]
      values.append(PAIRED if table.delta_m_paired else UNPAIRED)
  return values


def _plain(value: float | None) -> str:
  return "" if value is None else repr(float(value))

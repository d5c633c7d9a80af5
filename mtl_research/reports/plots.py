"""PNG plots of a sweep (optional: needs matplotlib, the `plots` extra).

  plots/weights.png            task-weight trajectories (weight/<task> of each run's train/ events): one
                               subplot per table row (balancer and grid point), one line per task, the mean
                               over seeds with a min–max band over seeds
  plots/val_<task>_<metric>.png  validation curves (eval/<task>/<metric> of each run's eval/ events, the
                               table's primary metric): one line per table row, mean over seeds; the
                               single-task baseline dashed

Steps are aligned across seeds: a point is drawn at the steps every seed of the
row has logged.
"""

from __future__ import annotations

from collections.abc import Sequence
import io
import os
import re

import numpy as np

from mtl_research import tags
from mtl_research.files import write_bytes_atomic
from mtl_research.reports.collect import RunRecord, SweepRecords
from mtl_research.reports.events import read_scalars
from mtl_research.reports.table import Row, Table

INSTALL_NOTE = "install the plots extra: pip install -e .[plots]"
PLOTS_DIR = "plots"


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def seed_band(series: Sequence[Sequence[tuple[int, float]]]):
  """(steps, mean, min, max) over seeds at the steps every series has; None if there is none."""
  by_step = [dict(s) for s in series if s]
  if not by_step:
    return None
  steps = sorted(set.intersection(*(set(s) for s in by_step)))
  if not steps:
    return None
  values = np.array([[s[step] for step in steps] for s in by_step], np.float64)
  return np.array(steps), values.mean(axis=0), values.min(axis=0), values.max(axis=0)


class _Cache:
  """Each run's event files are read once."""

  def __init__(self) -> None:
    self._data: dict[tuple[str, str], dict] = {}

  def scalars(self, run: RunRecord, which: str) -> dict[str, list[tuple[int, float]]]:
    key = (run.path, which)
    if key not in self._data:
      logdir = run.run_dir.train_logdir if which == "train" else run.run_dir.eval_logdir
      prefix = (f"{tags.WEIGHT}/",) if which == "train" else (f"{tags.EVAL}/",)
      self._data[key] = read_scalars(logdir, prefix)
    return self._data[key]


def _save(figure, path: str) -> None:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
  write_bytes_atomic(path, buffer.getvalue())


def _row_title(row: Row) -> str:
  return row.description


def write_plots(sweep: SweepRecords, table: Table, out_dir: str | None = None) -> tuple[list[str], list[str]]:
  """Writes the PNGs into SWEEP_DIR/plots; returns (paths, notes). Without matplotlib: no file, one note."""
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  except ImportError:
    return [], [f"Plots skipped: matplotlib is not installed ({INSTALL_NOTE})."]

  def new_figure(width: float, height: float):
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg backend, without pyplot's global state
    return figure

  out_dir = out_dir or os.path.join(sweep.path, PLOTS_DIR)
  os.makedirs(out_dir, exist_ok=True)
  cache, paths, notes = _Cache(), [], []
  tasks = [c.task for c in table.columns]

  # (a) Task weights.
  rows = table.rows
  if rows:
    ncols = min(3, len(rows))
    nrows = -(-len(rows) // ncols)
    figure = new_figure(4.2 * ncols, 3.0 * nrows)
    drawn = 0
    for index, row in enumerate(rows):
      axes = figure.add_subplot(nrows, ncols, index + 1)
      for task in tasks:
        band = seed_band([cache.scalars(run, "train").get(tags.per_task(tags.WEIGHT, task), []) for run in row.runs])
        if band is None:
          continue
        steps, mean, low, high = band
        (line,) = axes.plot(steps, mean, label=task)
        axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn += 1
      axes.set_title(_row_title(row), fontsize=9)
      axes.set_xlabel("step")
      axes.set_ylabel("task weight")
      axes.grid(alpha=0.3)
      if axes.lines:
        axes.legend(fontsize=8)
    if drawn:
      figure.suptitle(f"Task weights (mean over {_seeds_text(rows)}; band: min–max over seeds)", fontsize=10)
      path = os.path.join(out_dir, "weights.png")
      _save(figure, path)
      paths.append(path)
    else:
      notes.append("No weight/<task> scalars in the runs' train/ event files, so there is no weights plot.")

  # (b) Validation curves of each task's primary metric.
  for column in table.columns:
    tag = tags.eval_metric(column.task, column.metric)
    figure = new_figure(6.0, 4.0)
    axes = figure.add_subplot(1, 1, 1)
    for row in rows:
      band = seed_band([cache.scalars(run, "eval").get(tag, []) for run in row.runs])
      if band is not None:
        axes.plot(band[0], band[1], label=_row_title(row))
    if table.baseline is not None:
      runs = [run for run in table.baseline.runs if run.single_task == column.task]
      band = seed_band([cache.scalars(run, "eval").get(tag, []) for run in runs])
      if band is not None:
        axes.plot(band[0], band[1], "k--", label="single-task")
    if not axes.lines:
      notes.append(f"No {tag} scalars in the runs' eval/ event files, so there is no validation plot for it.")
      continue
    axes.set_title(f"Validation {column.task} {column.metric} {column.arrow} (mean over seeds)", fontsize=10)
    axes.set_xlabel("step")
    axes.set_ylabel(f"{column.metric} {column.arrow}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    path = os.path.join(out_dir, f"val_{_safe(column.task)}_{_safe(column.metric)}.png")
    _save(figure, path)
    paths.append(path)
  return paths, notes


def _seeds_text(rows: Sequence[Row]) -> str:
  counts = sorted({row.num_seeds for row in rows})
  return f"{counts[0]} seed(s)" if len(counts) == 1 else f"{counts[0]}–{counts[-1]} seeds"

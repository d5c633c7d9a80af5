"""PNG plots of a sweep (optional: needs matplotlib, the `plots` extra).

  plots/weights.png              task-weight trajectories (weight/<task> of each run's train/ events): one
                                 subplot per table row (balancer and grid point), one line per task
  plots/val_<task>_<metric>.png  validation curves (eval/<task>/<metric> of each run's eval/ events, the
                                 table's primary metric): one line per table row, and the single-task
                                 baseline dashed in black

Every line is the mean over seeds with a min–max band over seeds, and has markers, so that a run with one
evaluation (--eval_every longer than the run: the README's sweep) still shows a point, with its min–max
as a vertical bar. When every line of a plot has the same single step, the lines' points are drawn side by
side around that step (the x axis then only says which step). A line that coincides with an earlier one
(fixed weights: every task at 1.0) is drawn over it dashed, with hollow markers, and its legend entry says
"(overlaps <the other>)", so the earlier line shows in its gaps.

Steps are aligned across seeds: a point is drawn at the steps every seed of the row has logged. A line
whose runs did not all log its scalar is the mean over those that did, and its legend entry says how many
("fixed (n=1)"), as a table cell does.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import io
import math
import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from mtl_research import tags
from mtl_research.files import write_bytes_atomic
from mtl_research.reports.collect import RunRecord, SweepRecords
from mtl_research.reports.events import read_scalars
from mtl_research.reports.table import Column, Row, Table

if TYPE_CHECKING:
  from matplotlib.axes import Axes
  from matplotlib.figure import Figure

INSTALL_NOTE = "install the plots extra: pip install -e .[plots]"
PLOTS_DIR = "plots"
WEIGHTS_FILE = "weights.png"
# One marker shape per line of a plot (told apart in grayscale too); the baseline's is BASELINE_MARKER.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
BASELINE_MARKER = "x"
BASELINE_LABEL = "single-task"
# Dash patterns of the lines drawn over an earlier line they coincide with: the earlier line shows in the gaps.
OVERLAP_DASHES: tuple[tuple[float, tuple[float, ...]], ...] = (
  (0.0, (6.0, 3.0)),
  (0.0, (2.0, 2.0)),
  (0.0, (8.0, 3.0, 2.0, 3.0)),
  (0.0, (4.0, 4.0)),
)
# Lines closer than this fraction of the plot's value span everywhere are drawn as coinciding (about 3 pixels).
OVERLAP_TOLERANCE = 0.01
# Beyond this many points a line marks every k-th one: markers on hundreds of summary steps would hide the line.
MAX_MARKERS = 25


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def validation_file(column: Column) -> str:
  return f"val_{_safe(column.task)}_{_safe(column.metric)}.png"


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


@dataclasses.dataclass(frozen=True)
class Series:
  """One line of a plot: the mean over seeds and its min–max band, at the steps every seed logged."""

  label: str
  steps: np.ndarray
  mean: np.ndarray
  low: np.ndarray
  high: np.ndarray
  color: str
  marker: str
  dashed: bool = False  # the single-task baseline


def _series(label: str, band, color: str, marker: str, dashed: bool = False) -> Series | None:
  if band is None:
    return None
  steps, mean, low, high = band
  return Series(label, np.asarray(steps), mean, low, high, color, marker, dashed)


def overlaps(series: Sequence[Series], tolerance: float = OVERLAP_TOLERANCE) -> list[int | None]:
  """For each line, the index of an earlier line it coincides with (hides), or None.

  Two lines coincide when they have the same steps and their means differ by at
  most `tolerance` × the span of every value of the plot (bands included) at
  every step; lines at a constant equal value (span 0) coincide when equal to
  rounding.
  """
  values = np.concatenate([np.concatenate([s.mean, s.low, s.high]) for s in series]) if series else np.zeros(0)
  values = values[np.isfinite(values)]
  span = float(values.max() - values.min()) if values.size else 0.0
  scale = float(np.abs(values).max()) if values.size else 0.0
  limit = tolerance * span + 1e-9 * max(scale, 1.0)
  hidden: list[int | None] = []
  for j, line in enumerate(series):
    hidden.append(
      next(
        (
          i
          for i in range(j)
          if np.array_equal(series[i].steps, line.steps) and bool(np.all(np.abs(series[i].mean - line.mean) <= limit))
        ),
        None,
      )
    )
  return hidden


def side_by_side(series: Sequence[Series]) -> bool:
  """True when every line is one point at the same step: the points are then drawn side by side."""
  steps = {tuple(s.steps.tolist()) for s in series}
  return len(series) > 1 and len(steps) == 1 and len(next(iter(steps))) == 1


def draw(axes: Axes, series: Sequence[Series], legend_outside: bool = False) -> None:
  """Draws each line with markers and its min–max band (a vertical bar for a single point); see the module doc.

  `legend_outside` puts the legend right of the axes, where it cannot cover a
  point or a band (a plot with one line per table row).
  """
  dodge = side_by_side(series)
  hidden = [None] * len(series) if dodge else overlaps(series)
  restyled = 0
  for index, line in enumerate(series):
    x = line.steps.astype(np.float64) + (index - (len(series) - 1) / 2 if dodge else 0.0)
    style: dict[str, Any] = {
      "color": line.color,
      "marker": line.marker,
      "markersize": 4.5,
      "linewidth": 1.5,
      "linestyle": "--" if line.dashed else "-",
      "label": line.label,
    }
    if len(x) > MAX_MARKERS:
      style["markevery"] = math.ceil(len(x) / MAX_MARKERS)
    under = hidden[index]
    if under is not None:
      style.update(
        linestyle=OVERLAP_DASHES[restyled % len(OVERLAP_DASHES)],
        markerfacecolor="none",
        markersize=8.0 + 2.0 * restyled,
        markeredgewidth=1.3,
        label=f"{line.label} (overlaps {series[under].label})",
      )
      restyled += 1
    axes.plot(x, line.mean, **style)
    # Black (the baseline) at the colors' alpha would darken every band it crosses.
    alpha = 0.1 if line.color == "k" else 0.2
    if len(x) >= 2:
      axes.fill_between(x, line.low, line.high, color=line.color, alpha=alpha, linewidth=0)
    else:
      axes.vlines(x, line.low, line.high, color=line.color, alpha=1.75 * alpha, linewidth=6)
  if dodge:
    step = float(series[0].steps[0])
    axes.set_xticks([step], [str(int(step))])
    axes.set_xlim(step - len(series) / 2, step + len(series) / 2)
    axes.set_xlabel("step (one point per line, side by side)")
  else:
    axes.set_xlabel("step")
  axes.grid(alpha=0.3)
  if axes.lines and legend_outside:
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
  elif axes.lines:
    axes.legend(fontsize=8)


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

  def band(self, runs: Sequence[RunRecord], which: str, tag: str):
    return seed_band([self.scalars(run, which).get(tag, []) for run in runs])

  def series(
    self, label: str, runs: Sequence[RunRecord], which: str, tag: str, color: str, marker: str, dashed: bool = False
  ) -> Series | None:
    """The line of `runs` (their mean and band); "(n=k)" in its label when only k of them logged `tag`."""
    logged = sum(1 for run in runs if self.scalars(run, which).get(tag))
    if 0 < logged < len(runs):  # the mean is over fewer seeds than the row has: never claimed as all of them
      label = f"{label} (n={logged})"
    return _series(label, self.band(runs, which, tag), color, marker, dashed)


def _save(figure: Figure, path: str) -> None:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
  write_bytes_atomic(path, buffer.getvalue())


def _new_figure(width: float, height: float) -> Figure | None:
  """A figure on the Agg canvas, without pyplot's global state; None without matplotlib."""
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  figure = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(figure)
  return figure


def build_figures(table: Table) -> tuple[dict[str, Figure], list[str]]:
  """{file name: figure} of every plot with data, and notes on those without; ImportError without matplotlib."""
  if _new_figure(1, 1) is None:
    raise ImportError(f"matplotlib is not installed ({INSTALL_NOTE})")
  cache, figures, notes = _Cache(), {}, []
  if table.rows:
    figure = _weights_figure(table, cache)
    if figure is not None:
      figures[WEIGHTS_FILE] = figure
    else:
      notes.append("No weight/<task> scalars in the runs' train/ event files, so there is no weights plot.")
  for column in table.columns:
    figure = _validation_figure(table, column, cache)
    if figure is not None:
      figures[validation_file(column)] = figure
    else:
      tag = tags.eval_metric(column.task, column.metric)
      notes.append(f"No {tag} scalars in the runs' eval/ event files, so there is no validation plot for it.")
  return figures, notes


def write_plots(sweep: SweepRecords, table: Table, out_dir: str | None = None) -> tuple[list[str], list[str]]:
  """Writes the PNGs into SWEEP_DIR/plots; returns (paths, notes). Without matplotlib: no file, one note."""
  try:
    figures, notes = build_figures(table)
  except ImportError:
    return [], [f"Plots skipped: matplotlib is not installed ({INSTALL_NOTE})."]
  out_dir = out_dir or os.path.join(sweep.path, PLOTS_DIR)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name, figure in figures.items():
    path = os.path.join(out_dir, name)
    _save(figure, path)
    paths.append(path)
  return paths, notes


def _weights_figure(table: Table, cache: _Cache) -> Figure | None:
  """One panel per table row, one line per task (colors and markers by task, the same in every panel)."""
  rows = table.rows
  ncols = min(3, len(rows))
  nrows = -(-len(rows) // ncols)
  figure = _new_figure(4.2 * ncols, 3.0 * nrows)
  assert figure is not None  # build_figures checked matplotlib
  drawn = 0
  for index, row in enumerate(rows):
    axes = figure.add_subplot(nrows, ncols, index + 1)
    series = [
      cache.series(
        column.task,
        row.runs,
        "train",
        tags.per_task(tags.WEIGHT, column.task),
        f"C{i % 10}",
        MARKERS[i % len(MARKERS)],
      )
      for i, column in enumerate(table.columns)
    ]
    present = [s for s in series if s is not None]
    draw(axes, present)
    drawn += len(present)
    axes.set_title(row.description, fontsize=9)
    axes.set_ylabel("task weight")
  if not drawn:
    return None
  figure.suptitle(f"Task weights (mean over {_seeds_text(rows)}; band: min–max over seeds)", fontsize=10)
  return figure


def _validation_figure(table: Table, column: Column, cache: _Cache) -> Figure | None:
  """One line per table row, then the task's single-task baseline (dashed, black)."""
  tag = tags.eval_metric(column.task, column.metric)
  series = [
    cache.series(row.description, row.runs, "eval", tag, f"C{i % 10}", MARKERS[i % len(MARKERS)])
    for i, row in enumerate(table.rows)
  ]
  if table.baseline is not None:
    runs = [run for run in table.baseline.runs if run.single_task == column.task]
    series.append(cache.series(BASELINE_LABEL, runs, "eval", tag, "k", BASELINE_MARKER, dashed=True))
  present = [s for s in series if s is not None]
  if not present:
    return None
  figure = _new_figure(7.5, 4.0)
  assert figure is not None  # build_figures checked matplotlib
  axes = figure.add_subplot(1, 1, 1)
  draw(axes, present, legend_outside=True)
  axes.set_title(
    f"Validation {column.task} {column.metric} {column.arrow} (mean over seeds; band: min–max over seeds)",
    fontsize=10,
  )
  axes.set_ylabel(f"{column.metric} {column.arrow}")
  return figure


def _seeds_text(rows: Sequence[Row]) -> str:
  counts = sorted({row.num_seeds for row in rows})
  return f"{counts[0]} seed(s)" if len(counts) == 1 else f"{counts[0]}–{counts[-1]} seeds"

"""The results table of a sweep: Markdown, LaTeX (booktabs) and CSV.

Rows: one per (balancer, grid point) of the multi-task runs, plus a
"single-task" row with the baselines' means. Columns: each task's primary test
metric (--regression_metric: mae or mse; --classification_metric: accuracy, or
auc for binary tasks), as mean ± sample standard deviation (ddof=1) over seeds;
a row with one seed shows its value without ± (one value has no spread). Then
Δm% (see delta_m.py) when every task has a single-task baseline, else the
column is left out and a note says why, and the number of seeds.

Bold marks the best multi-task row of each column (the lowest mean where lower
is better, the highest otherwise; ties at the shown precision are all bold).
The single-task row is the reference and is never bold.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from mtl_research.errors import UserError
from mtl_research.reports import delta_m as delta_m_lib
from mtl_research.reports.collect import RunRecord, Sweep
from mtl_research.train.writers import write_text_atomic

REGRESSION_METRICS = ("mae", "mse")
CLASSIFICATION_METRICS = ("accuracy", "auc")
BASELINE_LABEL = "single-task"
DELTA_M_KEY = "delta_m"
METRIC_ORDER = ("mse", "mae", "r2", "accuracy", "auc", "cross_entropy")
MISSING = "—"
RESULTS_MD, RESULTS_TEX, RESULTS_CSV = "results.md", "results.tex", "results.csv"

CITATION = "Maninis et al., CVPR 2019; Vandenhende et al., TPAMI 2021"


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

  @property
  def all_rows(self) -> list[Row]:
    return ([self.baseline] if self.baseline else []) + self.rows

  def baseline_means(self) -> dict[str, float] | None:
    """Primary-metric means of the baselines, by task, when Δm is defined."""
    if not self.has_delta_m or self.baseline is None:
      return None
    return {c.task: self.baseline.stats[(c.task, c.metric)].mean for c in self.columns}


def primary_metric(task: str, info: Mapping, regression_metric: str, classification_metric: str,
                   notes: list[str]) -> str:
  if info.get("kind") == "regression":
    return regression_metric
  if classification_metric == "auc" and int(info.get("num_classes", 0)) != 2:
    notes.append(f"Task {task} has {info.get('num_classes')} classes and AUC is defined here for binary tasks "
                 "only, so its column shows accuracy.")
    return "accuracy"
  return classification_metric


def _task_infos(runs: Sequence[RunRecord]) -> dict[str, Mapping]:
  infos: dict[str, Mapping] = {}
  for run in runs:
    for task, info in (run.metrics.get("tasks") or {}).items():
      infos.setdefault(task, info)
    for task in run.metrics.get("test", {}):
      infos.setdefault(task, {})
  return infos


def _ordered_metrics(names: Iterable[str], first: Iterable[str]) -> list[str]:
  names, first = set(names), [m for m in first if m in set(names)]
  rest = sorted(names - set(first), key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else 99, m))
  return first + rest


def _stats(runs: Sequence[RunRecord], tasks: Iterable[str]) -> tuple[dict[tuple[str, str], Stat], dict[str, int]]:
  stats, seeds = {}, {}
  for task in tasks:
    values: dict[str, list[float]] = {}
    with_task = [run for run in runs if task in run.metrics.get("test", {})]
    for run in with_task:
      for metric, value in run.test_metrics(task).items():
        values.setdefault(metric, []).append(float(value) if value is not None else math.nan)
    for metric, vals in values.items():
      stats[(task, metric)] = aggregate(vals)
    seeds[task] = len({run.seed for run in with_task})
  return stats, seeds


def _order_key(sweep: Sweep, grid_flags: Sequence[str]):
  balancers = list(sweep.spec.get("balancers") or [])
  grid = sweep.spec.get("grid") or {}

  def key(item):
    balancer, point = item
    values = dict(point)
    ranks = []
    for flag in grid_flags:
      value = values.get(flag)
      declared = [str(v) for v in grid.get(flag, [])]
      ranks.append((0, declared.index(value), "") if value in declared else (1, 0, str(value)))
    return (balancers.index(balancer) if balancer in balancers else len(balancers), balancer, ranks)

  return key


def build_table(sweep: Sweep, regression_metric: str = "mae", classification_metric: str = "accuracy") -> Table:
  """Aggregates the sweep's finished runs; UserError for an unknown metric choice."""
  if regression_metric not in REGRESSION_METRICS:
    raise UserError(f"--regression_metric={regression_metric} is not one of {', '.join(REGRESSION_METRICS)}.")
  if classification_metric not in CLASSIFICATION_METRICS:
    raise UserError(f"--classification_metric={classification_metric} is not one of "
                    f"{', '.join(CLASSIFICATION_METRICS)}.")
  notes = list(sweep.notes)
  multi, baselines = sweep.multi_task_runs, sweep.baseline_runs
  infos = _task_infos(multi or baselines)
  tasks = list(infos)
  columns = []
  for task in tasks:
    metric = primary_metric(task, infos[task], regression_metric, classification_metric, notes)
    columns.append(Column(task, metric, not delta_m_lib.lower_is_better(metric)))
  metrics = {}
  for task in tasks:
    seen = {m for run in sweep.runs for m in run.test_metrics(task)}
    metrics[task] = _ordered_metrics(seen, [c.metric for c in columns if c.task == task])

  grid_flags = [flag for flag in sweep.grid_flags if any(flag in run.grid for run in multi)]
  groups: dict[tuple, list[RunRecord]] = {}
  for run in multi:
    groups.setdefault((run.balancer, tuple(sorted(run.grid.items()))), []).append(run)
  rows = []
  for key in sorted(groups, key=_order_key(sweep, grid_flags)):
    runs = sorted(groups[key], key=lambda r: r.seed)
    stats, seeds = _stats(runs, tasks)
    grid = {flag: dict(key[1])[flag] for flag in grid_flags if flag in dict(key[1])}
    rows.append(Row(key[0], key[0], grid, runs, stats, seeds))

  baseline = None
  if baselines:
    stats, seeds = {}, {}
    for task in tasks:
      task_stats, task_seeds = _stats([r for r in baselines if r.single_task == task], [task])
      stats.update(task_stats)
      seeds.update({t: n for t, n in task_seeds.items() if n})
    baseline = Row(BASELINE_LABEL, "", {}, sorted(baselines, key=lambda r: (r.single_task, r.seed)), stats, seeds,
                   baseline=True)

  has_delta_m = _delta_m_available(columns, baseline, rows, notes)
  if has_delta_m:
    means = {c.task: baseline.stats[(c.task, c.metric)].mean for c in columns}
    for row in rows:
      row.delta_m = aggregate(run_delta_m(run, columns, means) for run in row.runs)
  _note_missing_seeds(sweep, rows, baseline, tasks, notes)
  title = os.path.basename(os.path.normpath(sweep.path))
  return Table(title, columns, grid_flags, rows, baseline, has_delta_m, notes, metrics)


def run_delta_m(run: RunRecord, columns: Sequence[Column], baseline_means: Mapping[str, float]) -> float:
  """Δm% of one run's primary test metrics against the baseline means (NaN if one is missing)."""
  method = {c.task: float(run.test_metrics(c.task).get(c.metric, math.nan)) for c in columns}
  return delta_m_lib.delta_m(method, baseline_means, {c.task: not c.higher_is_better for c in columns})


def _delta_m_available(columns: Sequence[Column], baseline: Row | None, rows: Sequence[Row],
                       notes: list[str]) -> bool:
  if not rows or not columns:
    if not rows:
      notes.append("No multi-task run has finished, so there are no method rows and no Δm.")
    return False
  missing = [c.task for c in columns if baseline is None or (c.task, c.metric) not in baseline.stats]
  if missing:
    notes.append(f"The Δm column is omitted: no finished single-task baseline for task(s) {', '.join(missing)} "
                 "(Δm needs a baseline for every task; sweep with single-task baselines to get it).")
    return False
  bad = [c.task for c in columns if not (math.isfinite(baseline.stats[(c.task, c.metric)].mean)
                                         and baseline.stats[(c.task, c.metric)].mean != 0.0)]
  if bad:
    notes.append(f"The Δm column is omitted: the single-task baseline of task(s) {', '.join(bad)} is zero or not "
                 "finite, so the relative change is undefined.")
    return False
  return True


def _note_missing_seeds(sweep: Sweep, rows: Sequence[Row], baseline: Row | None, tasks: Sequence[str],
                        notes: list[str]) -> None:
  expected = len(sweep.spec.get("seeds") or [])
  if not expected:
    return
  short = [f"{row.description}: {row.num_seeds}" for row in rows if row.num_seeds < expected]
  if baseline is not None:
    short += [f"{BASELINE_LABEL} {task}: {baseline.seeds.get(task, 0)}" for task in tasks
              if baseline.seeds.get(task, 0) < expected and sweep.spec.get("with_single_task")]
  if short:
    notes.append(f"Fewer finished seeds than the sweep's {expected} in: {'; '.join(short)}.")


# Formatting.


def _number(value: float, decimals: int = 4, signed: bool = False) -> str:
  if value is None or not math.isfinite(value):
    return "nan" if value is not None else MISSING
  return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _cell_parts(stat: Stat | None, decimals: int = 4, signed: bool = False) -> tuple[str, str | None]:
  """(mean text, std text or None)."""
  if stat is None:
    return MISSING, None
  std = _number(stat.std, decimals) if stat.std is not None else None
  return _number(stat.mean, decimals, signed), std


def _best(rows: Sequence[Row], get, higher_is_better: bool, decimals: int = 4, signed: bool = False) -> set[int]:
  """Indices of rows whose shown mean equals the best shown mean."""
  candidates = [(i, get(row).mean) for i, row in enumerate(rows)
                if get(row) is not None and math.isfinite(get(row).mean)]
  if not candidates:
    return set()
  best = (max if higher_is_better else min)(v for _, v in candidates)
  shown = _number(best, decimals, signed)
  return {i for i, v in candidates if _number(v, decimals, signed) == shown}


@dataclasses.dataclass(frozen=True)
class _Cell:
  mean: str
  std: str | None = None
  bold: bool = False


def _grid(table: Table) -> list[list[_Cell]]:
  """The table body as cells: method, grid flags, metrics, [Δm], seeds; baseline first."""
  best = {c: _best(table.rows, lambda r, c=c: r.stats.get((c.task, c.metric)), c.higher_is_better)
          for c in table.columns}
  best_dm = _best(table.rows, lambda r: r.delta_m, True, 2, True) if table.has_delta_m else set()
  body = []
  for index, row in enumerate(table.all_rows):
    i = index - (1 if table.baseline else 0)
    cells = [_Cell(row.label)] + [_Cell(row.grid.get(flag, "")) for flag in table.grid_flags]
    for column in table.columns:
      mean, std = _cell_parts(row.stats.get((column.task, column.metric)))
      cells.append(_Cell(mean, std, not row.baseline and i in best[column]))
    if table.has_delta_m:
      if row.baseline:
        cells.append(_Cell("0 (ref.)"))
      else:
        mean, std = _cell_parts(row.delta_m, 2, True)
        cells.append(_Cell(mean, std, i in best_dm))
    counts = set(row.seeds.values())
    if row.baseline and len(counts) > 1:
      cells.append(_Cell(", ".join(f"{t}: {n}" for t, n in row.seeds.items())))
    else:
      cells.append(_Cell(str(counts.pop() if row.baseline and counts else row.num_seeds)))
    body.append(cells)
  return body


def _headers(table: Table) -> list[tuple[str, str]]:
  """(plain text, arrow) per column."""
  heads = [("method", "")] + [(flag, "") for flag in table.grid_flags]
  heads += [(f"{c.task} {c.metric}", c.arrow) for c in table.columns]
  if table.has_delta_m:
    heads.append(("Δm%", "↑"))
  heads.append(("seeds", ""))
  return heads


def _caption_lines(table: Table) -> list[str]:
  lines = [
      "Test metrics at the checkpoint each run selected (--selection), mean ± sample standard deviation "
      "(ddof=1) over seeds; a value without ± comes from one seed. ↑: higher is better, ↓: lower is better. "
      "Bold: the best multi-task row of each column.",
  ]
  if table.has_delta_m:
    lines.append(f"{delta_m_lib.FORMULA} ({CITATION}), where T is the number of tasks, M_t and B_t are the "
                 "method's and the single-task baseline's means over seeds of task t's metric in this table, and "
                 "l_t = 1 when lower is better for it, else 0. Positive Δm = better than single-task. A row's Δm "
                 "is the mean ± std over seeds of each seed's Δm against the baseline means (the mean equals Δm of "
                 "the row's means).")
  return lines


# Markdown.


def _md_escape(text: str) -> str:
  return text.replace("|", "\\|")


def render_markdown(table: Table) -> str:
  heads = _headers(table)
  lines = [f"# Results: {table.title}", ""]
  for line in _caption_lines(table):
    lines += [line, ""]
  lines.append("| " + " | ".join(_md_escape(f"{h} {a}".strip()) for h, a in heads) + " |")
  aligns = ["---"] * (1 + len(table.grid_flags)) + ["---:"] * (len(heads) - 1 - len(table.grid_flags))
  lines.append("|" + "|".join(aligns) + "|")
  for cells in _grid(table):
    texts = []
    for cell in cells:
      text = cell.mean if cell.std is None else f"{cell.mean} ± {cell.std}"
      texts.append(f"**{_md_escape(text)}**" if cell.bold else _md_escape(text))
    lines.append("| " + " | ".join(texts) + " |")
  if table.notes:
    lines += ["", "Notes:", ""] + [f"- {note}" for note in table.notes]
  return "\n".join(lines) + "\n"


# LaTeX.

_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "Δ": r"$\Delta$", "Σ": r"$\Sigma$", "±": r"$\pm$", "—": "---", "–": "--",
    "−": r"$-$", "·": r"$\cdot$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "≥": r"$\geq$", "≤": r"$\leq$",
    "×": r"$\times$",
}


def latex_escape(text: str) -> str:
  """Plain text as LaTeX: specials escaped (_ % & $ # { } ~ ^ \\), symbols as math."""
  return "".join(_LATEX.get(ch, ch) for ch in str(text))


def _latex_number(text: str) -> str:
  if text[:1] in "+-" and text[1:2].isdigit():
    return f"${text[0]}${text[1:]}"
  return latex_escape(text)


def render_latex(table: Table) -> str:
  """A booktabs table environment; needs \\usepackage{booktabs} in the preamble."""
  heads = _headers(table)
  spec = "l" * (1 + len(table.grid_flags)) + "r" * (len(heads) - 1 - len(table.grid_flags))
  head_cells = []
  for text, arrow in heads:
    if text == "Δm%":
      head_cells.append(r"$\Delta_m$ (\%) $\uparrow$")
    else:
      head_cells.append(latex_escape(text) + (" " + latex_escape(arrow) if arrow else ""))
  caption = (r"Test metrics at the checkpoint each run selected, mean $\pm$ sample standard deviation over seeds "
             r"(a value without $\pm$ comes from one seed); $\uparrow$/$\downarrow$: higher/lower is better; "
             r"bold: best multi-task row per column.")
  if table.has_delta_m:
    caption += (r" $\Delta_m = \frac{100}{T}\sum_{t=1}^{T}(-1)^{l_t}\,\frac{M_t - B_t}{B_t}$ "
                r"(Maninis et al., CVPR 2019; Vandenhende et al., TPAMI 2021), where $M_t$ and $B_t$ are the "
                r"method's and the single-task baseline's means of task $t$'s metric and $l_t = 1$ when lower is "
                r"better; positive $\Delta_m$ is better than single-task.")
  lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}",
           rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:.-]+', '-', table.title)}-results}}",
           rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(head_cells) + r" \\", r"\midrule"]
  for index, cells in enumerate(_grid(table)):
    texts = []
    for cell in cells:
      text = _latex_number(cell.mean)
      if cell.std is not None:
        text += r" $\pm$ " + _latex_number(cell.std)
      texts.append(rf"\textbf{{{text}}}" if cell.bold else text)
    lines.append(" & ".join(texts) + r" \\")
    if index == 0 and table.baseline is not None and table.rows:
      lines.append(r"\midrule")
  lines += [r"\bottomrule", r"\end{tabular}"]
  if table.notes:
    notes = " ".join(latex_escape(note) for note in table.notes)
    lines.append(rf"\par\smallskip{{\footnotesize {notes}\par}}")
  lines.append(r"\end{table}")
  return "\n".join(lines) + "\n"


# CSV.


def csv_header(table: Table) -> list[str]:
  header = ["method", "balancer", *table.grid_flags, "seeds"]
  for task, metrics in table.metrics.items():
    header.append(f"{task}/seeds")
    for metric in metrics:
      header += [f"{task}/{metric}/mean", f"{task}/{metric}/std"]
  if table.has_delta_m:
    header += [f"{DELTA_M_KEY}/mean", f"{DELTA_M_KEY}/std"]
  return header


def _plain(value: float | None) -> str:
  return "" if value is None else repr(float(value))


def render_csv(table: Table) -> str:
  """One row per table row; plain numbers (Python repr), empty where undefined (e.g. std of one seed)."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(csv_header(table))
  for row in table.all_rows:
    values = [row.label, row.balancer, *[row.grid.get(flag, "") for flag in table.grid_flags], row.num_seeds]
    for task, metrics in table.metrics.items():
      values.append(row.seeds.get(task, 0))
      for metric in metrics:
        stat = row.stats.get((task, metric))
        values += [_plain(stat.mean if stat else None), _plain(stat.std if stat else None)]
    if table.has_delta_m:
      if row.baseline:
        values += [0.0, ""]
      else:
        values += [_plain(row.delta_m.mean if row.delta_m else None),
                   _plain(row.delta_m.std if row.delta_m else None)]
    writer.writerow(values)
  return out.getvalue()


def write_tables(sweep_dir: str, table: Table) -> dict[str, str]:
  """Writes results.md, results.tex and results.csv atomically; returns their paths."""
  paths = {"markdown": os.path.join(sweep_dir, RESULTS_MD), "latex": os.path.join(sweep_dir, RESULTS_TEX),
           "csv": os.path.join(sweep_dir, RESULTS_CSV)}
  for kind, text in (("markdown", render_markdown(table)), ("latex", render_latex(table)),
                     ("csv", render_csv(table))):
    try:
      write_text_atomic(paths[kind], text)
    except OSError as error:
      raise UserError(f"{paths[kind]} cannot be written: {error.strerror}.") from None
  return paths

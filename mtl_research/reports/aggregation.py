"""A sweep's finished runs aggregated into a Table (table.py).

Primary metric of each task: --regression_metric (mae or mse) for regression,
--classification_metric (accuracy, or auc for binary tasks) for
classification. Method rows group the multi-task runs by (balancer, grid
point), in the order sweep.json declares them; each row's statistics are mean ±
std over seeds of every test metric. A row's Δm (Maninis et al., CVPR 2019;
Vandenhende et al., TPAMI 2021; see delta_m.py) is the mean ± std over seeds of
one Δm per seed, when every task has a finite, non-zero single-task baseline
(otherwise a note says why not): paired by seed (each seed against the baselines
of the same seed) when every seed of every row has a baseline of every task with
its seed, else unpaired (each seed against the baseline means). One definition
holds for the whole table, and a note names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import itertools
import math
import os

from mtl_research import metrics as metrics_lib
from mtl_research.errors import UserError
from mtl_research.reports import delta_m as delta_m_lib
from mtl_research.reports.collect import RunRecord, SweepRecords
from mtl_research.reports.table import Column, Row, Stat, Table, aggregate

# The primary metric a table may show per task kind: the choices and defaults of --regression_metric and
# --classification_metric (mtl-summarize, mtl-ablate), which define their flags from these.
PRIMARY_REGRESSION_METRICS = (metrics_lib.MAE, metrics_lib.MSE)
PRIMARY_CLASSIFICATION_METRICS = (metrics_lib.ACCURACY, metrics_lib.AUC)
DEFAULT_REGRESSION_METRIC = metrics_lib.MAE
DEFAULT_CLASSIFICATION_METRIC = metrics_lib.ACCURACY
BASELINE_LABEL = "single-task"
# The order of a task's other metrics after its primary one (Table.metrics: the CSV, the HParams data).
METRIC_ORDER = (
  metrics_lib.MSE,
  metrics_lib.MAE,
  metrics_lib.R2,
  metrics_lib.ACCURACY,
  metrics_lib.AUC,
  metrics_lib.CROSS_ENTROPY,
)


def build_table(
  sweep: SweepRecords,
  regression_metric: str = DEFAULT_REGRESSION_METRIC,
  classification_metric: str = DEFAULT_CLASSIFICATION_METRIC,
) -> Table:
  """Aggregates the sweep's finished runs; UserError for an unknown metric choice."""
  _check_choice("regression_metric", regression_metric, PRIMARY_REGRESSION_METRICS)
  _check_choice("classification_metric", classification_metric, PRIMARY_CLASSIFICATION_METRICS)
  notes = list(sweep.notes)
  infos = _task_infos(sweep.multi_task_runs or sweep.baseline_runs)
  tasks = list(infos)
  columns = [_column(task, infos[task], regression_metric, classification_metric, notes) for task in tasks]
  grid_flags = [flag for flag in sweep.grid_flags if any(flag in run.grid for run in sweep.multi_task_runs)]
  rows = _method_rows(sweep, tasks, grid_flags)
  baseline = _baseline_row(sweep.baseline_runs, tasks)
  title = os.path.basename(os.path.normpath(sweep.path))
  table = Table(title, columns, grid_flags, rows, baseline, False, notes, _metrics_seen(sweep, columns))
  table.has_delta_m = _delta_m_available(columns, baseline, rows, notes)
  if table.has_delta_m:
    seed_baselines = table.seed_baselines()
    # Rows -> their seeds that lack a usable baseline of the same seed; one such seed unpairs the whole table, so
    # that every row of it means the same thing.
    unpaired: dict[str, list[int]] = {}
    for row in rows:
      seeds = sorted({run.seed for run in row.runs if not delta_m_lib.can_pair([run.seed], seed_baselines, tasks)})
      if seeds:
        unpaired[row.description] = seeds
    table.delta_m_paired = not unpaired
    for row in rows:
      # A run without a value of every task has no Δm: the row's Δm is over the others, and its cell says how many.
      values = (run_delta_m(run, columns, _reference(table, run)) for run in row.runs)
      row.delta_m = aggregate(value for value in values if math.isfinite(value))
    notes.insert(0, _delta_m_note(table.delta_m_paired, unpaired))
  _note_fewer_values(table, notes)
  _note_missing_seeds(sweep, rows, baseline, tasks, notes)
  return table


def run_delta_m(run: RunRecord, columns: Sequence[Column], baseline: Mapping[str, float]) -> float:
  """Δm% of one run's primary test metrics against `baseline` (B_t by task); NaN if the run lacks a metric.

  `baseline` is what the table compares the run with (Table.delta_m_baseline): the
  baselines of the run's own seed when the table is paired, else their means.
  """
  method = {c.task: _value(run, c.task, c.metric) for c in columns}
  return delta_m_lib.delta_m(method, baseline, {c.task: not c.higher_is_better for c in columns})


def _value(run: RunRecord, task: str, metric: str) -> float:
  """The run's test value of `metric` of `task`; NaN when it has none or it is undefined (null)."""
  value = run.test_metrics(task).get(metric)
  return math.nan if value is None else float(value)


def _reference(table: Table, run: RunRecord) -> Mapping[str, float]:
  reference = table.delta_m_baseline(run.seed)
  assert reference is not None  # only called when the table has Δm
  return reference


def _delta_m_note(paired: bool, unpaired: Mapping[str, Sequence[int]]) -> str:
  """Which Δm definition the table uses (delta_m.py), and for an unpaired table which seeds prevented pairing."""
  if paired:
    return (
      "Δm is paired by seed: each seed's Δm compares the run with the single-task baselines trained with the "
      "same seed (with the generated datasets --seed also draws the data), and a row shows the mean ± std of "
      "these per-seed values. The mean is not Δm of the row's means."
    )
  why = "; ".join(f"{row}: seed {', '.join(map(str, seeds))}" for row, seeds in unpaired.items())
  return (
    "Δm is not paired by seed, because these rows have seeds without a single-task baseline of every task with "
    f"the same seed (or with a zero or non-finite one): {why}. Each seed's Δm compares the run with the baselines' "
    "means over seeds, and a row shows the mean ± std of these per-seed values (the mean equals Δm of the row's "
    "means; its std also holds what the seed changes besides the method, such as the generated data)."
  )


def _check_choice(flag: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise UserError(f"--{flag}={value} is not one of {', '.join(choices)}.")


def _column(task: str, info: Mapping, regression_metric: str, classification_metric: str, notes: list[str]) -> Column:
  metric = _primary_metric(task, info, regression_metric, classification_metric, notes)
  return Column(task, metric, not delta_m_lib.lower_is_better(metric))


def _primary_metric(
  task: str, info: Mapping, regression_metric: str, classification_metric: str, notes: list[str]
) -> str:
  if info.get("kind") == "regression":
    return regression_metric
  if classification_metric == metrics_lib.AUC and int(info.get("num_classes", 0)) != 2:
    notes.append(
      f"Task {task} has {info.get('num_classes')} classes and AUC is defined here for binary tasks "
      "only, so its column shows accuracy."
    )
    return metrics_lib.ACCURACY
  return classification_metric


def _task_infos(runs: Sequence[RunRecord]) -> dict[str, Mapping]:
  infos: dict[str, Mapping] = {}
  for run in runs:
    for task, info in (run.metrics.get("tasks") or {}).items():
      infos.setdefault(task, info)
    for task in run.metrics.get("test", {}):
      infos.setdefault(task, {})
  return infos


def _metrics_seen(sweep: SweepRecords, columns: Sequence[Column]) -> dict[str, list[str]]:
  """Task -> every test metric of any run: the primary metric first, then METRIC_ORDER, then by name."""
  metrics = {}
  for column in columns:
    seen = {m for run in sweep.runs for m in run.test_metrics(column.task)}
    rest = sorted(seen - {column.metric}, key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else 99, m))
    metrics[column.task] = ([column.metric] if column.metric in seen else []) + rest
  return metrics


def _stats(runs: Sequence[RunRecord], tasks: Iterable[str]) -> tuple[dict[tuple[str, str], Stat], dict[str, int]]:
  stats: dict[tuple[str, str], Stat] = {}
  seeds: dict[str, int] = {}
  for task in tasks:
    values: dict[str, list[float]] = {}
    with_task = [run for run in runs if task in run.metrics.get("test", {})]
    for run in with_task:
      for metric, value in run.test_metrics(task).items():
        # Undefined (null) is no value: never a 0, never a NaN that makes the mean NaN. The Stat's n counts
        # the values it aggregates, so a cell over fewer values than its row's seeds says so (cells.py).
        if value is not None:
          values.setdefault(metric, []).append(float(value))
    for metric, vals in values.items():
      stat = aggregate(vals)
      assert stat is not None  # every metric in `values` has at least one value
      stats[(task, metric)] = stat
    seeds[task] = len({run.seed for run in with_task})
  return stats, seeds


def _method_rows(sweep: SweepRecords, tasks: Sequence[str], grid_flags: Sequence[str]) -> list[Row]:
  """One row per (balancer, grid point) of the multi-task runs, in the sweep's declared order."""
  groups: dict[tuple, list[RunRecord]] = {}
  for run in sweep.multi_task_runs:
    groups.setdefault((run.balancer, tuple(sorted(run.grid.items()))), []).append(run)
  rows = []
  for balancer, point in sorted(groups, key=_order_key(sweep, grid_flags)):
    runs = sorted(groups[(balancer, point)], key=lambda r: r.seed)
    stats, seeds = _stats(runs, tasks)
    grid = {flag: dict(point)[flag] for flag in grid_flags if flag in dict(point)}
    rows.append(Row(balancer, balancer, grid, runs, stats, seeds))
  return rows


def _order_key(sweep: SweepRecords, grid_flags: Sequence[str]):
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


def _baseline_row(baselines: Sequence[RunRecord], tasks: Sequence[str]) -> Row | None:
  """The single-task row: each task's statistics over the baselines trained on it alone."""
  if not baselines:
    return None
  stats, seeds = {}, {}
  for task in tasks:
    task_stats, task_seeds = _stats([r for r in baselines if r.single_task == task], [task])
    stats.update(task_stats)
    seeds.update({t: n for t, n in task_seeds.items() if n})
  runs = sorted(baselines, key=lambda r: (r.single_task, r.seed))
  return Row(BASELINE_LABEL, "", {}, runs, stats, seeds, baseline=True)


def _delta_m_available(columns: Sequence[Column], baseline: Row | None, rows: Sequence[Row], notes: list[str]) -> bool:
  if not rows or not columns:
    if not rows:
      notes.append("No multi-task run has finished, so there are no method rows and no Δm.")
    return False
  missing = [c.task for c in columns if baseline is None or not baseline.seeds.get(c.task)]
  if missing:
    notes.append(
      f"The Δm column is omitted: no finished single-task baseline for task(s) {', '.join(missing)} "
      "(Δm needs a baseline for every task; sweep with single-task baselines to get it)."
    )
    return False
  assert baseline is not None  # without one every column is missing above
  undefined = [f"{c.task} {c.metric}" for c in columns if (c.task, c.metric) not in baseline.stats]
  if undefined:
    notes.append(
      f"The Δm column is omitted: the single-task baselines have no defined value of {', '.join(undefined)} "
      "(null or absent in their metrics.json), so the relative change is undefined."
    )
    return False
  bad = [
    c.task
    for c in columns
    if not (math.isfinite(baseline.stats[(c.task, c.metric)].mean) and baseline.stats[(c.task, c.metric)].mean != 0.0)
  ]
  if bad:
    notes.append(
      f"The Δm column is omitted: the single-task baseline of task(s) {', '.join(bad)} is zero or not "
      "finite, so the relative change is undefined."
    )
    return False
  return True


def _note_fewer_values(table: Table, notes: list[str], limit: int = 8) -> None:
  """Names the runs whose value a cell lacks (undefined, or absent from metrics.json), if any."""
  lacking = []
  for row in table.all_rows:
    for column in table.columns:
      for run in row.runs:
        if row.baseline and run.single_task != column.task:
          continue
        why = _lacks(run, column.task, column.metric)
        if why:
          label = BASELINE_LABEL if row.baseline else row.description
          lacking.append(f"{label}: {column.task} {column.metric} of run {run.name} ({why})")
  if not lacking:
    return
  more = f"; and {len(lacking) - limit} more" if len(lacking) > limit else ""
  notes.append(
    "A cell marked (n=k) is over k values, fewer than its row's seeds, and — marks one with none: an undefined "
    f"value (null in metrics.json) is left out, never counted as 0. Left out: {'; '.join(lacking[:limit])}{more}."
  )


def _lacks(run: RunRecord, task: str, metric: str) -> str | None:
  """Why the run has no test value of `metric` of `task` (None if it has one)."""
  if task not in run.metrics.get("test", {}):
    return f"its metrics.json has no test metrics of task {task}"
  metrics = run.test_metrics(task)
  if metric not in metrics:
    return f"its metrics.json has no test.{task}.{metric}"
  if metrics[metric] is not None:
    return None
  reason = run.undefined_reason(f"test.{task}.{metric}")
  return f"undefined: {reason}" if reason else "undefined: null in its metrics.json"


def definition_gaps(sweep: SweepRecords, table: Table) -> list[str]:
  """What of sweep.json's definition the table lacks, one phrase each; [] without sweep.json.

  Every declared balancer has a row; a balancer's rows cover every declared
  value of the grid flags its runs take (a flag read only by other balancers
  is no axis of its rows); every row, and with with_single_task the baseline
  of every task, has every declared seed.
  """
  spec = sweep.spec
  if not spec:
    return []
  seeds = list(spec.get("seeds") or [])
  grid = spec.get("grid") or {}
  gaps = []
  for balancer in spec.get("balancers") or []:
    rows = [row for row in table.rows if row.balancer == balancer]
    if not rows:
      gaps.append(f"balancer {balancer} has no run in the table")
      continue
    flags = sorted({flag for row in rows for flag in row.grid if flag in grid})
    points = {tuple(row.grid.get(flag) for flag in flags) for row in rows}
    for point in itertools.product(*(grid[flag] for flag in flags)):
      if point not in points:
        gaps.append(f"{balancer} ({', '.join(f'{f}={v}' for f, v in zip(flags, point))}) has no run in the table")
  for row in table.rows:
    absent = [seed for seed in seeds if seed not in {run.seed for run in row.runs}]
    if absent:
      gaps.append(f"{row.description} lacks seed(s) {', '.join(map(str, absent))}")
  if spec.get("with_single_task"):
    for column in table.columns:
      have = {run.seed for run in table.baseline.runs if run.single_task == column.task} if table.baseline else set()
      absent = [seed for seed in seeds if seed not in have]
      if absent:
        gaps.append(f"{BASELINE_LABEL} {column.task} lacks seed(s) {', '.join(map(str, absent))}")
  return gaps


def _note_missing_seeds(
  sweep: SweepRecords, rows: Sequence[Row], baseline: Row | None, tasks: Sequence[str], notes: list[str]
) -> None:
  expected = len(sweep.spec.get("seeds") or [])
  if not expected:
    return
  short = [f"{row.description}: {row.num_seeds}" for row in rows if row.num_seeds < expected]
  if baseline is not None:
    short += [
      f"{BASELINE_LABEL} {task}: {baseline.seeds.get(task, 0)}"
      for task in tasks
      if baseline.seeds.get(task, 0) < expected and sweep.spec.get("with_single_task")
    ]
  if short:
    notes.append(f"Fewer finished seeds than the sweep's {expected} in: {'; '.join(short)}.")

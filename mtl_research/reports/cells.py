"""A Table's header and body as formatted text cells, shared by the Markdown and LaTeX renderers.

Means and stds show 4 decimals, Δm% 2 with a sign; a row with one seed shows
its value without ± (one value has no spread). A cell over fewer values than
its row has seeds (a run's value undefined, null in its metrics.json, or absent)
says how many, "(n=k)"; a cell with no value shows MISSING. Never is a count
claimed that the values do not have. Bold marks the best multi-task
row of each column (the lowest mean where lower is better, the highest
otherwise; ties at the shown precision are all bold). The single-task row is
the reference and is never bold.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import math

from mtl_research.reports.table import Row, Stat, Table

MISSING = "—"


@dataclasses.dataclass(frozen=True)
class Cell:
  mean: str
  std: str | None = None
  bold: bool = False
  count: int | None = None  # the values aggregated, when fewer than the row's seeds: shown as "(n=k)"

  @property
  def count_text(self) -> str:
    return f" (n={self.count})" if self.count is not None else ""


def headers(table: Table) -> list[tuple[str, str]]:
  """(plain text, arrow) per column."""
  heads = [("method", "")] + [(flag, "") for flag in table.grid_flags]
  heads += [(f"{c.task} {c.metric}", c.arrow) for c in table.columns]
  if table.has_delta_m:
    heads.append(("Δm%", "↑"))
  heads.append(("seeds", ""))
  return heads


def body(table: Table) -> list[list[Cell]]:
  """The table body as cells: method, grid flags, metrics, [Δm], seeds; baseline first."""
  best = {
    c: _best(table.rows, lambda r, c=c: r.stats.get((c.task, c.metric)), c.higher_is_better) for c in table.columns
  }
  best_dm = _best(table.rows, lambda r: r.delta_m, True, 2, True) if table.has_delta_m else set()
  rows = []
  for index, row in enumerate(table.all_rows):
    i = index - (1 if table.baseline else 0)
    cells = [Cell(row.label)] + [Cell(row.grid.get(flag, "")) for flag in table.grid_flags]
    for column in table.columns:
      stat = row.stats.get((column.task, column.metric))
      mean, std = _parts(stat)
      cells.append(
        Cell(mean, std, not row.baseline and i in best[column], _fewer(stat, row.expected_values(column.task)))
      )
    if table.has_delta_m:
      cells.append(_delta_m_cell(row, i in best_dm))
    cells.append(_seeds_cell(row))
    rows.append(cells)
  return rows


def seeds_phrase(table: Table) -> str:
  """The seed count of every row, e.g. "3 seeds", or "seeds" when rows (or the baseline's tasks) differ."""
  counts = {row.num_seeds for row in table.rows}
  if table.baseline is not None:
    counts |= set(table.baseline.seeds.values())
  if len(counts) != 1:
    return "seeds"
  count = counts.pop()
  return f"{count} seed" if count == 1 else f"{count} seeds"


def _number(value: float, decimals: int = 4, signed: bool = False) -> str:
  if not math.isfinite(value):
    return "nan"
  return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _parts(stat: Stat | None, decimals: int = 4, signed: bool = False) -> tuple[str, str | None]:
  """(mean text, std text or None)."""
  if stat is None:
    return MISSING, None
  std = _number(stat.std, decimals) if stat.std is not None else None
  return _number(stat.mean, decimals, signed), std


def _best(rows: Sequence[Row], get, higher_is_better: bool, decimals: int = 4, signed: bool = False) -> set[int]:
  """Indices of rows whose shown mean equals the best shown mean."""
  candidates = [
    (i, get(row).mean) for i, row in enumerate(rows) if get(row) is not None and math.isfinite(get(row).mean)
  ]
  if not candidates:
    return set()
  best = (max if higher_is_better else min)(v for _, v in candidates)
  shown = _number(best, decimals, signed)
  return {i for i, v in candidates if _number(v, decimals, signed) == shown}


def _fewer(stat: Stat | None, expected: int) -> int | None:
  """The number of values of a cell when it is fewer than its row's seeds (a run lacks the value), else None."""
  return stat.n if stat is not None and stat.n < expected else None


def _delta_m_cell(row: Row, bold: bool) -> Cell:
  if row.baseline:
    return Cell("0 (ref.)")
  mean, std = _parts(row.delta_m, 2, True)
  return Cell(mean, std, bold, _fewer(row.delta_m, row.num_seeds))


def _seeds_cell(row: Row) -> Cell:
  """A row's number of seeds; the baselines' per task when their counts differ."""
  counts = set(row.seeds.values())
  if row.baseline and len(counts) > 1:
    return Cell(", ".join(f"{t}: {n}" for t, n in row.seeds.items()))
  return Cell(str(counts.pop() if row.baseline and counts else row.num_seeds))

"""results.md: the results table as Markdown, with a short caption and the notes.

The caption says what the table shows and Δm in a few words; the notes hold the
rest: how each cell is selected and aggregated, what bold means, Δm's formula
(Maninis et al., CVPR 2019; Vandenhende et al., TPAMI 2021) and whether it is
paired by seed (a note of the table), then the sweep's own notes.
"""

from __future__ import annotations

from collections.abc import Iterable

from mtl_research.reports import cells as cells_lib
from mtl_research.reports import delta_m as delta_m_lib
from mtl_research.reports.collect import RunRecord
from mtl_research.reports.table import Table

FILE_NAME = "results.md"


def render(table: Table) -> str:
  heads = cells_lib.headers(table)
  lines = [f"# Results: {table.title}", "", caption(table), ""]
  lines.append("| " + " | ".join(_escape(f"{h} {a}".strip()) for h, a in heads) + " |")
  aligns = ["---"] * (1 + len(table.grid_flags)) + ["---:"] * (len(heads) - 1 - len(table.grid_flags))
  lines.append("|" + "|".join(aligns) + "|")
  for cells in cells_lib.body(table):
    lines.append("| " + " | ".join(_cell_text(cell) for cell in cells) + " |")
  lines += ["", "Notes:", ""] + [f"- {note}" for note in definition_notes(table) + table.notes]
  return "\n".join(lines) + "\n"


def caption(table: Table) -> str:
  """What the table shows, in one or two sentences."""
  text = f"Test metrics, mean ± std over {cells_lib.seeds_phrase(table)}; bold: the best multi-task row of each column."
  if table.has_delta_m:
    pairing = "paired by seed" if table.delta_m_paired else "each seed against the baselines' means"
    text += (
      " Δm%: the mean relative change against the single-task baselines in percent, "
      f"{pairing} (see the notes); positive = better than single-task."
    )
  return text


def definition_notes(table: Table) -> list[str]:
  """How to read the table: selection, statistic, arrows and bold, Δm's formula (its pairing is a table note)."""
  criteria = _selection_criteria(run for row in table.all_rows for run in row.runs)
  notes = [
    "Each value is a test metric at the checkpoint the run selected by its validation score (--selection"
    + (f"; here {', '.join(criteria)}" if criteria else "")
    + "), not at its last step.",
    "Cells are the mean ± sample standard deviation (ddof=1) over seeds; a value without ± comes from one seed. "
    "↑: higher is better, ↓: lower is better. Bold: the best multi-task row of each column (ties at the shown "
    "precision are all bold); the single-task row is the reference and is never bold.",
  ]
  if table.has_delta_m:
    notes.append(
      f"{delta_m_lib.FORMULA} ({delta_m_lib.CITATION}), where T is the number of tasks, M_t and B_t are the "
      "method's and the single-task baseline's values of task t's metric in this table, and l_t = 1 when lower is "
      "better for it, else 0. Positive Δm = better than single-task."
    )
  return notes


def _selection_criteria(runs: Iterable[RunRecord]) -> list[str]:
  criteria = {str((run.metrics.get("selection") or {}).get("criterion", "")) for run in runs}
  return sorted(c for c in criteria if c)


def _escape(text: str) -> str:
  return text.replace("|", "\\|")


def _cell_text(cell: cells_lib.Cell) -> str:
  text = _escape(cell.mean if cell.std is None else f"{cell.mean} ± {cell.std}")
  return (f"**{text}**" if cell.bold else text) + cell.count_text

"""results.md: the results table as Markdown, with a caption and the notes."""

from __future__ import annotations

from mtl_research.reports import cells as cells_lib
from mtl_research.reports import delta_m as delta_m_lib
from mtl_research.reports.table import Table

FILE_NAME = "results.md"


def render(table: Table) -> str:
  heads = cells_lib.headers(table)
  lines = [f"# Results: {table.title}", ""]
  for line in _caption_lines(table):
    lines += [line, ""]
  lines.append("| " + " | ".join(_escape(f"{h} {a}".strip()) for h, a in heads) + " |")
  aligns = ["---"] * (1 + len(table.grid_flags)) + ["---:"] * (len(heads) - 1 - len(table.grid_flags))
  lines.append("|" + "|".join(aligns) + "|")
  for cells in cells_lib.body(table):
    lines.append("| " + " | ".join(_cell_text(cell) for cell in cells) + " |")
  if table.notes:
    lines += ["", "Notes:", ""] + [f"- {note}" for note in table.notes]
  return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
  return text.replace("|", "\\|")


def _cell_text(cell: cells_lib.Cell) -> str:
  text = _escape(cell.mean if cell.std is None else f"{cell.mean} ± {cell.std}")
  return f"**{text}**" if cell.bold else text


def _caption_lines(table: Table) -> list[str]:
  lines = [
    "Test metrics at the checkpoint each run selected (--selection), mean ± sample standard deviation "
    "(ddof=1) over seeds; a value without ± comes from one seed. ↑: higher is better, ↓: lower is better. "
    "Bold: the best multi-task row of each column.",
  ]
  if table.has_delta_m:
    lines.append(
      f"{delta_m_lib.FORMULA} ({delta_m_lib.CITATION}), where T is the number of tasks, M_t and B_t "
      "are the method's and the single-task baseline's means over seeds of task t's metric in this "
      "table, and l_t = 1 when lower is better for it, else 0. Positive Δm = better than single-task. "
      "A row's Δm is the mean ± std over seeds of each seed's Δm against the baseline means (the mean "
      "equals Δm of the row's means)."
    )
  return lines

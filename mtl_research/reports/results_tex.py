"""results.tex: the results table as a booktabs LaTeX table (ASCII only: symbols as math).

Needs \\usepackage{booktabs} in the preamble. The caption says what a paper
needs (the statistic, the seeds, what bold means, Δm in a few words: Maninis et
al., CVPR 2019; Vandenhende et al., TPAMI 2021); the full definitions are in the
notes of results.md, and the table's own notes (skipped runs, how Δm pairs
seeds) follow the table in a footnote-sized paragraph.
"""

from __future__ import annotations

import re

from mtl_research.reports import cells as cells_lib
from mtl_research.reports.table import Table

FILE_NAME = "results.tex"

_LATEX = {
  "\\": r"\textbackslash{}",
  "&": r"\&",
  "%": r"\%",
  "$": r"\$",
  "#": r"\#",
  "_": r"\_",
  "{": r"\{",
  "}": r"\}",
  "~": r"\textasciitilde{}",
  "^": r"\textasciicircum{}",
  "<": r"\textless{}",
  ">": r"\textgreater{}",
  "Δ": r"$\Delta$",
  "Σ": r"$\Sigma$",
  "±": r"$\pm$",
  "—": "---",
  "-": "-{}",  # no -- or --- ligature (an en or em dash) from text such as --seed
  "–": "--",
  "−": r"$-$",
  "·": r"$\cdot$",
  "↑": r"$\uparrow$",
  "↓": r"$\downarrow$",
  "≥": r"$\geq$",
  "≤": r"$\leq$",
  "×": r"$\times$",
}


def escape(text: str) -> str:
  """Plain text as LaTeX: specials escaped (_ % & $ # { } ~ ^ \\), symbols as math; Δm as in the header."""
  return r"$\Delta_m$".join("".join(_LATEX.get(ch, ch) for ch in part) for part in str(text).split("Δm"))


def render(table: Table) -> str:
  heads = cells_lib.headers(table)
  spec = "l" * (1 + len(table.grid_flags)) + "r" * (len(heads) - 1 - len(table.grid_flags))
  caption = _caption(table)
  lines = [
    r"\begin{table}[t]",
    r"\centering",
    r"\small",
    rf"\caption{{{caption}}}",
    rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:.-]+', '-', table.title)}-results}}",
    rf"\begin{{tabular}}{{{spec}}}",
    r"\toprule",
    " & ".join(map(_head_cell, heads)) + r" \\",
    r"\midrule",
  ]
  for index, cells in enumerate(cells_lib.body(table)):
    lines.append(" & ".join(_cell_text(cell) for cell in cells) + r" \\")
    if index == 0 and table.baseline is not None and table.rows:
      lines.append(r"\midrule")
  lines += [r"\bottomrule", r"\end{tabular}"]
  if table.notes:
    notes = " ".join(escape(note) for note in table.notes)
    lines.append(rf"\par\smallskip{{\footnotesize {notes}\par}}")
  lines.append(r"\end{table}")
  return "\n".join(lines) + "\n"


def _head_cell(head: tuple[str, str]) -> str:
  text, arrow = head
  if text == "Δm%":
    return r"$\Delta_m$ (\%) $\uparrow$"
  return escape(text) + (" " + escape(arrow) if arrow else "")


def _caption(table: Table) -> str:
  """One or two sentences: the cells' statistic, bold, and Δm's definition in a few words."""
  text = rf"Test metrics, mean $\pm$ std over {escape(cells_lib.seeds_phrase(table))}; bold: best multi-task result."
  if table.has_delta_m:
    pairing = "paired by seed" if table.delta_m_paired else "each seed against the baselines' means"
    text += (
      r" $\Delta_m$: mean relative change against the single-task baselines in \%, "
      rf"{pairing} (Maninis et al., 2019); higher is better."
    )
  return text


def _cell_text(cell: cells_lib.Cell) -> str:
  text = _number(cell.mean)
  if cell.std is not None:
    text += r" $\pm$ " + _number(cell.std)
  # \textbf alone leaves math ($-$, $\pm$) in normal weight; \boldmath, local to the \textbf group, bolds it too.
  return (rf"\textbf{{\boldmath {text}}}" if cell.bold else text) + escape(cell.count_text)


def _number(text: str) -> str:
  """A signed number's sign in math mode ($+$1.25), anything else escaped."""
  if text[:1] in "+-" and text[1:2].isdigit():
    return f"${text[0]}${text[1:]}"
  return escape(text)

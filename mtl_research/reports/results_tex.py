"""results.tex: the results table as a booktabs LaTeX table (ASCII only: symbols as math).

Needs \\usepackage{booktabs} in the preamble.
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
  "–": "--",
  "−": r"$-$",
  "·": r"$\cdot$",
  "↑": r"$\uparrow$",
  "↓": r"$\downarrow$",
  "≥": r"$\geq$",
  "≤": r"$\leq$",
  "×": r"$\times$",
}

_CAPTION = (
  r"Test metrics at the checkpoint each run selected, mean $\pm$ sample standard deviation over seeds "
  r"(a value without $\pm$ comes from one seed); $\uparrow$/$\downarrow$: higher/lower is better; "
  r"bold: best multi-task row per column."
)
_DELTA_M_CAPTION = (
  r" $\Delta_m = \frac{100}{T}\sum_{t=1}^{T}(-1)^{l_t}\,\frac{M_t - B_t}{B_t}$ "
  r"(Maninis et al., CVPR 2019; Vandenhende et al., TPAMI 2021), where $M_t$ and $B_t$ are the "
  r"method's and the single-task baseline's means of task $t$'s metric and $l_t = 1$ when lower "
  r"is better; positive $\Delta_m$ is better than single-task."
)


def escape(text: str) -> str:
  """Plain text as LaTeX: specials escaped (_ % & $ # { } ~ ^ \\), symbols as math."""
  return "".join(_LATEX.get(ch, ch) for ch in str(text))


def render(table: Table) -> str:
  heads = cells_lib.headers(table)
  spec = "l" * (1 + len(table.grid_flags)) + "r" * (len(heads) - 1 - len(table.grid_flags))
  caption = _CAPTION + (_DELTA_M_CAPTION if table.has_delta_m else "")
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


def _cell_text(cell: cells_lib.Cell) -> str:
  text = _number(cell.mean)
  if cell.std is not None:
    text += r" $\pm$ " + _number(cell.std)
  return rf"\textbf{{{text}}}" if cell.bold else text


def _number(text: str) -> str:
  """A signed number's sign in math mode ($+$1.25), anything else escaped."""
  if text[:1] in "+-" and text[1:2].isdigit():
    return f"${text[0]}${text[1:]}"
  return escape(text)

"""summarize(): every report of a sweep directory at once (mtl-summarize calls it)."""

from __future__ import annotations

import os

from mtl_research.errors import UserError
from mtl_research.files import write_text_atomic
from mtl_research.reports import aggregation as aggregation_lib
from mtl_research.reports import collect as collect_lib
from mtl_research.reports import hparams as hparams_lib
from mtl_research.reports import plots as plots_lib
from mtl_research.reports import results_csv, results_md, results_tex
from mtl_research.reports.table import Table

_RESULTS = (("results_md", results_md), ("results_tex", results_tex), ("results_csv", results_csv))


def summarize(
  sweep_dir: str,
  regression_metric: str = aggregation_lib.DEFAULT_REGRESSION_METRIC,
  classification_metric: str = aggregation_lib.DEFAULT_CLASSIFICATION_METRIC,
  plots: bool = True,
) -> dict:
  """Writes results.{md,tex,csv}, plots/*.png (if matplotlib is importable) and the HParams data.

  Raises UserError (one sentence) if `sweep_dir` has no runs/ or no finished
  run, or a metric choice is unknown. Returns {"markdown": the Markdown table
  text, "results_md", "results_tex", "results_csv": paths, "plots": [paths],
  "hparams": {"config_dir", "final_files"}, "notes": [sentences], "runs",
  "unfinished", "failed": counts, "has_delta_m": bool}.
  """
  sweep = collect_lib.collect(sweep_dir)
  table = aggregation_lib.build_table(sweep, regression_metric, classification_metric)
  results = write_results(sweep_dir, table)
  notes = list(table.notes)
  plot_paths: list[str] = []
  if plots:
    plot_paths, plot_notes = plots_lib.write_plots(sweep, table, os.path.join(sweep_dir, plots_lib.PLOTS_DIR))
    notes += plot_notes
  hparams_paths, hparams_notes = hparams_lib.write_hparams(sweep, table)
  notes += hparams_notes
  return {
    **results,
    "markdown": results_md.render(table),
    "plots": plot_paths,
    "hparams": hparams_paths,
    "notes": notes,
    "runs": len(sweep.runs),
    "unfinished": len(sweep.unfinished),
    "failed": len(sweep.failed),
    "has_delta_m": table.has_delta_m,
  }


def write_results(sweep_dir: str, table: Table) -> dict[str, str]:
  """Renders results.md, results.tex and results.csv, then writes each atomically; returns their paths."""
  texts = {key: module.render(table) for key, module in _RESULTS}
  paths = {key: os.path.join(sweep_dir, module.FILE_NAME) for key, module in _RESULTS}
  for key, path in paths.items():
    try:
      write_text_atomic(path, texts[key])
    except OSError as error:
      raise UserError(f"{path} cannot be written: {error.strerror}.") from None
  return paths

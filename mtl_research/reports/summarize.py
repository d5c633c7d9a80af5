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
from mtl_research.reports.collect import SweepRecords
from mtl_research.reports.table import Table

_RESULTS = (("results_md", results_md), ("results_tex", results_tex), ("results_csv", results_csv))


def summarize(
  sweep_dir: str,
  regression_metric: str = aggregation_lib.DEFAULT_REGRESSION_METRIC,
  classification_metric: str = aggregation_lib.DEFAULT_CLASSIFICATION_METRIC,
  plots: bool = True,
  strict: bool = False,
) -> dict:
  """Writes results.{md,tex,csv}, plots/*.png (if matplotlib is importable) and the HParams data.

  Raises UserError (one sentence) before writing anything if `sweep_dir` has
  no runs/ or no finished run that can be read, its sweep.json is damaged, a
  metric choice is unknown, or, with `strict`, the table would not cover the
  whole sweep (check_complete). Returns {"markdown": the Markdown table text,
  "results_md", "results_tex", "results_csv": paths, "plots": [paths],
  "hparams": {"config_dir", "final_files"}, "notes": [sentences], "runs",
  "unfinished", "failed", "unreadable": counts, "has_delta_m": bool}.
  """
  sweep = collect_lib.collect(sweep_dir)
  table = aggregation_lib.build_table(sweep, regression_metric, classification_metric)
  if strict:
    check_complete(sweep, table)
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
    "unreadable": len(sweep.unreadable),
    "has_delta_m": table.has_delta_m,
  }


def check_complete(sweep: SweepRecords, table: Table) -> None:
  """--strict: UserError (one sentence: the count, and the first) unless the table covers the whole sweep.

  The whole sweep is every run sweep.json defines: each run directory finished
  and read correctly (none unfinished, failed or unreadable), and every run of
  the definition present (aggregation.definition_gaps: a run never started has
  no directory). Without sweep.json that cannot be known, so it is refused too.
  """
  skipped = sweep.skipped()
  if skipped:
    kinds = [
      f"{count} {kind}"
      for count, kind in (
        (len(sweep.unreadable), "unreadable"),
        (len(sweep.failed), "failed"),
        (len(sweep.unfinished), "unfinished"),
      )
      if count
    ]
    raise UserError(
      f"--strict: {len(skipped)} run(s) of --sweep_dir={sweep.path} would be left out of the table "
      f"({', '.join(kinds)}); the first: {skipped[0].rstrip('.')}."
    )
  if not sweep.spec:
    raise UserError(
      f"--strict: {sweep.spec_file} is missing, so whether the table covers the whole sweep cannot be checked."
    )
  gaps = aggregation_lib.definition_gaps(sweep, table)
  if gaps:
    raise UserError(
      f"--strict: the table does not cover the sweep that {sweep.spec_file} defines ({len(gaps)} gap(s)); "
      f"the first: {gaps[0]}."
    )


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

"""`mtl-summarize`: the results table, plots and HParams dashboard of a sweep directory.

  python scripts/summarize.py --sweep_dir=DIR [--regression_metric=mae|mse]
      [--classification_metric=accuracy|auc] [--noplots] [--strict]

Writes DIR/results.md, DIR/results.tex, DIR/results.csv, DIR/plots/*.png (with
matplotlib, the `plots` extra) and the HParams data for `tensorboard
--logdir=DIR`; prints the Markdown table and where the files are. Runs that are
unfinished, failed or unreadable are left out and counted in the notes; with
--strict any of them (or a run of sweep.json's definition without a directory)
refuses the whole summary before anything is written.
"""

from __future__ import annotations

import os

from absl import app, flags

from mtl_research.cli.common import entry_point, parse_flags
from mtl_research.errors import UserError
from mtl_research.reports import aggregation

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines this command's flags in `flag_values`; run() calls it when the program starts.

  Not on import: mtl-ablate defines a --sweep_dir of its own, and a process
  that imports both modules (a test session) must not define a flag twice. A
  flag already defined is left as it is, so calling this twice is harmless.
  """
  if "sweep_dir" not in flag_values:
    flags.DEFINE_string(
      "sweep_dir", None, "Sweep directory written by mtl-ablate (holds runs/).", flag_values=flag_values
    )
  if "regression_metric" not in flag_values:
    flags.DEFINE_enum(
      "regression_metric",
      aggregation.DEFAULT_REGRESSION_METRIC,
      aggregation.PRIMARY_REGRESSION_METRICS,
      "Primary metric of regression tasks (lower is better).",
      flag_values=flag_values,
    )
  if "classification_metric" not in flag_values:
    flags.DEFINE_enum(
      "classification_metric",
      aggregation.DEFAULT_CLASSIFICATION_METRIC,
      aggregation.PRIMARY_CLASSIFICATION_METRICS,
      "Primary metric of classification tasks (higher is better); auc applies to binary tasks "
      "only, the others show accuracy.",
      flag_values=flag_values,
    )
  if "strict" not in flag_values:
    flags.DEFINE_bool(
      "strict",
      False,
      "Refuse (exit status 1, nothing written) unless the table covers the whole sweep that sweep.json "
      "defines: every run finished and read correctly (none unfinished, failed or unreadable, none never "
      "started). Without it such runs are left out of the table and counted in its notes.",
      flag_values=flag_values,
    )
  if "plots" not in flag_values:
    flags.DEFINE_bool(
      "plots",
      True,
      "Write PNG plots into <sweep_dir>/plots (needs matplotlib); --noplots skips them.",
      flag_values=flag_values,
    )


def _main() -> None:
  if not FLAGS.sweep_dir:
    raise UserError("--sweep_dir is required: the directory mtl-ablate wrote (it holds runs/).")
  from mtl_research.reports import collect  # pylint: disable=g-import-not-at-top

  collect.collect(FLAGS.sweep_dir)  # a bad directory fails here, before TensorFlow is imported
  from mtl_research.reports import summarize as summarize_lib  # pylint: disable=g-import-not-at-top

  result = summarize_lib.summarize(
    FLAGS.sweep_dir,
    FLAGS.regression_metric or aggregation.DEFAULT_REGRESSION_METRIC,
    FLAGS.classification_metric or aggregation.DEFAULT_CLASSIFICATION_METRIC,
    FLAGS.plots,
    FLAGS.strict,
  )
  print(result["markdown"], end="")
  print(f"\nResults: {result['results_md']}, {result['results_tex']}, {result['results_csv']}")
  if result["plots"]:
    print(f"Plots: {os.path.dirname(result['plots'][0])} ({len(result['plots'])} PNG files)")
  table_notes = set(result["markdown"].splitlines())
  for note in result["notes"]:
    if f"- {note}" not in table_notes:
      print(f"Note: {note}")
  print(f"HParams: tensorboard --logdir {os.path.abspath(FLAGS.sweep_dir)}")


main = entry_point(_main)


def run() -> None:
  """Console-script entry point."""
  define_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()

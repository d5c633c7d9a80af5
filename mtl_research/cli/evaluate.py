"""`mtl-evaluate`: apply a trained run to a new CSV file, and/or export it as a SavedModel.

  python scripts/evaluate.py --run_dir=DIR --csv_path=FILE [--predictions_out=FILE] [--export_dir=DIR]

Rebuilds the run's architecture from its flags.txt (parsed with the flags'
own parsers: the global FLAGS keep this command's values), restores its
weights (`checkpoints.restore_model`: the selected checkpoint, else the newest
readable periodic one) and reads its preprocessing.json (the run must have
been trained on tabular data); then encodes FILE exactly as training did,
prints per-task metrics (for the target columns FILE has) in original units
and writes them to --metrics_out (default <run_dir>/evaluations/<file name>.json),
with the count of categories never seen in training per column. A file without
target columns gives predictions only (--predictions_out); the SavedModel of
--export_dir is `export.py`'s.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys

from absl import app, flags
import numpy as np
import tensorflow as tf

from mtl_research import config as config_lib
from mtl_research import export as export_lib
from mtl_research import flags as flags_lib  # noqa: F401  (defines --run_dir, --csv_path and the model's flags)
from mtl_research import metrics as metrics_lib
from mtl_research import tasks as tasks_lib
from mtl_research.cli.common import entry_point, parse_flags
from mtl_research.data import csv_reader, preprocessing, tabular
from mtl_research.data import summary as data_summary
from mtl_research.data.bundle import Split
from mtl_research.data.preprocessing import CategoricalFeature, NumericFeature, Preprocessing, RegressionTarget
from mtl_research.errors import UserError
from mtl_research.files import write_json_atomic, write_text_atomic
from mtl_research.models import ARCHITECTURES
from mtl_research.models.base import MultiTaskModel
from mtl_research.params import Param
from mtl_research.train import checkpoints
from mtl_research.train import run_dir as run_dir_lib
from mtl_research.train.evaluate import Evaluator

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines this command's own flags in `flag_values`; run() calls it when the program starts.

  Not on import, like every entry point's own flags: a process that imports
  several entry points (a test session) holds only the flags of the one it runs.
  """
  flags.DEFINE_string(
    "predictions_out",
    None,
    "Write per-row predictions of --csv_path to this CSV file: each task's value or class, and for a "
    "classification task <task>_p_<class>, the probability of each class.",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "export_dir",
    None,
    "Write a SavedModel serving raw feature columns into this new directory.",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "metrics_out", None, "Metrics file (default <run_dir>/evaluations/<csv name>.json).", flag_values=flag_values
  )


def _warn(line: str) -> None:
  print(line, file=sys.stderr)


def architecture(run: run_dir_lib.RunDir) -> config_lib.ComponentConfig:
  """The run's --model and its Params as its flags.txt gives them.

  Each value is parsed by its flag's own parser without being set, so the
  global FLAGS (this command's own flags) stay as parsed. A flag that an
  older flags.txt lacks takes its default, as on resume.
  """
  saved = run_dir_lib.read_flag_file(run.flags_file)

  def value(name: str, param: Param | None = None):
    flag = FLAGS[name]
    try:
      raw = flag.parser.parse(saved[name]) if name in saved else flag.default
      return param.parse(raw) if param else raw
    except (UserError, ValueError, TypeError) as error:
      raise UserError(
        f"{run.flags_file} gives --{name}={saved.get(name)}, which this version of mtl_research "
        f"cannot use ({str(error).rstrip('.')})."
      ) from None

  name = value("model")
  params = {param.name: value(param.name, param) for param in ARCHITECTURES.get(name).params}
  return config_lib.ComponentConfig(name, config_lib.frozen_mapping(params))


def load_model(run: run_dir_lib.RunDir, state: Preprocessing) -> MultiTaskModel:
  """The run's architecture, built for its preprocessing, with the weights of its checkpoint."""
  config = architecture(run)
  spec = tabular.feature_spec(state)
  model = ARCHITECTURES.get(config.name).component(tabular.task_specs(state), spec, config.params)
  example = {"numeric": tf.zeros([1, spec.numeric_dim])}
  if spec.embedded_vocab_sizes:
    example["embedded"] = tf.zeros([1, len(spec.embedded_vocab_sizes)], tf.int32)
  model(example, training=False)  # creates the variables the checkpoint fills
  checkpoints.restore_model(model, run.path, _warn)
  return model


def _read(path: str, state: Preprocessing) -> csv_reader.Table:
  strings = [f.name for f in state.features if isinstance(f, CategoricalFeature)]
  strings += [t.name for t in state.targets if t.kind == tasks_lib.CLASSIFICATION]
  numeric = [f.name for f in state.features if isinstance(f, NumericFeature)]
  return csv_reader.read_table(path, string_columns=strings, numeric_columns=numeric)


def scored_tasks(state: Preprocessing, table: csv_reader.Table) -> list[str]:
  """The tasks whose target column the table has, with at least one value in it (an empty column holds none)."""
  return [name for name in state.task_names if name in table.columns and tabular.target_rows(table, [name]).any()]


def evaluate_file(model, state: Preprocessing, table: csv_reader.Table) -> tuple[dict, dict, dict[str, int]]:
  """(metrics for `scored_tasks`, raw outputs for every row, unseen categories per column)."""
  features, unseen = tabular.encode_features_and_unseen(table, state)
  scored = scored_tasks(state, table)
  tasks = [t for t in model.task_specs if t.name in scored]
  evaluator = Evaluator(model, 1024, tabular.target_scale(state))
  dummy = {t.name: np.zeros(table.num_rows, t.label_dtype.as_numpy_dtype) for t in model.task_specs}
  outputs = evaluator.predict(Split(features, dummy))
  if not tasks:
    return {}, outputs, unseen
  scoring = state.with_tasks(scored)
  rows = np.flatnonzero(tabular.target_rows(table, scoring.task_names))
  labels = tabular.encode_targets(table.take(rows), scoring)
  metrics = {}
  for task in tasks:
    task_labels, task_out = labels[task.name], outputs[task.name][rows]
    if task.kind == tasks_lib.REGRESSION:
      task_labels = evaluator.original_units(task.name, task_labels)
      task_out = evaluator.original_units(task.name, task_out)
    metrics[task.name] = metrics_lib.task_metrics(task, task_labels, task_out)
  return metrics, outputs, unseen


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")  # what a class name may keep in a column name


def probability_column(task: str, class_name: str) -> str:
  """`<task>_p_<class>`, every character of the class name but ASCII letters, digits and `._-` as `_`.

  So that a header is one plain word per column whatever the class names hold
  (commas, quotes, spaces, line breaks); `predictions_csv` makes it unique.
  """
  return f"{task}_p_{_UNSAFE.sub('_', class_name)}"


def _unique(name: str, taken: set[str]) -> str:
  """`name`, or the first of `name_2`, `name_3`, ... not in `taken`; added to `taken`."""
  unique, n = name, 1
  while unique in taken:
    n += 1
    unique = f"{name}_{n}"
  taken.add(unique)
  return unique


def predictions_csv(model, state: Preprocessing, outputs: dict) -> str:
  """One row per input row, tasks in head order.

  Regression: `<task>`, the value in original units. Classification: `<task>`,
  the predicted class name, then `<task>_p_<class>` (`probability_column`),
  the probability of each class in the order of the run's class names.
  """
  columns, header = [], []
  taken = {task.name for task in model.task_specs}  # a class column never takes a task's name
  for task in model.task_specs:
    target = state.target(task.name)
    out = outputs[task.name]
    if isinstance(target, RegressionTarget):
      header.append(task.name)
      columns.append(out[:, 0] * target.std + target.mean)
    else:
      probabilities = np.exp(metrics_lib.log_softmax(out))
      header.append(task.name)
      columns.append(np.array(target.classes, dtype=object)[probabilities.argmax(axis=1)])
      for i, name in enumerate(target.classes):
        header.append(_unique(probability_column(task.name, name), taken))
        columns.append(probabilities[:, i])
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(zip(*columns))
  return buffer.getvalue()


def run_evaluate() -> dict:
  if not FLAGS.run_dir:
    raise UserError("--run_dir is required: the run to evaluate.")
  csv_path, export_dir = FLAGS.csv_path, FLAGS.export_dir
  if not csv_path and not export_dir:
    raise UserError("Give --csv_path=FILE to evaluate and/or --export_dir=DIR to export.")
  run = run_dir_lib.RunDir(FLAGS.run_dir)
  if not os.path.isfile(run.flags_file):
    raise UserError(f"--run_dir={run.path} is not a run directory (no flags.txt).")
  if not os.path.isfile(run.preprocessing_file):
    raise UserError(
      f"--run_dir={run.path} has no preprocessing.json: only runs trained on tabular data "
      "(--dataset=csv, npz or census_income) can be applied to a CSV file or exported."
    )
  state = preprocessing.read(run.preprocessing_file)
  if export_dir and os.path.exists(export_dir) and os.listdir(export_dir):
    raise UserError(f"--export_dir={export_dir} exists and is not empty; choose a new directory.")
  if export_dir:
    export_lib.output_names(state)  # before anything is written: two tasks cannot share an output
  for flag, path in (
    ("predictions_out", FLAGS.predictions_out),
    ("metrics_out", FLAGS.metrics_out),
    ("export_dir", export_dir),
  ):
    parent = os.path.dirname(os.path.abspath(path)) if path else ""
    if path and not (os.path.isdir(parent) and os.access(parent, os.W_OK)):
      raise UserError(f"--{flag}={path} cannot be written: {parent} is not a writable directory.")
  table = _read(csv_path, state) if csv_path else None
  if table is not None and not scored_tasks(state, table):
    # Before anything is written (an --export_dir included): the file would give nothing, or not what was asked.
    if not FLAGS.predictions_out:
      raise UserError(
        f"{csv_path} has no target columns ({', '.join(state.task_names)}), so there is nothing to evaluate; "
        "pass --predictions_out=FILE to write its predictions."
      )
    if FLAGS.metrics_out:
      raise UserError(
        f"--metrics_out={FLAGS.metrics_out} cannot be written: {csv_path} has no target columns "
        f"({', '.join(state.task_names)}), so there are no metrics; drop --metrics_out to write its predictions only."
      )
  model = load_model(run, state)
  metrics: dict = {}
  if table is not None:
    metrics, outputs, unseen = evaluate_file(model, state, table)
    line = data_summary.unseen_line(csv_path, unseen)
    if line:
      print(line)
    for task, values in metrics.items():
      print(f"{task}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    if metrics:
      out = FLAGS.metrics_out or os.path.join(run.path, "evaluations", os.path.basename(csv_path) + ".json")
      os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
      write_json_atomic(
        out, {"csv_path": csv_path, "rows": table.num_rows, "metrics": metrics, "unseen_categories": unseen}
      )
      print(f"Metrics: {out}")
    if FLAGS.predictions_out:
      write_text_atomic(FLAGS.predictions_out, predictions_csv(model, state, outputs))
      if not metrics:
        print(f"no target columns in {csv_path}: wrote predictions only")
      print(f"Predictions: {FLAGS.predictions_out}")
  if export_dir:
    export_lib.export(model, state, export_dir)
    print(f"SavedModel: {export_dir} (signature 'serve')")
  return metrics


main = entry_point(run_evaluate)


def run() -> None:
  """Console-script entry point."""
  define_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()

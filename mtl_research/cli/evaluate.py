"""`mtl-evaluate`: apply a trained run to a new CSV file, and/or export it as a SavedModel.

  python scripts/evaluate.py --run_dir=DIR --csv_path=FILE [--predictions_out=FILE] [--export_dir=DIR]

Rebuilds the run's architecture from its flags.txt (parsed with the flags'
own parsers: the global FLAGS keep this command's values), restores its
weights (`checkpoints.restore_model`, which chooses as the trainer does and
says which: the selected checkpoint of a finished run, the last one of a run
that selects none, the newest one of an unfinished run, or the newest readable
one when the selected one cannot be read) and reads its preprocessing.json
(the run must have been trained on tabular data); then encodes FILE exactly
as training did, prints per-task metrics (for the target columns FILE has,
on the rows with a value in each, as training keeps them) in original units
and writes them to --metrics_out (default <run_dir>/evaluations/<file
name>.json) with the checkpoint evaluated and the count of categories never
seen in training per column. A file without a row to score gives predictions
only (--predictions_out); the SavedModel of --export_dir is `export.py`'s.

Everything is read and checked before anything is written: each output path
(`check_outputs`), the run, its flags.txt and preprocessing.json, the file and
the checkpoint, so that a refused command leaves no file behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import csv
import dataclasses
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
from mtl_research.cli import common
from mtl_research.cli.common import entry_point, parse_flags
from mtl_research.data import csv_reader, preprocessing, tabular
from mtl_research.data import summary as data_summary
from mtl_research.data.bundle import Split
from mtl_research.data.preprocessing import CategoricalFeature, NumericFeature, Preprocessing, RegressionTarget
from mtl_research.errors import UserError
from mtl_research.files import undefined_numbers, write_json_atomic, write_text_atomic
from mtl_research.models import ARCHITECTURES
from mtl_research.models.base import MultiTaskModel
from mtl_research.params import Param
from mtl_research.train import checkpoints
from mtl_research.train import run_dir as run_dir_lib
from mtl_research.train.evaluate import Evaluator

FLAGS = flags.FLAGS
EVALUATIONS = "evaluations"  # where a run's metrics files go: <run_dir>/evaluations/<csv name>.json


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


def architecture(run: run_dir_lib.RunDir, saved: Mapping[str, str] | None = None) -> config_lib.ComponentConfig:
  """The run's --model and its Params as its flags.txt gives them (`saved`: read from it, if not given).

  Each value is parsed by its flag's own parser without being set, so the
  global FLAGS (this command's own flags) stay as parsed. A flag that an
  older flags.txt lacks takes its default, as on resume.
  """
  saved = run_dir_lib.read_flag_file(run.flags_file) if saved is None else saved
  name = _recorded(run, saved, "model")
  params = {param.name: _recorded(run, saved, param.name, param) for param in ARCHITECTURES.get(name).params}
  return config_lib.ComponentConfig(name, config_lib.frozen_mapping(params))


def _recorded(run: run_dir_lib.RunDir, saved: Mapping[str, str], name: str, param: Param | None = None):
  """The value of flag --`name` that flags.txt (`saved`) records, parsed as the flag (and `param`) parse it."""
  flag = FLAGS[name]
  try:
    raw = flag.parser.parse(saved[name]) if name in saved else flag.default
    return param.parse(raw) if param else raw
  except (UserError, ValueError, TypeError) as error:
    raise UserError(
      f"{run.flags_file} gives --{name}={saved.get(name)}, which this version of mtl_research "
      f"cannot use ({str(error).rstrip('.')})."
    ) from None


def load_model(
  run: run_dir_lib.RunDir, state: Preprocessing, config: config_lib.ComponentConfig, selection: str
) -> tuple[MultiTaskModel, checkpoints.Restored]:
  """The run's architecture, built for its preprocessing, with the weights of the checkpoint the run reports.

  `checkpoints.restore_model` chooses it as the trainer does (module docstring there) and says which.
  """
  spec = tabular.feature_spec(state)
  model = ARCHITECTURES.get(config.name).component(tabular.task_specs(state), spec, config.params)
  example = {"numeric": tf.zeros([1, spec.numeric_dim])}
  if spec.embedded_vocab_sizes:
    example["embedded"] = tf.zeros([1, len(spec.embedded_vocab_sizes)], tf.int32)
  model(example, training=False)  # creates the variables the checkpoint fills
  finished = os.path.isfile(run.metrics_file)  # metrics.json means "finished" (train/run_dir.py)
  return model, checkpoints.restore_model(model, run.path, _warn, selection, finished)


def _read(path: str, state: Preprocessing) -> csv_reader.Table:
  strings = [f.name for f in state.features if isinstance(f, CategoricalFeature)]
  strings += [t.name for t in state.targets if t.kind == tasks_lib.CLASSIFICATION]
  numeric = [f.name for f in state.features if isinstance(f, NumericFeature)]
  return csv_reader.read_table(path, string_columns=strings, numeric_columns=numeric)


def scored_tasks(state: Preprocessing, table: csv_reader.Table) -> list[str]:
  """The tasks whose target column the table has, with at least one value in it (an empty column holds none)."""
  return [name for name in state.task_names if name in table.columns and tabular.target_rows(table, [name]).any()]


@dataclasses.dataclass(frozen=True)
class Scoring:
  """What a file is scored on: its tasks (`scored_tasks`) and the rows with a value in each of their targets.

  As in training, where a row is kept only with every target, so that a file
  the run was tested on gives its test metrics again.
  """

  tasks: tuple[str, ...]
  rows: np.ndarray  # row indices
  labels: Mapping[str, np.ndarray]  # encoded labels of those rows, by task

  @classmethod
  def of(cls, state: Preprocessing, table: csv_reader.Table) -> Scoring:
    """UserError naming the file, column and line if a target holds a value the run cannot score (a new class)."""
    tasks = scored_tasks(state, table)
    rows = np.flatnonzero(tabular.target_rows(table, tasks)) if tasks else np.zeros(0, np.int64)
    labels = tabular.encode_targets(table.take(rows), state.with_tasks(tasks)) if len(rows) else {}
    return cls(tuple(tasks), rows, labels)


def score(model, state: Preprocessing, scoring: Scoring, outputs: Mapping[str, np.ndarray]) -> dict:
  """{task: {metric: value}} of `outputs` (every row's) on the rows of `scoring`, in original units."""
  evaluator = Evaluator(model, 1024, tabular.target_scale(state))
  metrics = {}
  for task in model.task_specs:
    if task.name not in scoring.tasks:
      continue
    task_labels, task_out = scoring.labels[task.name], outputs[task.name][scoring.rows]
    if task.kind == tasks_lib.REGRESSION:
      task_labels = evaluator.original_units(task.name, task_labels)
      task_out = evaluator.original_units(task.name, task_out)
    metrics[task.name] = metrics_lib.task_metrics(task, task_labels, task_out)
  return metrics


def predict(model, state: Preprocessing, features: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
  """The model's raw outputs for every row of the encoded `features`, by task."""
  evaluator = Evaluator(model, 1024, tabular.target_scale(state))
  dummy = {t.name: np.zeros(rows, t.label_dtype.as_numpy_dtype) for t in model.task_specs}
  return evaluator.predict(Split(dict(features), dummy))


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


def _check_run(path: str) -> run_dir_lib.RunDir:
  """The run directory --run_dir names; UserError unless it holds a run trained on tabular data."""
  run = run_dir_lib.RunDir(path)
  if not os.path.exists(path):
    raise UserError(f"--run_dir={path} does not exist.")
  if not os.path.isdir(path):
    raise UserError(f"--run_dir={path} is not a directory.")
  if not os.path.isfile(run.flags_file):
    raise UserError(f"--run_dir={path} is not a run directory (no flags.txt).")
  if not os.path.isfile(run.preprocessing_file):
    raise UserError(
      f"--run_dir={path} has no preprocessing.json: only runs trained on tabular data "
      "(--dataset=csv, npz or census_income) can be applied to a CSV file or exported."
    )
  return run


def check_outputs(
  run: run_dir_lib.RunDir, files: list[tuple[str, str]], export_dir: str | None, new_parents: str | None = None
) -> None:
  """Every path the command will write, before it writes anything; UserError naming the flag and the path.

  `files`: (flag, path) of the file outputs; `new_parents`: the one among them
  whose missing directories are made (the default --metrics_out, in
  <run_dir>/evaluations/). Besides the checks of each path (cli.common), the
  outputs must be distinct, apart from --csv_path and --export_dir, and must not
  replace a file of the run (its evaluations/ excepted).
  """
  for flag, path in files:
    common.check_output_file(flag, path, make_parents=path == new_parents)
  directories = [("export_dir", export_dir)] if export_dir else []
  for flag, path in directories:
    common.check_output_dir(flag, path)
  common.check_outputs_apart(files, directories, [("csv_path", FLAGS.csv_path)] if FLAGS.csv_path else [])
  evaluations = os.path.join(run.path, EVALUATIONS)
  for flag, path in [*files, *directories]:
    if os.path.lexists(path) and common.inside(path, run.path) and not common.inside(path, evaluations):
      raise UserError(
        f"--{flag}={path} would replace a file of --run_dir={run.path}; choose a path outside it (or in its "
        f"{EVALUATIONS}/)."
      )


def _write(flag: str, path: str, write: Callable[[], None]) -> None:
  """Runs `write`; an OSError (the disk full, a file put there meanwhile) as UserError naming --`flag`."""
  try:
    write()
  except OSError as error:
    raise UserError(f"--{flag}={path} cannot be written: {error.strerror or error}.") from None


def _number(value: float | None) -> str:
  return "undefined" if value is None else f"{value:.4f}"


def run_evaluate() -> dict:
  if not FLAGS.run_dir:
    raise UserError("--run_dir is required: the run to evaluate.")
  csv_path, export_dir = FLAGS.csv_path, FLAGS.export_dir
  if not csv_path and not export_dir:
    raise UserError("Give --csv_path=FILE to evaluate and/or --export_dir=DIR to export.")
  for flag in ("predictions_out", "metrics_out"):
    if FLAGS[flag].value and not csv_path:
      raise UserError(f"--{flag}={FLAGS[flag].value} needs --csv_path=FILE: the file to evaluate.")
  # Everything is read and checked before anything is written: a refusal leaves no file behind.
  run = _check_run(FLAGS.run_dir)
  saved = run_dir_lib.read_flag_file(run.flags_file)
  config = architecture(run, saved)
  selection = _recorded(run, saved, "selection")
  state = preprocessing.read(run.preprocessing_file)
  if export_dir:
    export_lib.output_names(state)  # two tasks cannot share an output
  files: list[tuple[str, str]] = [
    (flag, str(FLAGS[flag].value)) for flag in ("predictions_out", "metrics_out") if FLAGS[flag].value
  ]
  check_outputs(run, files, export_dir)
  table = features = scoring = None
  unseen: Mapping[str, int] = {}
  metrics_out = None
  if csv_path:
    table = _read(csv_path, state)
    features, unseen = tabular.encode_features_and_unseen(table, state)
    scoring = Scoring.of(state, table)
    if len(scoring.rows):
      metrics_out = FLAGS.metrics_out or os.path.join(run.path, EVALUATIONS, os.path.basename(csv_path) + ".json")
      if not FLAGS.metrics_out:
        check_outputs(run, [*files, ("metrics_out", metrics_out)], export_dir, new_parents=metrics_out)
    else:
      _refuse_unscored(csv_path, state, scoring)
  model, restored = load_model(run, state, config, selection)
  verb = "Evaluating" if csv_path else "Exporting"
  print(f"{verb} the model of step {restored.step} ({restored.describe()}).")
  metrics: dict = {}
  if table is not None and features is not None and scoring is not None:
    outputs = predict(model, state, features, table.num_rows)
    line = data_summary.unseen_line(csv_path, unseen)
    if line:
      print(line)
    if metrics_out:
      metrics = _report(
        csv_path, table, state, scoring, score(model, state, scoring, outputs), unseen, restored, metrics_out
      )
    if FLAGS.predictions_out:
      text = predictions_csv(model, state, outputs)
      _write("predictions_out", FLAGS.predictions_out, lambda: write_text_atomic(FLAGS.predictions_out, text))
      if not metrics_out:
        print(_unscored(csv_path, state, scoring)[1])
      print(f"Predictions: {FLAGS.predictions_out}")
  if export_dir:
    export_lib.export(model, state, export_dir)
    print(f"SavedModel: {export_dir} (signature 'serve')")
  return metrics


def _unscored(csv_path: str, state: Preprocessing, scoring: Scoring) -> tuple[str, str]:
  """(why `csv_path` gives no metrics, the line that says predictions only were written)."""
  if not scoring.tasks:
    return (
      f"{csv_path} has no target columns ({', '.join(state.task_names)})",
      f"no target columns in {csv_path}: wrote predictions only",
    )
  tasks = ", ".join(scoring.tasks)
  return (
    f"no row of {csv_path} has a value in every target column it has ({tasks}), and only such rows are "
    "scored, as in training",
    f"no row with every target column ({tasks}) in {csv_path}: wrote predictions only",
  )


def _refuse_unscored(csv_path: str, state: Preprocessing, scoring: Scoring) -> None:
  """UserError unless predictions alone were asked for a file that gives no metrics."""
  reason = _unscored(csv_path, state, scoring)[0]
  if not FLAGS.predictions_out:
    raise UserError(f"{reason}, so there is nothing to evaluate; pass --predictions_out=FILE to write its predictions.")
  if FLAGS.metrics_out:
    raise UserError(
      f"--metrics_out={FLAGS.metrics_out} cannot be written: {reason}, so there are no metrics; drop "
      "--metrics_out to write its predictions only."
    )


def _report(
  csv_path: str,
  table: csv_reader.Table,
  state: Preprocessing,
  scoring: Scoring,
  metrics: dict,
  unseen: Mapping[str, int],
  restored: checkpoints.Restored,
  out: str,
) -> dict:
  """Prints `metrics` and writes them to `out` as strict JSON; returns them, an undefined one as None.

  A metric that is not a number (R² of a constant target, AUC of rows holding
  one class) is null in the file, with the reason in "undefined", as in
  metrics.json.
  """
  metrics, undefined = undefined_numbers(metrics)
  reasons = {
    f"metrics.{path}": metrics_lib.undefined_reason(path.rpartition(".")[2], "the scored rows") for path in undefined
  }
  if len(scoring.rows) < table.num_rows:
    print(
      f"Scored {len(scoring.rows)} of {table.num_rows} rows of {csv_path}: those with a value in every target "
      f"column ({', '.join(scoring.tasks)})."
    )
  for task, values in metrics.items():
    print(f"{task}: " + ", ".join(f"{k} {_number(v)}" for k, v in values.items()))
  for path, reason in reasons.items():
    print(f"note: {path.removeprefix('metrics.')} is undefined (null in the metrics file): {reason}.")
  document = {
    "csv_path": csv_path,
    "rows": table.num_rows,
    "scored_rows": int(len(scoring.rows)),
    "metrics": metrics,
    "unseen_categories": dict(unseen),
    "checkpoint": restored.record(),
    **({"undefined": reasons} if reasons else {}),
  }

  def write() -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_json_atomic(out, document)

  _write("metrics_out", out, write)
  print(f"Metrics: {out}")
  return metrics


main = entry_point(run_evaluate)


def run() -> None:
  """Console-script entry point."""
  define_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()

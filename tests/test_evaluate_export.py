"""A trained CSV run applied to a new file (evaluate) and exported as a SavedModel."""

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import types

from conftest import run_cli_in_process, run_train
import numpy as np
import pytest
import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.cli import evaluate as evaluate_cli
from mtl_research.data import tabular
from mtl_research.data.preprocessing import ClassificationTarget, Preprocessing, RegressionTarget
from mtl_research.errors import UserError
from mtl_research.features import FeatureSpec
from mtl_research.models import ARCHITECTURES
from mtl_research.train import checkpoints
from mtl_research.train.run_dir import RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_csv(path, rows, seed, unseen: int = 0, targets: bool = True):
  """Mixed columns: numbers with gaps, a 2-way and a 6-way category; three targets (unless not `targets`).

  The first `unseen` rows are in a city never seen in training, and the first row has a new color.
  """
  rng = np.random.default_rng(seed)
  colors = ["red", "green"]
  cities = [f"city{i}" for i in range(6)]
  with open(path, "w", encoding="utf-8") as handle:
    handle.write("x1,x2,color,city" + (",price,buy,grade\n" if targets else "\n"))
    for row in range(rows):
      x1, x2 = rng.normal(size=2)
      color, city = rng.integers(2), rng.integers(6)
      price = 100 + 30 * x1 + 10 * city + rng.normal()
      buy = "yes" if x2 + color > 0.5 else "no"
      grade = ["A", "B", "C"][int(np.clip(x1 + 1, 0, 2))]
      x1_text = "" if rng.random() < 0.05 else f"{x1:.4f}"
      color_text = "purple" if row < min(unseen, 1) else colors[color]
      city_text = "atlantis" if row < unseen else cities[city]
      handle.write(f"{x1_text},{x2:.4f},{color_text},{city_text}")
      handle.write(f",{price:.3f},{buy},{grade}\n" if targets else "\n")


def run_evaluate(*args):
  """`python scripts/evaluate.py ARGS`, in this process."""
  return run_cli_in_process(evaluate_cli, os.path.join(ROOT, "scripts", "evaluate.py"), *args)


def csv_flags(paths: dict[str, str]) -> tuple[str, ...]:
  """The training flags of the CSV files `paths` (train, val, test) and their three tasks."""
  return (
    "--dataset=csv",
    f"--csv_path={paths['train']}",
    f"--val_csv_path={paths['val']}",
    f"--test_csv_path={paths['test']}",
    "--tasks=price:regression,buy:classification,grade:classification",
    "--embedding_threshold=4",
  )


@pytest.fixture(name="trained", scope="module")
def fixture_trained(tmp_path_factory):
  base = tmp_path_factory.mktemp("evaluate")
  paths = {name: str(base / f"{name}.csv") for name in ("train", "val", "test")}
  for seed, (name, path) in enumerate(paths.items()):
    write_csv(path, 400 if name == "train" else 150, seed, unseen=3 if name == "val" else 0)
  run = str(base / "run")
  proc = run_train(
    f"--run_dir={run}",
    *csv_flags(paths),
    "--train_steps=200",
    "--hidden_units=16",
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  return base, run, paths, proc.stdout


def test_training_prints_and_keeps_the_data_summary(trained):
  _, run, paths, stdout = trained
  with open(os.path.join(run, "data_summary.txt"), encoding="utf-8") as handle:
    text = handle.read()
  assert text in stdout and stdout.index(text) < stdout.index("Training 200 steps")  # printed before training
  assert text == (
    "Data summary (preprocessing fitted on the train split):\n"
    "  rows: train 400 (train.csv), val 150 (val.csv), test 150 (test.csv)\n"
    "  features: 4 columns\n"
    "    numeric (2): x1, x2\n"
    "    missing indicators added (1): x1\n"
    "    one-hot, categories seen in training (1): color 2\n"
    "    embedded, categories seen in training (1): city 6\n"
    "  task price: regression\n"
    "  task buy: classification, 2 classes: no, yes\n"
    "  task grade: classification, 3 classes: A, B, C\n"
    "  unseen categories in val: color 1, city 3\n"
  )


def test_evaluate_reproduces_the_runs_test_metrics(trained):
  base, run, paths, _ = trained
  predictions = str(base / "predictions.csv")
  proc = run_evaluate(f"--run_dir={run}", f"--csv_path={paths['test']}", f"--predictions_out={predictions}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(os.path.join(run, "metrics.json"), encoding="utf-8") as handle:
    expected = json.load(handle)["test"]
  with open(os.path.join(run, "evaluations", "test.csv.json"), encoding="utf-8") as handle:
    got = json.load(handle)["metrics"]
  for task, values in expected.items():
    for metric, value in values.items():
      assert got[task][metric] == pytest.approx(value, rel=1e-5, abs=1e-6), (task, metric)
  # The model whose test metrics metrics.json reports: its selected checkpoint, said and recorded.
  with open(os.path.join(run, "metrics.json"), encoding="utf-8") as handle:
    step = json.load(handle)["selection"]["step"]
  assert f"Evaluating the model of step {step} (the checkpoint selected by --selection=mean_loss)." in proc.stdout
  with open(os.path.join(run, "evaluations", "test.csv.json"), encoding="utf-8") as handle:
    document = json.load(handle)
  assert document["checkpoint"] == {
    "step": step,
    "kind": "selected",
    "path": f"ckpt/best/best-{step}",
    "selection": "mean_loss",
  }
  assert document["rows"] == document["scored_rows"] == 150 and "undefined" not in document
  # Original units: price has std ~35, so its MSE is far above the ~1 of standardized units.
  assert got["price"]["mse"] > 5 * 1.0 or got["price"]["r2"] > 0.9
  with open(predictions, encoding="utf-8") as handle:
    reader = csv.DictReader(handle)
    rows = list(reader)
  # One probability column per class, in the order of the run's class names; no ambiguous "<task>_probability".
  assert reader.fieldnames == ["price", "buy", "buy_p_no", "buy_p_yes", "grade", "grade_p_A", "grade_p_B", "grade_p_C"]
  assert len(rows) == 150
  assert set(r["buy"] for r in rows) <= {"yes", "no"} and set(r["grade"] for r in rows) <= {"A", "B", "C"}
  assert 40 < np.mean([float(r["price"]) for r in rows]) < 200  # dollars, not standardized units
  for task, classes in (("buy", ("no", "yes")), ("grade", ("A", "B", "C"))):
    p = np.array([[float(r[f"{task}_p_{c}"]) for c in classes] for r in rows])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-9)
    assert [classes[i] for i in p.argmax(axis=1)] == [r[task] for r in rows]
  # Both classes of buy occur as the prediction, so its p_yes column is P(yes), not the winner's probability.
  assert min(float(r["buy_p_yes"]) for r in rows) < 0.5 < max(float(r["buy_p_yes"]) for r in rows)


def serve_rows(serve, raw: list[dict]) -> dict:
  """The SavedModel's serving signature on the raw CSV rows `raw` (x1 may be empty: missing)."""
  return serve(
    x1=tf.constant([float(r["x1"]) if r["x1"] else np.nan for r in raw], tf.float32),
    x2=tf.constant([float(r["x2"]) for r in raw], tf.float32),
    color=tf.constant([r["color"] for r in raw]),
    city=tf.constant([r["city"] for r in raw]),
  )


def test_saved_model_serves_raw_columns_like_evaluate(trained):
  base, run, paths, _ = trained
  export_dir = str(base / "export")
  predictions = str(base / "predictions_for_export.csv")
  proc = run_evaluate(
    f"--run_dir={run}", f"--csv_path={paths['test']}", f"--export_dir={export_dir}", f"--predictions_out={predictions}"
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(paths["test"], encoding="utf-8") as handle:
    raw = list(csv.DictReader(handle))
  serve = tf.saved_model.load(export_dir).signatures["serve"]
  out = serve_rows(serve, raw)
  with open(predictions, encoding="utf-8") as handle:
    expected = list(csv.DictReader(handle))
  np.testing.assert_allclose(out["price"].numpy(), [float(r["price"]) for r in expected], rtol=1e-4)
  assert [v.decode() for v in out["buy"].numpy()] == [r["buy"] for r in expected]
  assert [v.decode() for v in out["grade"].numpy()] == [r["grade"] for r in expected]
  np.testing.assert_allclose(out["grade_probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
  # Each probability column labelled by <task>_classes, row by row (batch-major, as TF Serving's rows need).
  assert set(serve.structured_outputs) == {
    "price",
    "buy",
    "buy_probabilities",
    "buy_classes",
    "grade",
    "grade_probabilities",
    "grade_classes",
  }
  for task, classes in (("buy", ["no", "yes"]), ("grade", ["A", "B", "C"])):
    names = out[f"{task}_classes"].numpy()
    assert names.shape == (len(raw), len(classes)) and out[f"{task}_probabilities"].shape == names.shape
    assert {tuple(v.decode() for v in row) for row in names} == {tuple(classes)}
    expected_p = [[float(r[f"{task}_p_{c}"]) for c in classes] for r in expected]
    np.testing.assert_allclose(out[f"{task}_probabilities"].numpy(), expected_p, rtol=1e-4, atol=1e-6)


def test_a_file_without_targets_gives_predictions_only_and_unseen_counts(trained, tmp_path):
  _, run, paths, _ = trained
  new = str(tmp_path / "new.csv")
  write_csv(new, 20, seed=7, unseen=2, targets=False)
  predictions = str(tmp_path / "predictions.csv")
  proc = run_evaluate(f"--run_dir={run}", f"--csv_path={new}", f"--predictions_out={predictions}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert f"unseen categories in {new}: color 1, city 2" in lines
  assert f"no target columns in {new}: wrote predictions only" in lines
  assert "Metrics:" not in proc.stdout and not os.path.exists(os.path.join(run, "evaluations", "new.csv.json"))
  with open(predictions, encoding="utf-8") as handle:
    assert len(list(csv.DictReader(handle))) == 20
  # Neither targets nor --predictions_out: nothing to do, said in one sentence naming the flag, nothing written.
  export_dir = str(tmp_path / "export")
  proc = run_evaluate(f"--run_dir={run}", f"--csv_path={new}", f"--export_dir={export_dir}")
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert len(errors) == 1 and new in errors[0] and "--predictions_out" in errors[0], proc.stderr[-2000:]
  assert not os.path.exists(export_dir)
  # --metrics_out asks for metrics the file cannot give: refused too, before the predictions are written.
  metrics_out = str(tmp_path / "m.json")
  other = str(tmp_path / "other.csv")
  proc = run_evaluate(
    f"--run_dir={run}", f"--csv_path={new}", f"--predictions_out={other}", f"--metrics_out={metrics_out}"
  )
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode != 0 and len(errors) == 1 and "--metrics_out" in errors[0], proc.stderr[-2000:]
  assert not os.path.exists(metrics_out) and not os.path.exists(other)
  # A file with targets: the counts go into the metrics file too.
  out = str(tmp_path / "val.json")
  proc = run_evaluate(f"--run_dir={run}", f"--csv_path={paths['val']}", f"--metrics_out={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"unseen categories in {paths['val']}: color 1, city 3" in proc.stdout.splitlines()
  with open(out, encoding="utf-8") as handle:
    document = json.load(handle)
  assert document["unseen_categories"] == {"color": 1, "city": 3} and set(document["metrics"]) == {
    "price",
    "buy",
    "grade",
  }


def test_evaluate_refuses_runs_without_preprocessing_and_used_export_dirs(trained, tmp_path):
  base, run, paths, _ = trained
  synthetic = str(tmp_path / "synthetic")
  proc = run_train(f"--run_dir={synthetic}", "--train_steps=5", "--num_train=64")
  assert proc.returncode == 0
  # Generated data: no data summary, printed or written.
  assert "Data summary" not in proc.stdout and not os.path.exists(os.path.join(synthetic, "data_summary.txt"))
  proc = run_evaluate(f"--run_dir={synthetic}", f"--csv_path={paths['test']}")
  assert proc.returncode != 0 and "preprocessing.json" in proc.stderr and "Traceback" not in proc.stderr
  used = tmp_path / "used"
  used.mkdir()
  (used / "keep.txt").write_text("mine")
  proc = run_evaluate(f"--run_dir={run}", f"--export_dir={used}")
  assert proc.returncode != 0 and "--export_dir" in proc.stderr
  assert (used / "keep.txt").read_text() == "mine"


def damage(prefix: str, values_only: bool = False) -> None:
  """Truncates every data file of checkpoint `prefix` to half its size, or only the largest one.

  The largest holds the variables' values; the object graph intact, a restore
  then fails part-way, having begun to match the file's objects.
  """
  names = tf.io.gfile.glob(f"{prefix}.data-*")
  for name in [max(names, key=os.path.getsize)] if values_only else names:
    with open(name, "r+b") as handle:
      handle.truncate(os.fstat(handle.fileno()).st_size // 2)


def small_model():
  specs = (tasks_lib.TaskSpec("price", tasks_lib.REGRESSION), tasks_lib.TaskSpec("kind", tasks_lib.CLASSIFICATION, 3))
  entry = ARCHITECTURES.get("shared_bottom")
  params = {**{p.name: p.parse(p.default) for p in entry.params}, "hidden_units": (4,)}
  model = entry.component(specs, FeatureSpec(3), params)
  model({"numeric": tf.zeros([1, 3])}, training=False)
  return model


def fill(model, value: float) -> None:
  for variable in model.variables:
    variable.assign(tf.fill(variable.shape, tf.cast(value, variable.dtype)))


def values(model) -> set[float]:
  return {float(v) for variable in model.variables for v in np.ravel(variable.numpy())}


@contextlib.contextmanager
def tensorflow_logs():
  """The messages TensorFlow's Python logger gives its handlers meanwhile (they go to the real stderr)."""
  logged = []
  handler = logging.Handler()
  handler.emit = lambda record: logged.append(record.getMessage())
  tf.get_logger().addHandler(handler)
  try:
    yield logged
  finally:
    tf.get_logger().removeHandler(handler)


def _saver(tmp_path):
  """A run directory, a small model, and a Checkpoints saving it as a run does."""
  run = RunDir(str(tmp_path / "run"))
  model = small_model()
  # Like a run's: the model plus state restore_model must leave alone.
  saver = checkpoints.Checkpoints(
    tf.train.Checkpoint(model=model, step=tf.Variable(7, dtype=tf.int64)),
    run.checkpoint_dir,
    run.best_checkpoint_dir,
    warn=print,
  )
  return run, model, saver


def test_eager_and_traced_saves_write_the_same_checkpoints(tmp_path):
  """The first saves are eager, later ones traced (checkpoints.py): both hold the same objects and values."""
  _, model, saver = _saver(tmp_path)
  saves = checkpoints._EAGER_SAVES + 2  # pylint: disable=protected-access
  paths = []
  for step in range(1, saves + 1):
    fill(model, float(step))
    paths.append(saver.save(step))
  assert saver._write is not None  # pylint: disable=protected-access  (the last saves were traced)
  eager, traced = paths[-3], paths[-1]  # both kept (the newest 3 are)
  assert tf.train.list_variables(eager) == tf.train.list_variables(traced)
  for path, value in ((eager, saves - 2.0), (traced, float(saves))):
    restored = small_model()
    tf.train.Checkpoint(model=restored).read(path).expect_partial()
    assert values(restored) == {value}


def test_restore_model_chooses_as_the_trainer_and_falls_back_past_damaged_checkpoints(tmp_path):
  run, model, saver = _saver(tmp_path)
  for step, value in ((10, 1.0), (20, 2.0)):
    fill(model, value)
    saver.save(step)
  fill(model, 3.0)
  best = saver.save_best(10)
  warnings = []
  restored = small_model()

  def restore(selection="mean_loss", finished=True, model=restored):
    return checkpoints.restore_model(model, run.path, warnings.append, selection, finished)

  # A finished run: the selected checkpoint, as metrics.json reports it.
  got = restore()
  assert (got.path, got.step, got.kind, got.skipped) == (best, 10, checkpoints.SELECTED, ())
  assert values(restored) == {3.0} and not warnings
  assert got.describe() == "the checkpoint selected by --selection=mean_loss"
  assert got.record() == {"step": 10, "kind": "selected", "path": "ckpt/best/best-10", "selection": "mean_loss"}
  # --selection=last, or an unfinished run (none selected yet): the newest periodic one, the best ignored.
  got = restore(selection="last")
  assert (got.step, got.kind, got.describe()) == (20, checkpoints.LAST, "the last checkpoint: --selection=last")
  assert values(restored) == {2.0} and not warnings
  got = restore(finished=False)
  assert (got.step, got.kind) == (20, checkpoints.UNFINISHED) and values(restored) == {2.0} and not warnings
  assert got.describe() == "the newest checkpoint: the run is unfinished"
  # The selected one damaged: the newest readable periodic one, with a warning naming the damaged one
  # (and no more: not TensorFlow's lines about each value the failed attempt left unrestored).
  damage(best, values_only=True)
  with tensorflow_logs() as logged:
    got = restore()
  assert not logged, logged
  assert (got.step, got.kind, got.skipped) == (20, checkpoints.FALLBACK, (best,)) and values(restored) == {2.0}
  assert len(warnings) == 1 and best in warnings[0]
  assert got.describe() == "the newest readable checkpoint: ckpt/best/best-10 cannot be read"
  assert got.record()["skipped"] == ["ckpt/best/best-10"]
  # Periodic ones newest first, listed from the directory: the `checkpoint` state file still names ckpt-20.
  damage(got.path)
  got = restore(finished=False)
  assert (got.step, got.kind) == (10, checkpoints.UNFINISHED) and values(restored) == {1.0}
  assert got.describe() == "the newest readable checkpoint: the run is unfinished; ckpt/ckpt-20 cannot be read"
  assert len(warnings) == 2
  # None readable: one sentence naming the checkpoint directory and the run.
  damage(os.path.join(run.checkpoint_dir, "ckpt-10"))
  with pytest.raises(UserError) as error:
    restore(model=small_model())
  message = str(error.value)
  assert f"no checkpoint in {run.checkpoint_dir} can be read" in message and f"--run_dir={run.path}" in message
  assert "\n" not in message and "--overwrite" not in message  # mtl-evaluate has no --overwrite
  # No checkpoint at all.
  with pytest.raises(UserError, match="has no checkpoint"):
    checkpoints.restore_model(small_model(), str(tmp_path / "empty"), warnings.append, "mean_loss", True)


def test_the_architecture_comes_from_flags_txt_without_touching_global_flags(trained):
  from absl import flags  # pylint: disable=import-outside-toplevel

  from mtl_research.cli import evaluate as evaluate_cli  # pylint: disable=import-outside-toplevel

  _, run, _, _ = trained
  flag = flags.FLAGS["hidden_units"]
  before = (flag.value, flag.present)
  config = evaluate_cli.architecture(RunDir(run))
  assert config.name == "shared_bottom" and config.params["hidden_units"] == (16,)  # the run's --hidden_units=16
  assert (flag.value, flag.present) == before


def test_evaluate_survives_a_damaged_selected_checkpoint_and_refuses_a_newer_preprocessing(trained, tmp_path):
  _, run, paths, _ = trained
  copy = str(tmp_path / "run")
  shutil.copytree(run, copy)
  best = checkpoints.candidates(RunDir(copy).best_checkpoint_dir, checkpoints.BEST_PREFIX)[0][1]
  damage(best, values_only=True)
  with tensorflow_logs() as logged:
    proc = run_evaluate(f"--run_dir={copy}", f"--csv_path={paths['test']}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert not logged, logged  # one warning line, not TensorFlow's about each value left unrestored
  assert f"warning: checkpoint {best} cannot be read" in proc.stderr
  newest = checkpoints.candidates(RunDir(copy).checkpoint_dir)[0][0]
  assert (
    f"Evaluating the model of step {newest} (the newest readable checkpoint: ckpt/best/{os.path.basename(best)} "
    "cannot be read)." in proc.stdout.splitlines()
  )
  with open(os.path.join(copy, "evaluations", "test.csv.json"), encoding="utf-8") as handle:
    assert json.load(handle)["checkpoint"]["kind"] == "fallback"
  file = os.path.join(copy, "preprocessing.json")
  with open(file, encoding="utf-8") as handle:
    document = json.load(handle)
  document["version"] = 2
  with open(file, "w", encoding="utf-8") as handle:
    json.dump(document, handle)
  proc = run_evaluate(f"--run_dir={copy}", f"--csv_path={paths['test']}")
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert len(errors) == 1 and file in errors[0] and "version 2" in errors[0], proc.stderr[-2000:]


def test_probability_columns_are_plain_unique_names_whatever_the_class_names():
  classes = ("a,b", 'a "b"', "x")
  # The second task is named like a class column of the first.
  state = Preprocessing((), (ClassificationTarget("t", classes), RegressionTarget("t_p_x", 0.0, 1.0)))
  model = types.SimpleNamespace(task_specs=tabular.task_specs(state))
  outputs = {"t": np.log(np.array([[0.2, 0.5, 0.3], [0.7, 0.1, 0.2]])), "t_p_x": np.array([[1.5], [2.5]])}
  rows = list(csv.reader(io.StringIO(evaluate_cli.predictions_csv(model, state, outputs))))
  assert rows[0] == ["t", "t_p_a_b", "t_p_a__b_", "t_p_x_2", "t_p_x"]
  assert rows[1][0] == 'a "b"' and rows[2][0] == "a,b"  # the class itself, as written in the training file
  np.testing.assert_allclose([[float(v) for v in row[1:4]] for row in rows[1:]], [[0.2, 0.5, 0.3], [0.7, 0.1, 0.2]])
  assert evaluate_cli.probability_column("t", "a b") == evaluate_cli.probability_column("t", "a,b") == "t_p_a_b"


def test_an_mmoe_saved_model_reloads_with_plain_tensorflow_and_predicts_as_evaluate(trained):
  """Another architecture than shared-bottom's: its experts, gates and towers go into the SavedModel."""
  base, _, paths, _ = trained
  run = str(base / "mmoe_run")
  proc = run_train(
    f"--run_dir={run}",
    *csv_flags(paths),
    "--train_steps=40",
    "--model=mmoe",
    "--num_experts=3",
    "--expert_units=8",
    "--tower_units=4",
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  export_dir, predictions = str(base / "mmoe_export"), str(base / "mmoe_predictions.csv")
  proc = run_evaluate(
    f"--run_dir={run}", f"--csv_path={paths['test']}", f"--export_dir={export_dir}", f"--predictions_out={predictions}"
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(paths["test"], encoding="utf-8") as handle:
    raw = list(csv.DictReader(handle))
  out = serve_rows(tf.saved_model.load(export_dir).signatures["serve"], raw)
  with open(predictions, encoding="utf-8") as handle:
    expected = list(csv.DictReader(handle))
  np.testing.assert_allclose(out["price"].numpy(), [float(r["price"]) for r in expected], rtol=1e-4)
  assert [v.decode() for v in out["grade"].numpy()] == [r["grade"] for r in expected]


def test_two_tasks_that_would_share_a_saved_model_output_are_refused():
  from mtl_research import export as export_lib  # pylint: disable=g-import-not-at-top
  from mtl_research.data import preprocessing as preprocessing_lib  # pylint: disable=g-import-not-at-top

  kind = preprocessing_lib.ClassificationTarget("kind", ("a", "b"))
  clash = preprocessing_lib.RegressionTarget("kind_classes", 0.0, 1.0)
  state = preprocessing_lib.Preprocessing(features=(), targets=(kind, clash))
  with pytest.raises(
    UserError, match=r"output 'kind_classes' would belong to both task 'kind' and task 'kind_classes'"
  ):
    export_lib.output_names(state)
  fine = preprocessing_lib.Preprocessing(features=(), targets=(kind,))
  assert export_lib.output_names(fine) == {"kind": "kind", "kind_probabilities": "kind", "kind_classes": "kind"}


def test_evaluating_an_unfinished_run_says_which_step_it_used(trained, tmp_path):
  _, run, paths, _ = trained
  copy = str(tmp_path / "run")
  shutil.copytree(run, copy)
  os.remove(os.path.join(copy, "metrics.json"))  # as a run stopped before its end leaves it
  periodic = checkpoints.candidates(RunDir(copy).checkpoint_dir)
  assert [step for step, _ in periodic] == [200, 0]
  out = str(tmp_path / "m.json")
  proc = run_evaluate(f"--run_dir={copy}", f"--csv_path={paths['test']}", f"--metrics_out={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "Evaluating the model of step 200 (the newest checkpoint: the run is unfinished)." in proc.stdout
  with open(out, encoding="utf-8") as handle:
    assert json.load(handle)["checkpoint"] == {
      "step": 200,
      "kind": "unfinished",
      "path": "ckpt/ckpt-200",
      "selection": "mean_loss",
    }
  # Its newest checkpoint damaged: the one before, each skipped one named.
  damage(periodic[0][1], values_only=True)
  with tensorflow_logs() as logged:
    proc = run_evaluate(f"--run_dir={copy}", f"--export_dir={tmp_path / 'export'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert not logged, logged
  assert (
    "Exporting the model of step 0 (the newest readable checkpoint: the run is unfinished; ckpt/ckpt-200 cannot "
    "be read)." in proc.stdout.splitlines()
  )
  assert f"warning: checkpoint {periodic[0][1]} cannot be read" in proc.stderr


def rewrite_csv(source: str, target: str, change) -> str:
  """Copies CSV file `source` to `target` with `change(row number, row dict)` applied to each row."""
  with open(source, encoding="utf-8") as handle:
    reader = csv.DictReader(handle)
    rows = list(reader)
  with open(target, "w", encoding="utf-8", newline="") as handle:
    writer = csv.DictWriter(handle, reader.fieldnames, lineterminator="\n")
    writer.writeheader()
    for number, row in enumerate(rows):
      change(number, row)
      writer.writerow(row)
  return target


def strict_json(path: str) -> dict:
  def refuse(constant):
    raise AssertionError(f"{path} holds {constant}")

  with open(path, encoding="utf-8") as handle:
    return json.load(handle, parse_constant=refuse)


def test_metrics_that_are_not_numbers_are_null_with_the_reason(trained, tmp_path):
  _, run, paths, _ = trained
  # One row with a price: R² divides by the variance of one value, AUC ranks one class against none.
  path = rewrite_csv(
    paths["test"], str(tmp_path / "one.csv"), lambda i, row: row.update(price=row["price"] if i == 7 else "")
  )
  out = str(tmp_path / "m.json")
  proc = run_evaluate(f"--run_dir={run}", f"--csv_path={path}", f"--metrics_out={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  document = strict_json(out)
  assert document["metrics"]["price"]["r2"] is None and document["metrics"]["buy"]["auc"] is None
  assert set(document["undefined"]) == {"metrics.price.r2", "metrics.buy.auc"}
  assert (
    "variance" in document["undefined"]["metrics.price.r2"] and "one class" in document["undefined"]["metrics.buy.auc"]
  )
  lines = proc.stdout.splitlines()
  assert any(line.startswith("price: ") and line.endswith("r2 undefined") for line in lines), lines
  assert any(line.startswith("note: price.r2 is undefined (null in the metrics file): ") for line in lines), lines
  assert isinstance(document["metrics"]["price"]["mse"], float)


def test_only_rows_with_every_target_are_scored_and_none_means_predictions_only(trained, tmp_path):
  _, run, paths, _ = trained
  # Every other row lacks its price: the other rows are scored, and the line says how many.
  path = rewrite_csv(
    paths["test"], str(tmp_path / "half.csv"), lambda i, row: row.update(price="" if i % 2 else row["price"])
  )
  out = str(tmp_path / "m.json")
  proc = run_evaluate(f"--run_dir={run}", f"--csv_path={path}", f"--metrics_out={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (
    f"Scored 75 of 150 rows of {path}: those with a value in every target column (price, buy, grade)." in proc.stdout
  )
  document = strict_json(out)
  assert (document["rows"], document["scored_rows"]) == (150, 75)

  # No row with both price and buy (the rows alternate): no metrics, never NaN; predictions only when asked.
  def alternate(i, row):
    row.update(price="" if i % 2 else row["price"], buy=row["buy"] if i % 2 else "", grade="")

  path = rewrite_csv(paths["test"], str(tmp_path / "alternating.csv"), alternate)
  predictions = str(tmp_path / "p.csv")
  proc = run_evaluate(f"--run_dir={run}", f"--csv_path={path}", f"--predictions_out={predictions}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"no row with every target column (price, buy) in {path}: wrote predictions only" in proc.stdout.splitlines()
  assert "Metrics:" not in proc.stdout and not os.path.exists(os.path.join(run, "evaluations", "alternating.csv.json"))
  with open(predictions, encoding="utf-8") as handle:
    assert len(list(csv.DictReader(handle))) == 150

"""A trained CSV run applied to a new file (evaluate) and exported as a SavedModel."""

import csv
import io
import json
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


@pytest.fixture(name="trained", scope="module")
def fixture_trained(tmp_path_factory):
  base = tmp_path_factory.mktemp("evaluate")
  paths = {name: str(base / f"{name}.csv") for name in ("train", "val", "test")}
  for seed, (name, path) in enumerate(paths.items()):
    write_csv(path, 400 if name == "train" else 150, seed, unseen=3 if name == "val" else 0)
  run = str(base / "run")
  proc = run_train(
    f"--run_dir={run}",
    "--dataset=csv",
    f"--csv_path={paths['train']}",
    f"--val_csv_path={paths['val']}",
    f"--test_csv_path={paths['test']}",
    "--tasks=price:regression,buy:classification,grade:classification",
    "--embedding_threshold=4",
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
  out = serve(
    x1=tf.constant([float(r["x1"]) if r["x1"] else np.nan for r in raw], tf.float32),
    x2=tf.constant([float(r["x2"]) for r in raw], tf.float32),
    color=tf.constant([r["color"] for r in raw]),
    city=tf.constant([r["city"] for r in raw]),
  )
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


def damage(prefix: str) -> None:
  """Truncates every data file of checkpoint `prefix` to half its size."""
  for name in tf.io.gfile.glob(f"{prefix}.data-*"):
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


def test_restore_model_falls_back_past_damaged_checkpoints(tmp_path):
  run = RunDir(str(tmp_path / "run"))
  model = small_model()
  # Like a run's: the model plus state restore_model must leave alone.
  saver = checkpoints.Checkpoints(
    tf.train.Checkpoint(model=model, step=tf.Variable(7, dtype=tf.int64)),
    run.checkpoint_dir,
    run.best_checkpoint_dir,
    warn=print,
  )
  for step, value in ((10, 1.0), (20, 2.0)):
    fill(model, value)
    saver.save(step)
  fill(model, 3.0)
  best = saver.save_best(10)
  warnings = []
  restored = small_model()
  # The selected checkpoint first.
  assert checkpoints.restore_model(restored, run.path, warnings.append) == best
  assert values(restored) == {3.0} and not warnings
  # Damaged: the newest periodic one, with a warning naming the damaged one.
  damage(best)
  path = checkpoints.restore_model(restored, run.path, warnings.append)
  assert path.endswith("ckpt-20") and values(restored) == {2.0}
  assert len(warnings) == 1 and best in warnings[0]
  # Periodic ones newest first, listed from the directory: the `checkpoint` state file still names ckpt-20.
  damage(path)
  assert checkpoints.restore_model(restored, run.path, warnings.append).endswith("ckpt-10")
  assert values(restored) == {1.0} and len(warnings) == 3
  # None readable: one sentence naming the run.
  damage(os.path.join(run.checkpoint_dir, "ckpt-10"))
  with pytest.raises(UserError) as error:
    checkpoints.restore_model(small_model(), run.path, warnings.append)
  message = str(error.value)
  assert f"--run_dir={run.path}" in message and "can be read" in message and "\n" not in message
  # No checkpoint at all.
  with pytest.raises(UserError, match="has no checkpoint"):
    checkpoints.restore_model(small_model(), str(tmp_path / "empty"), warnings.append)


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
  damage(best)
  proc = run_evaluate(f"--run_dir={copy}", f"--csv_path={paths['test']}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"warning: checkpoint {best} cannot be read" in proc.stderr
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

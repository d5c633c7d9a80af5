"""A trained CSV run applied to a new file (evaluate) and exported as a SavedModel."""

import csv
import json
import os
import shutil

from conftest import run_cli_in_process, run_train
import numpy as np
import pytest
import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.cli import evaluate as evaluate_cli
from mtl_research.errors import UserError
from mtl_research.features import FeatureSpec
from mtl_research.models import ARCHITECTURES
from mtl_research.train import checkpoints
from mtl_research.train.run_dir import RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_csv(path, rows, seed):
  """Mixed columns: numbers with gaps, a 2-way and a 6-way category; three targets."""
  rng = np.random.default_rng(seed)
  colors = ["red", "green"]
  cities = [f"city{i}" for i in range(6)]
  with open(path, "w", encoding="utf-8") as handle:
    handle.write("x1,x2,color,city,price,buy,grade\n")
    for _ in range(rows):
      x1, x2 = rng.normal(size=2)
      color, city = rng.integers(2), rng.integers(6)
      price = 100 + 30 * x1 + 10 * city + rng.normal()
      buy = "yes" if x2 + color > 0.5 else "no"
      grade = ["A", "B", "C"][int(np.clip(x1 + 1, 0, 2))]
      x1_text = "" if rng.random() < 0.05 else f"{x1:.4f}"
      handle.write(f"{x1_text},{x2:.4f},{colors[color]},{cities[city]},{price:.3f},{buy},{grade}\n")


def run_evaluate(*args):
  """`python scripts/evaluate.py ARGS`, in this process."""
  return run_cli_in_process(evaluate_cli, os.path.join(ROOT, "scripts", "evaluate.py"), *args)


@pytest.fixture(name="trained", scope="module")
def fixture_trained(tmp_path_factory):
  base = tmp_path_factory.mktemp("evaluate")
  paths = {name: str(base / f"{name}.csv") for name in ("train", "val", "test")}
  for seed, (name, path) in enumerate(paths.items()):
    write_csv(path, 400 if name == "train" else 150, seed)
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
  return base, run, paths


def test_evaluate_reproduces_the_runs_test_metrics(trained):
  base, run, paths = trained
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
    rows = list(csv.DictReader(handle))
  assert len(rows) == 150
  assert set(r["buy"] for r in rows) <= {"yes", "no"} and set(r["grade"] for r in rows) <= {"A", "B", "C"}
  assert 40 < np.mean([float(r["price"]) for r in rows]) < 200  # dollars, not standardized units


def test_saved_model_serves_raw_columns_like_evaluate(trained):
  base, run, paths = trained
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


def test_evaluate_refuses_runs_without_preprocessing_and_used_export_dirs(trained, tmp_path):
  base, run, paths = trained
  synthetic = str(tmp_path / "synthetic")
  assert run_train(f"--run_dir={synthetic}", "--train_steps=5", "--num_train=64").returncode == 0
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

  _, run, _ = trained
  flag = flags.FLAGS["hidden_units"]
  before = (flag.value, flag.present)
  config = evaluate_cli.architecture(RunDir(run))
  assert config.name == "shared_bottom" and config.params["hidden_units"] == (16,)  # the run's --hidden_units=16
  assert (flag.value, flag.present) == before


def test_evaluate_survives_a_damaged_selected_checkpoint_and_refuses_a_newer_preprocessing(trained, tmp_path):
  _, run, paths = trained
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

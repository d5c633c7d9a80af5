"""A trained CSV run applied to a new file (evaluate) and exported as a SavedModel."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_train

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
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"), *args],
                        capture_output=True, text=True, env=env, timeout=180, check=False)


@pytest.fixture(name="trained", scope="module")
def fixture_trained(tmp_path_factory):
  base = tmp_path_factory.mktemp("evaluate")
  paths = {name: str(base / f"{name}.csv") for name in ("train", "val", "test")}
  for seed, (name, path) in enumerate(paths.items()):
    write_csv(path, 400 if name == "train" else 150, seed)
  run = str(base / "run")
  proc = run_train(f"--run_dir={run}", "--dataset=csv", f"--csv_path={paths['train']}",
                   f"--val_csv_path={paths['val']}", f"--test_csv_path={paths['test']}",
                   "--tasks=price:regression,buy:classification,grade:classification",
                   "--embedding_threshold=4", "--train_steps=200", "--hidden_units=16")
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
  proc = run_evaluate(f"--run_dir={run}", f"--csv_path={paths['test']}", f"--export_dir={export_dir}",
                      f"--predictions_out={predictions}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(paths["test"], encoding="utf-8") as handle:
    raw = list(csv.DictReader(handle))
  serve = tf.saved_model.load(export_dir).signatures["serve"]
  out = serve(x1=tf.constant([float(r["x1"]) if r["x1"] else np.nan for r in raw], tf.float32),
              x2=tf.constant([float(r["x2"]) for r in raw], tf.float32),
              color=tf.constant([r["color"] for r in raw]), city=tf.constant([r["city"] for r in raw]))
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

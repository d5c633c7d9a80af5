"""metrics.json is strict JSON: an undefined metric is null, with the reason in the file and the log."""

from __future__ import annotations

import json
import os

from conftest import build_config, make_bundle
import numpy as np
import pytest

from mtl_research import tasks
from mtl_research.files import undefined_numbers, write_json_atomic
from mtl_research.train import components as components_lib
from mtl_research.train import loop
from mtl_research.train.run_dir import RunDir

SPECS = (tasks.TaskSpec("price", tasks.REGRESSION), tasks.TaskSpec("kind", tasks.CLASSIFICATION, 2))


def _strict(text: str):
  """json.loads as a strict parser (RFC 8259) reads: NaN and Infinity are not JSON."""

  def refuse(name):
    raise ValueError(f"{name} is not JSON")

  return json.loads(text, parse_constant=refuse)


def test_undefined_numbers_become_null_and_are_listed_by_path():
  value = {"test": {"y": {"r2": float("nan"), "mse": 1.5}}, "curve": [1.0, float("inf")], "n": 3, "ok": True}
  strict, paths = undefined_numbers(value)
  assert strict == {"test": {"y": {"r2": None, "mse": 1.5}}, "curve": [1.0, None], "n": 3, "ok": True}
  assert paths == ["test.y.r2", "curve[1]"]


def test_the_writer_refuses_a_bare_nan_and_leaves_the_old_file(tmp_path):
  path = str(tmp_path / "metrics.json")
  write_json_atomic(path, {"a": 1.0})
  with pytest.raises(ValueError):
    write_json_atomic(path, {"a": float("nan")})
  assert _strict(open(path, encoding="utf-8").read()) == {"a": 1.0}
  assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_metric_undefined_on_a_split_is_null_with_its_reason(tmp_path):
  bundle = make_bundle(SPECS, num_train=128)
  bundle.test.labels["price"][:] = 2.5  # R² divides by the variance of the test targets: 0
  bundle.test.labels["kind"][:] = 1  # AUC needs both classes
  config = build_config(str(tmp_path / "run"), loop={"train_steps": 8, "steps_per_loop": 4, "eval_every": 0})
  messages = []
  run = RunDir(config.run_dir)
  os.makedirs(run.path)
  loop.Trainer(config, bundle, components_lib.build(config, bundle), run, log=messages.append).run()
  with open(run.metrics_file, encoding="utf-8") as handle:
    metrics = _strict(handle.read())
  assert metrics["test"]["price"]["r2"] is None and metrics["test"]["kind"]["auc"] is None
  assert np.isfinite(metrics["test"]["price"]["mse"]) and np.isfinite(metrics["val"]["price"]["r2"])
  assert set(metrics["undefined"]) == {"test.price.r2", "test.kind.auc"}
  assert "all equal" in metrics["undefined"]["test.price.r2"]
  assert "one class" in metrics["undefined"]["test.kind.auc"]
  assert any(line.startswith("note: test.price.r2 is undefined") for line in messages), messages

"""The benchmark's core runs end to end at toy sizes and reports every key."""

import json
import math

import pytest
from tensorflow.python.framework import config as tf_config  # the determinism switch's off side

from mtl_research.balancers import BALANCERS
from mtl_research.cli import benchmark
from mtl_research.errors import UserError


@pytest.fixture(name="without_op_determinism")
def fixture_without_op_determinism():
  """Op determinism off for the test: an earlier --deterministic run in this process turned it on,
  and under it Keras refuses the tuned fit's jit_compile=True (measuring it without XLA)."""
  was_on = tf_config.is_op_determinism_enabled()
  tf_config.disable_op_determinism()
  yield
  if was_on:
    tf_config.enable_op_determinism()


@pytest.mark.slow
@pytest.mark.filterwarnings("error:Model doesn't support `jit_compile=True`")
def test_measure_reports_positive_rates_for_every_balancer_and_mode(without_op_determinism):
  # fixed and one balancer with per-task gradients: every key exists per balancer, and each
  # balancer costs two compilations, so the catalogue's size must not set this test's time.
  chosen = ["fixed", "gradnorm"]
  result = benchmark.measure(
    balancers=chosen,
    repeats=1,
    fit_epochs=1,
    loop_steps=50,
    loop_calls=2,
    warmup_steps=10,
    batch_size=32,
    num_train=320,
    large_steps=0,
    wall_long_steps=0,
    log=lambda message: None,
  )
  names = chosen
  assert result["balancers"] == chosen
  keys = [
    "seed_fit_steps_per_s",
    "tuned_fit_steps_per_s",
    "ratio_fixed_vs_seed_fit",
    "ratio_fixed_vs_tuned_fit",
    "ratio_xla_vs_graph",
  ]
  keys += [f"{name}_steps_per_s" for name in names]
  keys += [
    f"{name}_{mode}_{what}" for name in names for mode in benchmark.MODES for what in ("steps_per_s", "compile_s")
  ]
  keys += [f"{name}_time_vs_fixed" for name in names if name != "fixed"]
  keys += [f"{key}_{what}" for key in (v.key for v in benchmark.VARIANTS) for what in ("steps_per_s", "compile_s")]
  keys += [
    "adam_ours_vs_keras_xla",
    "adam_ours_vs_keras_graph",
    "executor_auto_vs_default_graph",
    "executor_single_vs_default_xla",
    "dropout_philox_vs_auto_xla",
  ]
  keys += [f"{name}_{mode}_time_vs_fixed" for name in names if name != "fixed" for mode in benchmark.MODES]
  for key in keys:
    assert math.isfinite(result[key]) and result[key] > 0, key
  assert "fixed_time_vs_fixed" not in result and "flops_fraction_of_matmul" not in result
  assert result["default_mode"] == benchmark.default_mode()
  assert result["fixed_steps_per_s"] == result[f"fixed_{result['default_mode']}_steps_per_s"]
  assert result["ratio_xla_vs_graph"] == pytest.approx(
    result["fixed_xla_steps_per_s"] / result["fixed_graph_steps_per_s"]
  )
  assert result["batch_size"] == 32 and result["train_rows"] == 320 and result["cpu_count"] >= 1
  assert result["tf_version"]
  assert all(len(values) == 1 for values in result["samples"].values())
  json.loads(json.dumps(result))  # the last line of stdout must be one JSON object
  table = benchmark.format_table(result)
  assert len(table.splitlines()) == 2 + 2 + len(names) * len(benchmark.MODES) + len(benchmark.VARIANTS) + 3


def test_dense_flops_counts_forward_and_both_backward_products():
  # Layers 10→4 and 4→2, batch 3: forward 2·3·(40 + 8); kernel gradients the same;
  # input gradient only for the second layer (2·3·8).
  assert benchmark.dense_flops([(10, 4), (4, 2)], 3) == 2 * 3 * 48 * 2 + 2 * 3 * 8


def test_balancer_list_puts_fixed_first_and_rejects_unknown_names():
  assert benchmark.resolve_balancers(None) == ["fixed"] + [n for n in BALANCERS.names() if n != "fixed"]
  assert benchmark.resolve_balancers([]) == benchmark.resolve_balancers(None)
  with pytest.raises(UserError, match="nope"):
    benchmark.resolve_balancers(["nope"])

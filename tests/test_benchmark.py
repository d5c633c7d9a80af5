"""The benchmark's core runs end to end at toy sizes and reports every key."""

import json
import math
import types

import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # the determinism switch's off side

from mtl_research import config as config_lib
from mtl_research import tasks as tasks_lib
from mtl_research.balancers import BALANCERS
from mtl_research.cli import benchmark, benchmark_gradients
from mtl_research.errors import UserError
from mtl_research.features import NUMERIC, FeatureSpec
from mtl_research.models import ARCHITECTURES, base
from mtl_research.train import components as components_lib


@pytest.fixture(name="without_op_determinism")
def fixture_without_op_determinism():
  """Op determinism off for the test: an earlier --deterministic run in this process turned it on,
  and under it Keras refuses the tuned fit's jit_compile=True (measuring it without XLA)."""
  was_on = tf_config.is_op_determinism_enabled()
  tf_config.disable_op_determinism()
  yield
  if was_on:
    tf_config.enable_op_determinism()


class FakeFitTimer:
  """FitTimer's interface without Keras: a distinct rate per instance, in the order they are made."""

  made: list = []

  def __init__(self, model, x, ys, batch_size, epochs):
    self.rate = 100.0 + len(FakeFitTimer.made)
    FakeFitTimer.made.append(self)

  def steps_per_s(self) -> float:
    return self.rate


class FakeLoopTimer:
  """LoopTimer's interface without compiling: records what each measurement configured."""

  made: list = []

  def __init__(self, config, bundle, warmup_steps, steps, calls, keras_adam=False):
    self.setting = {
      "balancer": config.balancer.name,
      "jit": config.loop.jit_compile,
      "keras_adam": keras_adam,
      "executor": config.loop.executor,
      "dropout": config.model.params["dropout"],
      "rng_alg": base.Dropout.rng_alg,
    }
    self.rate, self.compile_s = 1000.0 + 37.0 * len(FakeLoopTimer.made), 0.5 + len(FakeLoopTimer.made)
    FakeLoopTimer.made.append(self)

  def steps_per_s(self) -> float:
    return self.rate


class DriftingLoopTimer(FakeLoopTimer):
  """A machine whose speed drifts: it slows by 10% after every timing of a balancer other than fixed."""

  speed = 1.0

  def steps_per_s(self) -> float:
    rate = self.rate * DriftingLoopTimer.speed
    if self.setting["balancer"] != "fixed":
      DriftingLoopTimer.speed /= 1.1
    return rate


def test_time_vs_fixed_pairs_each_repetition_with_the_baseline_timed_just_before(monkeypatch, without_op_determinism):
  """The true ratios survive a drifting machine: each balancer's repetition is compared with a baseline timing
  taken next to it, not with the baseline's median from the start of the repetition."""
  FakeFitTimer.made, FakeLoopTimer.made = [], []
  DriftingLoopTimer.speed = 1.0
  monkeypatch.setattr(benchmark, "FitTimer", FakeFitTimer)
  monkeypatch.setattr(benchmark, "LoopTimer", DriftingLoopTimer)
  names = ["fixed", "mgda", "rlw"]
  result = benchmark.measure(
    names,
    repeats=3,
    batch_size=32,
    num_train=320,
    large_steps=0,
    wall_long_steps=0,
    gradient_batches=0,
    log=lambda m: None,
  )
  own = {(t.setting["balancer"], t.setting["jit"]): t.rate for t in FakeLoopTimer.made[: 2 * len(names)]}
  for name in names[1:]:
    for loop_mode, jit in (("xla", "on"), ("graph", "off")):
      assert result[f"{name}_{loop_mode}_time_vs_fixed"] == pytest.approx(own[("fixed", jit)] / own[(name, jit)])
      if name == "rlw":  # timed after mgda's two timings slowed the machine: unpaired medians are off
        unpaired = result[f"fixed_{loop_mode}_steps_per_s"] / result[f"{name}_{loop_mode}_steps_per_s"]
        assert unpaired != pytest.approx(own[("fixed", jit)] / own[(name, jit)], rel=1e-3)
    assert len(result["paired_time_vs_fixed"][f"{name}_xla"]) == 3


class FakeModelTimer:
  """A loop timer per (architecture, balancer) with its own rate, on a machine that slows down after each
  timing of an architecture other than shared-bottom; `parts.model` answers what measure_models asks."""

  speed = 1.0
  made: list = []

  def __init__(self, config, bundle, warmup_steps, steps, calls, keras_adam=False):
    self.model_name, self.balancer = config.model.name, config.balancer.name
    self.rate = 1000.0 + 111.0 * len(FakeModelTimer.made)
    size = 100 * (1 + len(FakeModelTimer.made))
    self.parts = types.SimpleNamespace(
      model=types.SimpleNamespace(name=self.model_name, parameter_counts=lambda: {"total": size})
    )
    FakeModelTimer.made.append(self)

  def steps_per_s(self) -> float:
    rate = self.rate * FakeModelTimer.speed
    if self.model_name != "shared_bottom":
      FakeModelTimer.speed /= 1.1
    return rate


def test_measure_models_pairs_each_architecture_with_shared_bottom_and_reports_flops(monkeypatch):
  FakeModelTimer.speed, FakeModelTimer.made = 1.0, []
  monkeypatch.setattr(benchmark, "LoopTimer", FakeModelTimer)
  layers = {"shared_bottom": [(10, 128), (128, 64), (64, 1)], "mmoe": [(10, 64)] * 9, "cross_stitch": [(10, 32)]}
  monkeypatch.setattr(benchmark, "model_dense_shapes", lambda model: layers[model.name])
  bundle = benchmark.synthetic_bundle(320, 0)
  result = benchmark.measure_models(["mmoe", "cross_stitch"], bundle, 32, 0, 320, 1, 10, 1, 3, lambda m: None)
  assert result["models"] == ["shared_bottom", "mmoe", "cross_stitch"]
  rate = {(t.model_name, t.balancer): t.rate for t in FakeModelTimer.made}
  assert sorted(rate) == sorted((m, b) for m in result["models"] for b in ("fixed", "gradnorm"))
  for model in ("mmoe", "cross_stitch"):
    for name in ("fixed", "gradnorm"):
      # Paired with the baseline timed just before: the drift cancels.
      assert result[f"{model}_{name}_time_vs_shared_bottom"] == pytest.approx(
        rate[("shared_bottom", name)] / rate[(model, name)]
      )
    want = benchmark.dense_flops(layers[model], 32) / benchmark.dense_flops(layers["shared_bottom"], 32)
    assert result[f"{model}_flops_vs_shared_bottom"] == pytest.approx(want)
  assert result["shared_bottom_flops_per_step"] == benchmark.dense_flops(layers["shared_bottom"], 32)


def test_measure_reports_every_key_with_the_right_ratios(monkeypatch, without_op_determinism):
  """The benchmark's bookkeeping, on fake timers: every key, each ratio from the measurements it names,
  each variant measured under its own setting. (The timers themselves: the test below.)"""
  FakeFitTimer.made, FakeLoopTimer.made = [], []
  monkeypatch.setattr(benchmark, "FitTimer", FakeFitTimer)
  monkeypatch.setattr(benchmark, "LoopTimer", FakeLoopTimer)
  names = BALANCERS.names()
  result = benchmark.measure(
    repeats=2, batch_size=32, num_train=320, large_steps=0, wall_long_steps=0, gradient_batches=0, log=lambda m: None
  )
  assert result["balancers"][0] == "fixed" and sorted(result["balancers"]) == names
  rate = {key.removesuffix("_steps_per_s"): value for key, value in result.items() if key.endswith("_steps_per_s")}
  mode = result["default_mode"]
  assert mode == benchmark.default_mode()
  # Every measurement a distinct fake rate: a ratio built from the wrong pair cannot pass.
  expected = {
    "ratio_fixed_vs_seed_fit": rate[f"fixed_{mode}"] / rate["seed_fit"],
    "ratio_fixed_vs_tuned_fit": rate[f"fixed_{mode}"] / rate["tuned_fit"],
    "ratio_xla_vs_graph": rate["fixed_xla"] / rate["fixed_graph"],
    "adam_ours_vs_keras_xla": rate["fixed_xla"] / rate["fixed_xla_keras_adam"],
    "adam_ours_vs_keras_graph": rate["fixed_graph"] / rate["fixed_graph_keras_adam"],
    "executor_auto_vs_default_graph": rate["fixed_graph"] / rate["fixed_graph_default_executor"],
    "executor_single_vs_default_xla": rate["fixed_xla_single_threaded"] / rate["fixed_xla"],
    "dropout_philox_vs_auto_xla": rate["fixed_xla_dropout"] / rate["fixed_xla_dropout_auto_rng"],
  }
  for name in names:
    assert result[f"{name}_steps_per_s"] == rate[f"{name}_{mode}"]
    if name != "fixed":
      for loop_mode in benchmark.MODES:
        expected[f"{name}_{loop_mode}_time_vs_fixed"] = rate[f"fixed_{loop_mode}"] / rate[f"{name}_{loop_mode}"]
      expected[f"{name}_time_vs_fixed"] = expected[f"{name}_{mode}_time_vs_fixed"]
  for key, value in expected.items():
    assert result[key] == pytest.approx(value), key
  # Two fits, each balancer in each mode, each variant: all distinct (the default-mode aliases repeat them).
  assert len(set(rate.values())) == 2 + 2 * len(names) + len(benchmark.VARIANTS)
  for key in [f"{n}_{m}" for n in names for m in benchmark.MODES] + [v.key for v in benchmark.VARIANTS]:
    assert result[f"{key}_compile_s"] > 0, key
  assert "fixed_time_vs_fixed" not in result and "flops_fraction_of_matmul" not in result
  # Each variant measured the fixed loop with exactly its own setting changed.
  settings = [timer.setting for timer in FakeLoopTimer.made]
  default = settings[0]
  assert default["balancer"] == "fixed" and default["jit"] == "on" and not default["keras_adam"]
  for variant, setting in zip(benchmark.VARIANTS, settings[2 * len(names) :]):
    assert setting["balancer"] == "fixed" and setting["jit"] == ("on" if variant.xla else "off"), variant.key
    assert setting["keras_adam"] == variant.keras_adam, variant.key
    assert setting["dropout"] == variant.dropout, variant.key
    assert (setting["executor"] == variant.executor) if variant.executor else True, variant.key
    assert setting["rng_alg"] == (variant.rng_alg or default["rng_alg"]), variant.key
  assert result["batch_size"] == 32 and result["train_rows"] == 320 and result["cpu_count"] >= 1
  assert all(len(values) == 2 for values in result["samples"].values())
  json.loads(json.dumps(result))  # the last line of stdout must be one JSON object
  table = benchmark.format_table(result)
  assert len(table.splitlines()) == 2 + 2 + len(names) * len(benchmark.MODES) + len(benchmark.VARIANTS) + 3


@pytest.mark.filterwarnings("error:Model doesn't support `jit_compile=True`")
def test_the_timers_measure_real_fits_and_loops(without_op_determinism):
  """The timers the bookkeeping above fakes: Keras fit (the tuned one compiled with XLA) and our loop."""
  bundle = benchmark.synthetic_bundle(320, 0)
  x = bundle.train.features["numeric"]
  ys = [bundle.train.labels[task.name] for task in bundle.tasks]
  tuned = benchmark.seed_model(
    x.shape[1], 3, 0, steps_per_execution=benchmark.TUNED_STEPS_PER_EXECUTION, jit_compile=True
  )
  assert benchmark.FitTimer(tuned, x, ys, 32, 1).steps_per_s() > 0
  config = benchmark.make_config("fixed", 32, 0, 320, 60, 20, config_lib.JitMode.ON, benchmark.HIDDEN_UNITS)
  loop = benchmark.LoopTimer(config, bundle, 10, 20, 2)
  assert loop.parts.train_loop.jit_compile and loop.compile_s > 0
  rate = loop.steps_per_s()
  assert math.isfinite(rate) and rate > 0
  assert int(loop.parts.global_step.numpy()) == 10 + 2 * 20  # warm-up, then the timed calls


def test_dense_flops_counts_forward_and_both_backward_products():
  # Layers 10→4 and 4→2, batch 3: forward 2·3·(40 + 8); kernel gradients the same;
  # input gradient only for the second layer (2·3·8).
  assert benchmark.dense_flops([(10, 4), (4, 2)], 3) == 2 * 3 * 48 * 2 + 2 * 3 * 8


def test_balancer_list_puts_fixed_first_and_rejects_unknown_names():
  assert benchmark.resolve_balancers(None) == ["fixed"] + [n for n in BALANCERS.names() if n != "fixed"]
  assert benchmark.resolve_balancers([]) == benchmark.resolve_balancers(None)
  with pytest.raises(UserError, match="nope"):
    benchmark.resolve_balancers(["nope"])


def test_per_task_gradients_agree_both_ways_and_the_scope_ratios_come_from_their_own_pair():
  bundle = benchmark.synthetic_bundle(320, 0)
  parts = components_lib.build(
    benchmark.make_config("fixed", 32, 0, 320, 8, 8, config_lib.JitMode.ON, benchmark.HIDDEN_UNITS), bundle
  )
  backward = benchmark_gradients.PerTaskGradientTimer(parts, jacobian=False, batches=4)
  jacobian = benchmark_gradients.PerTaskGradientTimer(parts, jacobian=True, batches=4)
  assert backward.total == pytest.approx(jacobian.total, rel=1e-5) and backward.total > 0
  assert backward.batches_per_s() > 0 and jacobian.batches_per_s() > 0
  rates = iter(range(100, 200, 7))

  def timer(name, scope):
    rate = float(next(rates))
    return lambda: rate

  result = benchmark_gradients.measure_scopes(timer, ["a", "b"], 2, lambda m: None)
  for name in ("a", "b"):
    assert result[f"{name}_wide_representation_vs_parameters"] == pytest.approx(
      result[f"{name}_wide_representation_steps_per_s"] / result[f"{name}_wide_parameters_steps_per_s"]
    )
  assert result["a_wide_parameters_steps_per_s"] != result["b_wide_parameters_steps_per_s"]


def test_model_dense_shapes_counts_every_expert_of_a_bank():
  specs = (tasks_lib.TaskSpec("a", tasks_lib.REGRESSION), tasks_lib.TaskSpec("b", tasks_lib.CLASSIFICATION, 3))
  params = {p.name: p.parse(p.default) for p in ARCHITECTURES.get("mmoe").params}
  params.update(num_experts=3, expert_units=[16, 8], tower_units=[4])
  model = ARCHITECTURES.get("mmoe").component(specs, FeatureSpec(numeric_dim=5), params)
  model.build_for({NUMERIC: tf.zeros([1, 5])})
  shapes = benchmark.model_dense_shapes(model)
  assert sorted(shapes) == sorted([(5, 16)] * 3 + [(16, 8)] * 3 + [(5, 3)] * 2 + [(8, 4)] * 2 + [(4, 1), (4, 3)])

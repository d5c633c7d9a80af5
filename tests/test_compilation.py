"""--jit_compile: where XLA runs, one compilation per run, fallback, and agreement with the graph loop."""

from __future__ import annotations

import collections
import glob
import os
import re

from conftest import (
  RESUMED_RUN,
  SMALL_RUN_FLAGS,
  assert_metrics_agree,
  assert_weights_agree,
  build_config,
  checkpoint_numbers,
  make_bundle,
  metrics_of,
  run_train,
  run_train_stopped,
)
import numpy as np
import pytest
import tensorflow as tf

from mtl_research import tasks
from mtl_research.balancers import BALANCERS
from mtl_research.balancers.base import Balancer, Schedule
from mtl_research.errors import UserError
from mtl_research.train import compilation
from mtl_research.train import components as components_lib
from mtl_research.train.evaluate import Evaluator
from mtl_research.train.train_loop import TrainLoop

SPECS = (tasks.TaskSpec("price", tasks.REGRESSION), tasks.TaskSpec("kind", tasks.CLASSIFICATION, 3))


class TestResolve:
  @pytest.mark.parametrize(
    "mode, strategy, expected",
    [
      ("auto", None, (True, "")),
      ("on", None, (True, "")),
      ("off", None, (False, "")),
      ("off", "mirrored", (False, "")),
    ],
  )
  def test_one_device_compiles_unless_off(self, mode, strategy, expected):
    assert compilation.resolve(mode, strategy) == expected

  def test_auto_under_a_strategy_runs_the_graph_loop_and_says_why(self):
    use, why = compilation.resolve("auto", "mirrored")
    assert not use and "--strategy=mirrored runs the graph loop" in why

  def test_on_under_a_strategy_is_refused_naming_the_flag(self):
    with pytest.raises(UserError, match=r"--jit_compile=on cannot run under --strategy=multi_worker"):
      compilation.resolve("on", "multi_worker")

  def test_unknown_mode_is_refused(self):
    with pytest.raises(UserError, match="--jit_compile=maybe"):
      compilation.resolve("maybe", None)


class PyFuncBalancer(Balancer):
  """Equal weights computed by a NumPy function: an op XLA cannot compile."""

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    weights = tf.numpy_function(lambda x: np.ones_like(x), [losses], tf.float32, stateful=False)
    return tf.reduce_sum(tf.reshape(weights, [-1]) * losses)

  def weights(self) -> tf.Tensor:
    return tf.ones([self.num_tasks])


class PyFuncUpdateBalancer(PyFuncBalancer):
  """The NumPy function in `update`, whose "balancer" name scope the graph has already opened (balancer_2)."""

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(losses)

  def update(self, stats) -> dict[str, tf.Tensor]:
    echo = tf.numpy_function(lambda x: x, [stats.losses], tf.float32, stateful=False)
    return {"echo": tf.reshape(echo, [self.num_tasks])}


def _step_with(balancer_cls, jit: bool) -> TrainLoop:
  """A TrainLoop of the fixed-balancer components, with `balancer_cls` instead."""
  parts = components_lib.build(
    build_config(loop={"jit_compile": "on" if jit else "off"}), make_bundle(SPECS, num_train=128)
  )
  old = parts.train_loop
  balancer = balancer_cls(SPECS, {}, Schedule(4, 20))
  return TrainLoop(
    parts.model, balancer, parts.optimizer, old.data, old.order, parts.global_step, old.steps_per_call, jit_compile=jit
  )


class TestFallback:
  @pytest.mark.parametrize("balancer_cls", [PyFuncBalancer, PyFuncUpdateBalancer])
  def test_auto_falls_back_naming_the_component_and_the_op(self, balancer_cls):
    step = _step_with(balancer_cls, jit=True)
    line = step.compile(fall_back=True, components={"balancer": "--balancer=pyfunc"})
    assert line.startswith("XLA cannot compile --balancer=pyfunc (op PyFunc"), line
    assert "using the graph loop" in line and "Traced the train loop (graph)" in line
    assert not step.jit_compile
    logs = step.run(3)
    assert np.all(np.isfinite(logs["losses"])) and int(step.global_step.numpy()) == 3

  def test_on_is_refused_in_one_sentence(self):
    step = _step_with(PyFuncBalancer, jit=True)
    with pytest.raises(UserError) as raised:
      step.compile(fall_back=False, components={"balancer": "--balancer=pyfunc"})
    message = str(raised.value)
    assert message.startswith("--jit_compile=on: XLA cannot compile the train loop: --balancer=pyfunc")
    assert "\n" not in message

  def test_culprit_without_a_known_scope_names_the_node(self):
    error = tf.errors.InvalidArgumentError(
      None,
      None,
      "Detected unsupported operations when trying to compile graph on XLA_CPU_JIT: Foo "
      "(No registered 'Foo' OpKernel for XLA_CPU_JIT devices) {{node while/body/x/Foo}}",
    )
    assert compilation.is_compile_error(error)
    assert compilation.culprit(error, {"balancer": "b"}) == "op Foo (node while/body/x/Foo)"


# --- one XLA program per run, counted in XLA's own dump -------------------------------------


@pytest.mark.slow
def test_a_run_with_loops_of_many_lengths_compiles_one_program(tmp_path):
  """Loops of 30, 20 and 10 steps (cut by summaries, evaluations, checkpoints, the end),
  some with diagnostics: one trace and one XLA compilation of the train loop."""
  dump = tmp_path / "xla"
  path = str(tmp_path / "run")
  env = {"XLA_FLAGS": f"--xla_dump_to={dump}"}
  proc = run_train(
    f"--run_dir={path}",
    *SMALL_RUN_FLAGS,
    "--train_steps=130",
    "--steps_per_loop=30",
    "--summary_every=50",
    "--eval_every=70",
    "--checkpoint_every=40",
    "--log_grad_conflict",
    env=env,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert re.search(r"^Compiled the train loop with XLA in [0-9.]+ s\.$", proc.stdout, re.MULTILINE), proc.stdout
  # A fresh process: TensorFlow's harmless start-up lines were filtered (cli/quiet_start.py).
  assert "InitializeLog" not in proc.stderr and "cuda drivers" not in proc.stderr, proc.stderr
  progress = [int(m) for m in re.findall(r"^step +(\d+)/130", proc.stdout, re.MULTILINE)]
  lengths = {b - a for a, b in zip([0] + progress, progress)}
  assert lengths >= {30, 20, 10}, progress
  modules = collections.Counter(
    re.match(r"module_(\d+)\.", os.path.basename(name)).group(1)
    for name in glob.glob(str(dump / "module_*loop*.before_optimizations.txt"))
  )
  assert len(modules) == 1, sorted(modules)


# --- agreement with the graph loop ---------------------------------------------------------


def _train_in_process(
  balancer: str,
  jit: str,
  steps: int,
  steps_per_loop: int,
  dropout: float = 0.0,
  calls: list[int] | None = None,
  last_logs: dict | None = None,
) -> components_lib.Components:
  """A small run trained in loop calls of `calls` steps (default: steps_per_loop each); the last call's
  logs are put in `last_logs` if given."""
  config = build_config(
    balancer=balancer,
    loop={"train_steps": steps, "steps_per_loop": steps_per_loop, "jit_compile": jit},
    model_params={"hidden_units": (32, 16), "dropout": dropout},
    optimizer={"learning_rate": 3e-3},
  )
  parts = components_lib.build(config, AGREEMENT_BUNDLE)
  for count in calls or [steps_per_loop] * (steps // steps_per_loop):
    logs = parts.train_loop.run(count)
  if last_logs is not None:
    last_logs.update(logs)
  assert int(parts.global_step.numpy()) == steps
  return parts


AGREEMENT_BUNDLE = make_bundle(SPECS, num_train=512, num_eval=256)
# Relative to each variable's largest magnitude, and to each metric. Measured after 300
# steps: at most 6e-7 on a weight and 7e-7 on a metric, for every balancer (XLA fuses
# and reorders the same float32 arithmetic); the bound leaves a margin of 14.
AGREEMENT_TOLERANCE = 1e-5


# Every registered balancer: the unit tests build graph loops (conftest.build_config), so this is
# where each balancer is shown to compile with XLA and to compute what the graph loop computes.
@pytest.mark.parametrize("balancer", BALANCERS.names())
def test_xla_and_the_graph_loop_agree_to_rounding(balancer):
  """No dropout: the XLA and TensorFlow kernels draw different random numbers (README)."""
  logs: dict[str, dict] = {"on": {}, "off": {}}
  runs = {jit: _train_in_process(balancer, jit, 300, 50, last_logs=logs[jit]) for jit in ("on", "off")}
  xla, graph = runs["on"], runs["off"]
  assert xla.train_loop.jit_compile and not graph.train_loop.jit_compile
  # The last step's weighted losses w_t·L_t rather than the weights alone: a loss-weighting method's weight
  # can be 1/L_t of a loss fitted to 1% of its start, a residual whose rounding the weight inherits
  # (measured: 2.3e-4 relative on Σ log L's weight of 105.7 while the model agreed to 1e-6); the
  # weighted loss is what the update is made of, and it is as well-conditioned as the model.
  differs = False
  for got, want in zip(
    xla.model.get_weights() + [xla.balancer.weights().numpy() * logs["on"]["losses"]],
    graph.model.get_weights() + [graph.balancer.weights().numpy() * logs["off"]["losses"]],
  ):
    scale = max(float(np.max(np.abs(want))), 1e-6)
    assert float(np.max(np.abs(got - want))) <= AGREEMENT_TOLERANCE * scale
    differs = differs or not np.array_equal(got, want)
  assert differs, "bit-identical: the two modes did not both run"

  def evaluate(parts):
    return Evaluator(parts.model, 1024).evaluate(AGREEMENT_BUNDLE.test)

  got, want = evaluate(xla), evaluate(graph)
  for task, metrics in want.items():
    for name, value in metrics.items():
      # Relative to the metric, or to the targets' unit scale when it is smaller: a fitted MSE of 0.012
      # (Σ log L after 300 steps) is a residual whose rounding is 2·rmse·δprediction, not proportional
      # to it (measured: 5.2e-7 and 1.4e-6 on 0.0123 in two runs, with the model agreeing to 1e-5).
      bound = 1.0 / 256 if name == "accuracy" else AGREEMENT_TOLERANCE * max(abs(value), 1.0)
      assert abs(got[task][name] - value) <= bound, (task, name, got[task][name], value)


@pytest.mark.slow
def test_loop_boundaries_do_not_change_a_bit_under_xla():
  """Every step runs the same compiled loop body: a run cut into other loops (and
  another --steps_per_loop) computes the same bits, so a shorter run is a prefix of a longer one."""
  reference = _train_in_process("gradnorm", "on", 150, 50, dropout=0.2)
  other = _train_in_process("gradnorm", "on", 150, 64, dropout=0.2, calls=[64, 7, 57, 1, 21])
  for got, want in zip(other.train_loop.state_variables, reference.train_loop.state_variables):
    np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.name)
  for got, want in zip(other.optimizer.variables, reference.optimizer.variables):
    np.testing.assert_array_equal(np.asarray(got.numpy()), np.asarray(want.numpy()), err_msg=got.path)


# --- a checkpoint resumes in the other mode -------------------------------------------------

# Long enough to be stopped mid-run; no dropout (the modes draw different masks, README).
CROSS_RUN = ("--balancer=gradnorm", *RESUMED_RUN)
# Measured: a run resumed in the other mode ends within 1.1e-6 (relative to each
# variable's largest magnitude) of an uninterrupted XLA run; the bound leaves a margin of 30.
CROSS_TOLERANCE = 3e-5


@pytest.fixture(name="uninterrupted_xla", scope="module")
def fixture_uninterrupted_xla(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("uninterrupted-xla") / "run")
  proc = run_train(f"--run_dir={path}", *CROSS_RUN)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return path


@pytest.mark.parametrize("first, then", [("auto", "off"), ("off", "auto")], ids=["xla-to-graph", "graph-to-xla"])
def test_a_checkpoint_resumes_in_the_other_mode(tmp_path, uninterrupted_xla, first, then):
  path = str(tmp_path / "run")
  base = (f"--run_dir={path}", *CROSS_RUN)
  proc = run_train_stopped(*base, f"--jit_compile={first}")
  assert proc.returncode == 0 and "SIGTERM: stopped at step" in proc.stderr, proc.stderr[-3000:]
  assert 0 < max(checkpoint_numbers(path)) < 1000
  resumed = run_train(*base, f"--jit_compile={then}")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resumed from" in resumed.stdout
  assert ("Compiled the train loop with XLA" in resumed.stdout) == (then == "auto")
  assert_metrics_agree(metrics_of(path), metrics_of(uninterrupted_xla), 300, CROSS_TOLERANCE)
  worst = assert_weights_agree(path, uninterrupted_xla, CROSS_TOLERANCE)
  print(f"worst relative difference of a variable: {worst:.2e}")

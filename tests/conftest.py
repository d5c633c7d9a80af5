"""Shared helpers of the test suite: configs, tiny bundles, CLI runs, event files."""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
import contextlib
import glob
import io
import json
import os
import runpy
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position
from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top,wrong-import-position

from mtl_research import config as config_lib  # pylint: disable=wrong-import-position
from mtl_research import tasks as tasks_lib  # pylint: disable=wrong-import-position
from mtl_research.balancers import BALANCERS  # pylint: disable=wrong-import-position
from mtl_research.data import DATASETS  # pylint: disable=wrong-import-position
from mtl_research.data.bundle import DatasetBundle, Split  # pylint: disable=wrong-import-position
from mtl_research.models import ARCHITECTURES  # pylint: disable=wrong-import-position

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(REPO_ROOT, "scripts", "train.py")
NUM_FEATURES = 6

# Flags that make a CLI run small: a few hundred rows, a few dozen steps.
SMALL_RUN_FLAGS = (
  "--num_train=512",
  "--num_val=128",
  "--num_test=128",
  "--hidden_units=16",
  "--train_steps=40",
  "--eval_every=20",
  "--checkpoint_every=20",
)


# Logical CPU devices of every test process, configured before TensorFlow starts (below), so
# that `--strategy=mirrored --cpu_replicas=2` runs in-process: the trainer accepts devices
# already split as it asks. A run's results do not depend on the split (ops run on /cpu:0
# unless a strategy places them); test_cli.py's default run checks its bits.
TEST_CPU_REPLICAS = 2
tf.config.set_logical_device_configuration(
  tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * TEST_CPU_REPLICAS
)


def needs_fresh_process(args: Sequence[str]) -> bool:
  """Whether a train command must run in a process of its own.

  Thread counts are fixed when TensorFlow starts, another number of logical
  CPUs too, and a multi-worker strategy configures collectives for the rest of
  the process. (--deterministic turns op determinism on for the rest of the
  process; CPU kernels are deterministic anyway, so later runs are unaffected.)
  """
  for arg in args:
    name, _, value = arg.partition("=")
    if name in ("--intra_op_threads", "--inter_op_threads"):
      return True
    if name == "--strategy" and value not in ("default", "mirrored"):
      return True
    if name == "--cpu_replicas" and value not in ("0", str(TEST_CPU_REPLICAS)):
      return True
  return False


def run_train(*args: str, timeout: float = 180, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
  """Runs `python scripts/train.py ARGS`; the finished process (or its in-process equivalent).

  Runs in this process (no TensorFlow start-up: seconds saved per run) unless
  the command needs a fresh one (`env`, or `needs_fresh_process`).
  """
  if env or needs_fresh_process(args):
    return run_train_process(*args, timeout=timeout, env=env)
  from mtl_research.cli import train as train_cli  # pylint: disable=g-import-not-at-top

  return run_cli_in_process(train_cli, TRAIN_SCRIPT, *args)


def run_train_stopped(*args: str) -> subprocess.CompletedProcess:
  """`run_train(ARGS)` in this process, as if SIGTERM arrived just after the first periodic checkpoint.

  The trainer stops at the end of the next loop with a checkpoint and exits 0,
  as a process sent SIGTERM at that moment does; the run can then be resumed in
  another mode or strategy. (The signal itself, delivered to a real process,
  is test_reliability.py's.)
  """
  assert not needs_fresh_process(args), args
  from mtl_research.train import checkpoints, interrupt  # pylint: disable=g-import-not-at-top

  enter, save = interrupt.StopRequest.__enter__, checkpoints.Checkpoints.save
  requests = []

  def enter_recorded(self):
    requests.append(enter(self))
    return requests[-1]

  def save_then_signal(self, step: int) -> str:
    path = save(self, step)
    if step > 0 and requests:
      requests[-1].signal = signal.SIGTERM
    return path

  interrupt.StopRequest.__enter__ = enter_recorded
  checkpoints.Checkpoints.save = save_then_signal
  try:
    return run_train(*args)
  finally:
    interrupt.StopRequest.__enter__, checkpoints.Checkpoints.save = enter, save


def run_python(*args: str, timeout: float = 180, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
  """Runs `python ARGS` from the repository root, TensorFlow's C++ logs quiet; the finished process."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
  return subprocess.run(
    [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
  )


def run_train_process(
  *args: str, timeout: float = 180, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
  """Runs `python scripts/train.py ARGS` (with `env` added to the environment) as a process."""
  return run_python(TRAIN_SCRIPT, *args, timeout=timeout, env=env)


def run_cli_in_process(module, script: str, *args: str) -> subprocess.CompletedProcess:
  """`python SCRIPT ARGS` for the entry point `module` (mtl_research.cli.*), called in this process.

  As its console script would run it: the module's own flags defined (its
  `define_flags`, if it has one), the command line parsed, `module.main`
  called. See `run_script_in_process` for what comes back.
  """
  from mtl_research.cli import common  # pylint: disable=g-import-not-at-top

  def call(argv: list[str]) -> None:
    if hasattr(module, "define_flags"):
      module.define_flags()
    module.main(common.parse_flags(argv))

  return _in_process(call, [script, *args])


def run_script_in_process(script: str, *args: str) -> subprocess.CompletedProcess:
  """`python SCRIPT ARGS`, the script itself run as `__main__` in this process.

  Returns what the process would have: the exit status (a SystemExit's, 1 and
  the traceback on stderr for any other exception), stdout and stderr.
  Afterwards the global flags are reset and the flags the command defined
  removed again, so that the next command starts as in a fresh process.
  """

  def call(argv: list[str]) -> None:
    saved = sys.argv
    sys.argv = argv
    try:
      runpy.run_path(script, run_name="__main__")
    finally:
      sys.argv = saved

  return _in_process(call, [script, *args])


def _in_process(call: Callable[[list[str]], None], argv: list[str]) -> subprocess.CompletedProcess:
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top

  defined_before = set(absl_flags.FLAGS)
  out, err = io.StringIO(), io.StringIO()
  code = 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      call(argv)
    except SystemExit as stop:
      if isinstance(stop.code, str):  # what the interpreter does with sys.exit("message")
        print(stop.code, file=sys.stderr)
        code = 1
      else:
        code = stop.code or 0
    except Exception:  # pylint: disable=broad-except
      traceback.print_exc()
      code = 1
    finally:
      absl_flags.FLAGS.unparse_flags()
      for name in set(absl_flags.FLAGS) - defined_before:
        delattr(absl_flags.FLAGS, name)
  return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


# A run stopped mid-way and resumed in another mode or strategy: long enough to be stopped,
# short enough that rounding differences between the modes stay small; no dropout (the modes and
# replicas draw different masks). Used by test_compilation.py and test_distribution.py.
RESUMED_RUN = (
  "--deterministic",
  "--train_steps=1000",
  "--checkpoint_every=200",
  "--eval_every=200",
  "--steps_per_loop=20",
  "--num_train=2000",
  "--num_val=300",
  "--num_test=300",
)

# Long enough to be killed mid-run; dropout so the resumed random state matters too.
LONG_RUN = (
  "--deterministic",
  "--train_steps=3000",
  "--checkpoint_every=500",
  "--eval_every=500",
  "--steps_per_loop=50",
  "--dropout=0.2",
  "--num_train=2000",
  "--num_val=300",
  "--num_test=300",
)


def checkpoint_numbers(run_dir: str) -> list[int]:
  names = glob.glob(os.path.join(run_dir, "ckpt", "ckpt-*.index"))
  return sorted(int(os.path.basename(name)[len("ckpt-") : -len(".index")]) for name in names)


def start_train(*args: str) -> subprocess.Popen:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.Popen(
    [sys.executable, TRAIN_SCRIPT, *args],
    cwd=REPO_ROOT,
    env=env,
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: str, timeout: float = 120) -> int:
  """Polls until a periodic checkpoint (step > 0) exists; returns its step."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    numbers = [n for n in checkpoint_numbers(run_dir) if n > 0]
    if numbers:
      return numbers[-1]
    if proc.poll() is not None:
      raise AssertionError(f"the run ended before its first checkpoint: {proc.communicate()[1][-2000:]}")
    time.sleep(0.01)
  proc.kill()
  raise AssertionError("no checkpoint appeared in time")


def assert_refused(proc: subprocess.CompletedProcess, run_dir, *texts: str) -> None:
  """A bad command: non-zero exit, the texts in stderr, no traceback, nothing written."""
  assert proc.returncode != 0
  for text in texts:
    assert text in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert not os.path.exists(run_dir)


def listing(path: str) -> dict[str, bytes]:
  """{relative path: bytes} of every file under `path` (to show that a refusal changed nothing)."""
  files = {}
  for root, _, names in os.walk(path):
    for name in names:
      full = os.path.join(root, name)
      with open(full, "rb") as handle:
        files[os.path.relpath(full, path)] = handle.read()
  return files


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of every scalar in the event files of `logdir`."""
  scalars = collections.defaultdict(list)
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        array = tf.make_ndarray(value.tensor)
        if array.ndim == 0 and array.dtype.kind in "fiu":  # not the HParams / layout summaries
          scalars[value.tag].append((event.step, float(array)))
  return dict(scalars)


def component(family, name: str, overrides: Mapping[str, Any] | None = None) -> config_lib.ComponentConfig:
  """A ComponentConfig with every declared Param at its parsed default, then `overrides`."""
  params = {param.name: param.parse(param.default) for param in family.get(name).params}
  unknown = set(overrides or {}) - set(params)
  if unknown:
    raise ValueError(f"{family.family} {name!r} declares no params {sorted(unknown)}")
  params.update(overrides or {})
  return config_lib.ComponentConfig(name, config_lib.frozen_mapping(params))


def build_config(
  run_dir: str = "unused-run-dir",
  *,
  seed: int = 0,
  dataset: str = "synthetic",
  dataset_params: Mapping[str, Any] | None = None,
  model: str = "shared_bottom",
  model_params: Mapping[str, Any] | None = None,
  balancer: str = "fixed",
  balancer_params: Mapping[str, Any] | None = None,
  optimizer: Mapping[str, Any] | None = None,
  loop: Mapping[str, Any] | None = None,
) -> config_lib.Config:
  """A Config from the dataclasses (no absl flags), small by default.

  The loop runs as a TensorFlow graph unless `loop` asks for `jit_compile`:
  XLA's compilation costs about a second per build, and what XLA changes is
  tested where it is the point (test_compilation.py for every balancer, the
  tests parametrized over the mode, and every in-process CLI run, which keeps
  the default `--jit_compile=auto`).
  """
  # Small by default: shared-bottom's trunk (other architectures keep their defaults unless given).
  model_params = {**({"hidden_units": (16, 8)} if model == "shared_bottom" else {}), **(model_params or {})}
  loop = {
    "batch_size": 32,
    "train_steps": 20,
    "steps_per_loop": 10,
    "jit_compile": config_lib.JitMode.OFF,
    **(loop or {}),
  }
  return config_lib.Config(
    run_dir=run_dir,
    seed=seed,
    dataset=component(DATASETS, dataset, dataset_params),
    model=component(ARCHITECTURES, model, model_params),
    balancer=component(BALANCERS, balancer, balancer_params),
    optimizer=config_lib.OptimizerConfig(**(optimizer or {})),
    loop=config_lib.LoopConfig(**loop),
  )


def _make_split(task_specs: Sequence[tasks_lib.TaskSpec], x: np.ndarray) -> Split:
  # Targets are fixed functions of x (drawn from a generator keyed by the task's
  # position, not by the split), so every task is learnable and splits agree.
  labels = {}
  for i, task in enumerate(task_specs):
    w = np.random.default_rng(1000 + i).normal(size=(x.shape[1], task.output_units))
    z = x @ w
    if task.kind == tasks_lib.REGRESSION:
      labels[task.name] = z[:, 0].astype(np.float32)
    else:
      labels[task.name] = np.argmax(z, axis=-1).astype(np.int32)
  return Split({"numeric": x.astype(np.float32)}, labels)


def make_bundle(
  task_specs: Sequence[tasks_lib.TaskSpec], num_train: int = 256, num_eval: int = 64, seed: int = 0
) -> DatasetBundle:
  """A small learnable DatasetBundle built from NumPy for the given tasks."""
  rng = np.random.default_rng(seed)
  splits = [_make_split(task_specs, rng.normal(size=(n, NUM_FEATURES))) for n in (num_train, num_eval, num_eval)]
  return DatasetBundle(tuple(task_specs), *splits)


def numpy_losses(
  task_specs: Sequence[tasks_lib.TaskSpec], labels: Mapping[str, np.ndarray], outputs: Mapping[str, Any]
) -> np.ndarray:
  """[T] batch-mean losses (squared error, softmax cross-entropy) computed in NumPy."""
  losses = []
  for task in task_specs:
    out = np.asarray(outputs[task.name], np.float64)
    y = np.asarray(labels[task.name])
    if task.kind == tasks_lib.REGRESSION:
      losses.append(np.mean((out[:, 0] - y) ** 2))
    else:
      shifted = out - out.max(axis=1, keepdims=True)
      logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
      losses.append(-np.mean(logp[np.arange(len(y)), y]))
  return np.array(losses)


# --- comparing two runs that should agree up to rounding ------------------------------------


def metrics_of(path: str) -> dict:
  with open(os.path.join(path, "metrics.json"), encoding="utf-8") as handle:
    return json.load(handle)


def numbers(tree, prefix: str = "") -> dict[str, float]:
  """Every numeric leaf of metrics.json by its path."""
  if isinstance(tree, dict):
    return {k: v for key, value in tree.items() for k, v in numbers(value, f"{prefix}/{key}").items()}
  if isinstance(tree, (int, float)) and not isinstance(tree, bool):
    return {prefix: float(tree)}
  return {}


def assert_metrics_agree(got: dict, want: dict, num_examples: int, tolerance: float) -> None:
  """Every number within `tolerance` (relative); accuracy within one example of the split.

  Two runs that add the same numbers in another order (replicas, XLA) differ in
  the last bits; an example lying that close to a class boundary flips, which
  moves accuracy by 1/N however small the difference.
  """
  got, want = numbers(got), numbers(want)
  assert got.keys() == want.keys()
  for key, value in want.items():
    bound = 1.0 / num_examples + 1e-12 if key.endswith("/accuracy") else tolerance * max(abs(value), 1e-6)
    assert abs(got[key] - value) <= bound, (key, got[key], value)


def final_variables(path: str) -> dict[str, np.ndarray]:
  """The float variables of a run's last checkpoint, by checkpoint key."""
  prefix = os.path.join(path, "ckpt", f"ckpt-{checkpoint_numbers(path)[-1]}")
  reader = tf.train.load_checkpoint(prefix)
  return {
    name: reader.get_tensor(name)
    for name, _ in tf.train.list_variables(prefix)
    if "OBJECT_GRAPH" not in name and reader.get_tensor(name).dtype.kind == "f"
  }


def assert_weights_agree(got_path: str, want_path: str, tolerance: float) -> float:
  """Every float variable of the last checkpoints within `tolerance` of its largest magnitude; the worst ratio.

  An Adam first moment m with a second moment v beside it (a balancer's `StateAdam`) is measured against
  the gradients' RMS √v when that is larger: when the gradients average out (FAMO's log-loss decrease δ,
  of either sign), m is a near-cancelling sum whose relative rounding says nothing of the state (measured:
  1.2e-3 of |m| = 6.4e-6, where √v = 2.8e-4 and the logits it moves agree to 3e-6).
  """
  got, want = final_variables(got_path), final_variables(want_path)
  assert got.keys() == want.keys() and len(want) > 10
  worst = 0.0
  for name, value in want.items():
    scale = max(float(np.max(np.abs(value))), 1e-6)
    second = name.replace("/momentums/", "/velocities/")
    if second != name and second in want:
      scale = max(scale, float(np.sqrt(np.max(want[second]))))
    error = float(np.max(np.abs(got[name] - value))) / scale
    assert error <= tolerance, (name, error)
    worst = max(worst, error)
  return worst


# --- how pytest-xdist shares the tests out ----------------------------------------------------


def pytest_itemcollected(item: pytest.Item) -> None:
  """A module's tests that use its module-scoped fixtures form one xdist group (one worker).

  A module-scoped fixture is built once per worker that runs a test using it:
  the group keeps it to one build (a trained run, a sweep). Marked as each test
  is collected, before xdist reads the groups (`--dist loadgroup`).
  """
  # pytest has no public accessor of the fixtures a test uses with their scopes.
  definitions = item._fixtureinfo.name2fixturedefs  # type: ignore[attr-defined]
  shared = any(name in definitions and definitions[name][-1].scope == "module" for name in item.fixturenames)
  if shared and not item.get_closest_marker("xdist_group"):
    item.add_marker(pytest.mark.xdist_group(item.module.__name__))  # type: ignore[attr-defined]


def _group(item: pytest.Item) -> str | None:
  mark = item.get_closest_marker("xdist_group")
  return str(mark.args[0]) if mark is not None else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  """The longest work first, so that no worker starts a long test while the others have finished.

  First the groups holding a slow test (xdist hands a group out when it meets
  its first test: setup.cfg turns off its reordering by group size), then slow
  tests, then the other groups, then the rest. The sort is stable: the order
  within a module is kept.
  """
  slow_groups = {_group(item) for item in items if item.get_closest_marker("slow")} - {None}

  def rank(item: pytest.Item) -> int:
    if _group(item) in slow_groups:
      return 0
    if item.get_closest_marker("slow"):
      return 1
    return 2 if _group(item) else 3

  items.sort(key=rank)


# The helpers as fixtures. Session scope, so module-scoped fixtures can use them.


@pytest.fixture(name="make_config", scope="session")
def fixture_make_config() -> Callable[..., config_lib.Config]:
  return build_config


@pytest.fixture(name="make_bundle", scope="session")
def fixture_make_bundle() -> Callable[..., DatasetBundle]:
  return make_bundle


@pytest.fixture(name="reference_losses", scope="session")
def fixture_reference_losses() -> Callable[..., np.ndarray]:
  return numpy_losses


@pytest.fixture(name="train_cli", scope="session")
def fixture_train_cli() -> Callable[..., subprocess.CompletedProcess]:
  return run_train


@pytest.fixture(name="scalars_of", scope="session")
def fixture_scalars_of() -> Callable[[str], dict[str, list[tuple[int, float]]]]:
  return read_scalars


@pytest.fixture(name="small_run_flags", scope="session")
def fixture_small_run_flags() -> tuple[str, ...]:
  return SMALL_RUN_FLAGS


@pytest.fixture(name="catalogue_run", scope="session")
def fixture_catalogue_run(tmp_path_factory) -> Callable[[], Any]:
  """The bad-input catalogue's finished small CSV run (tests/catalogue.py), trained on first use."""
  import catalogue  # pylint: disable=g-import-not-at-top  (it imports this module)

  built: list = []

  def trained():
    if not built:
      built.append(catalogue.train_trained_run(tmp_path_factory.mktemp("catalogue")))
    return built[0]

  return trained

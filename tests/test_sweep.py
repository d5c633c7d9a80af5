"""Sweeps (scripts/ablate.py): the plan, its validation, and whole sweeps run, rerun, killed,
interrupted and failing, on a tiny synthetic configuration (about 4 s per run).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO_ROOT, run_cli_in_process
import pytest

from mtl_research import flags as flags_lib
from mtl_research.cli import ablate as ablate_cli
from mtl_research.errors import UserError
from mtl_research.sweep import plan, runner

ABLATE_SCRIPT = os.path.join(REPO_ROOT, "scripts", "ablate.py")
# The graph loop: it compiles in a quarter of XLA's time, and a sweep's runs are short.
TINY = (
  "--jit_compile=off",
  "--num_train=256",
  "--num_val=64",
  "--num_test=64",
  "--hidden_units=8",
  "--train_steps=60",
  "--eval_every=30",
  "--steps_per_loop=30",
  "--summary_every=30",
  "--checkpoint_every=30",
)
SWEEP = ("--balancers=fixed,uncertainty", "--seeds=0,1", "--with_single_task", "--parallel=2", *TINY)
RUN_NAMES = sorted(
  [
    "fixed__seed0",
    "fixed__seed1",
    "uncertainty__seed0",
    "uncertainty__seed1",
    "single_task=price__seed0",
    "single_task=price__seed1",
    "single_task=kind__seed0",
    "single_task=kind__seed1",
  ]
)
TRAINING_FLAGS = (
  "learning_rate",
  "hidden_units",
  "gradnorm_alpha",
  "selection",
  "run_dir",
  "seed",
  "balancer",
  "single_task",
  "overwrite",
  "intra_op_threads",
  "inter_op_threads",
)


def ablate_args(sweep_dir, *args):
  return [sys.executable, ABLATE_SCRIPT, f"--sweep_dir={sweep_dir}", *args]


def ablate(sweep_dir, *args) -> subprocess.CompletedProcess:
  """`python scripts/ablate.py --sweep_dir=SWEEP_DIR ARGS`, in this process (its runs are processes)."""
  return run_cli_in_process(ablate_cli, ABLATE_SCRIPT, f"--sweep_dir={sweep_dir}", *args)


def runs_dir(sweep_dir):
  return os.path.join(sweep_dir, "runs")


def finished(sweep_dir) -> list[str]:
  return sorted(
    name
    for name in os.listdir(runs_dir(sweep_dir))
    if os.path.isfile(os.path.join(runs_dir(sweep_dir), name, "metrics.json"))
  )


def read_json(*parts):
  with open(os.path.join(*parts), encoding="utf-8") as handle:
    return json.load(handle)


def mtimes(sweep_dir, names) -> dict[str, int]:
  return {name: os.stat(os.path.join(runs_dir(sweep_dir), name, "metrics.json")).st_mtime_ns for name in names}


def checkpoints(sweep_dir) -> dict[str, list[str]]:
  return {
    name: sorted(os.listdir(os.path.join(runs_dir(sweep_dir), name, "ckpt")))
    for name in os.listdir(runs_dir(sweep_dir))
  }


def assert_same_metrics(actual: dict, expected: dict, rel: float = 1e-6):
  for split in ("val", "test"):
    assert set(actual[split]) == set(expected[split])
    for task, values in expected[split].items():
      for metric, value in values.items():
        assert actual[split][task][metric] == pytest.approx(value, rel=rel, abs=1e-9), (split, task, metric)
  assert actual["selection"] == expected["selection"]


# The plan: pure functions.


class TestPlan:
  def test_expansion_counts_names_and_order(self):
    grid = plan.parse_grid(["learning_rate=0.001,0.01", "gradnorm_alpha=0.5,1.5"], TRAINING_FLAGS)
    specs = plan.expand(["fixed", "uncertainty", "gradnorm"], [0, 1], grid, ["price", "kind"])
    assert len(specs) == 3 * 4 * 2 + 2 * 2
    names = [spec.name for spec in specs]
    assert len(set(names)) == len(names)
    assert "gradnorm__gradnorm_alpha=0.5__learning_rate=0.001__seed1" in names
    assert "single_task=price__seed0" in names and "single_task=kind__seed1" in names
    # Seed-major: every configuration at seed 0 (baselines last) before any run of seed 1.
    assert [spec.seed for spec in specs] == [0] * 14 + [1] * 14
    assert specs[12].single_task == "price" and specs[13].single_task == "kind"

  def test_baselines_are_fixed_without_grid(self):
    grid = plan.parse_grid(["learning_rate=0.001,0.01"], TRAINING_FLAGS)
    baselines = [spec for spec in plan.expand(["uncertainty"], [3], grid, ["price"]) if spec.single_task]
    assert len(baselines) == 1
    spec = baselines[0]
    assert (spec.balancer, spec.grid, spec.seed) == ("fixed", (), 3)
    assert spec.flags() == ["--balancer=fixed", "--seed=3", "--single_task=price"]
    assert spec.to_json() == {
      "name": "single_task=price__seed3",
      "balancer": "fixed",
      "seed": 3,
      "grid": {},
      "single_task": "price",
    }

  def test_run_flags_and_json(self):
    grid = plan.parse_grid(["--learning_rate=0.01"], TRAINING_FLAGS)
    (spec,) = plan.expand(["gradnorm"], [2], grid)
    assert spec.name == "gradnorm__learning_rate=0.01__seed2"
    assert spec.flags() == ["--balancer=gradnorm", "--seed=2", "--learning_rate=0.01"]
    assert spec.to_json()["grid"] == {"learning_rate": "0.01"} and spec.to_json()["single_task"] is None

  def test_names_are_filesystem_safe(self):
    assert plan.sanitize("a/b c:d,e=1.5-x") == "a_b_c_d_e=1.5-x"
    grid = plan.parse_grid(["hidden_units=16,8;32,16", "selection=price:r2"], TRAINING_FLAGS)
    assert grid == {"hidden_units": ("16,8", "32,16"), "selection": ("price:r2",)}
    names = [spec.name for spec in plan.expand(["fixed"], [0], grid)]
    assert names == [
      "fixed__hidden_units=16_8__selection=price_r2__seed0",
      "fixed__hidden_units=32_16__selection=price_r2__seed0",
    ]
    long = plan.run_name("fixed", [("selection", "x" * 500)], 0)
    assert len(long) <= plan.MAX_NAME_LENGTH and long != plan.run_name("fixed", [("selection", "x" * 499)], 0)

  def test_names_that_collide_are_refused(self):
    grid = plan.parse_grid(["selection=a:b,a_b"], TRAINING_FLAGS)
    with pytest.raises(UserError, match="share the directory name .fixed__selection=a_b__seed0."):
      plan.expand(["fixed"], [0], grid)

  @pytest.mark.parametrize(
    "item, message",
    [
      ("learning_rate", "not of the form FLAG=VALUE"),
      ("=1,2", "not of the form FLAG=VALUE"),
      ("nosuch=1,2", "--nosuch is not a training flag"),
      ("seed=0,1", "--seed is set by the sweep; use --seeds"),
      ("balancer=fixed,gradnorm", "use --balancers"),
      ("single_task=price", "use --with_single_task"),
      ("run_dir=a,b", "use --sweep_dir"),
      ("overwrite=true", "set by the sweep"),
      ("intra_op_threads=1,2", "from --parallel"),
      ("learning_rate=0.1,,0.2", "empty value"),
      ("learning_rate=0.1,0.1", "lists a value twice"),
    ],
  )
  def test_grid_errors_name_the_item(self, item, message):
    with pytest.raises(UserError, match=message) as error:
      plan.parse_grid([item], TRAINING_FLAGS)
    assert f"--grid={item}" in str(error.value)

  def test_a_flag_twice_in_the_grid(self):
    with pytest.raises(UserError, match="in --grid twice"):
      plan.parse_grid(["learning_rate=0.1", "learning_rate=0.2"], TRAINING_FLAGS)

  def test_definition_difference(self):
    grid = {"learning_rate": ("0.001", "0.01")}
    old = plan.definition(["fixed"], [0, 1], grid, ["--train_steps=60"], True)
    assert old == {
      "balancers": ["fixed"],
      "seeds": [0, 1],
      "grid": {"learning_rate": ["0.001", "0.01"]},
      "flags": ["--train_steps=60"],
      "with_single_task": True,
    }
    assert plan.difference(old, json.loads(json.dumps(old))) is None
    new = plan.definition(["fixed"], [0, 1, 2], grid, ["--train_steps=60"], True)
    assert plan.difference(old, new) == "--seeds 0,1 there, 0,1,2 now"

  def test_command_threads_and_baseline_flags(self):
    spec = plan.RunSpec("single_task=price__seed0", "fixed", 0, (), "price")
    passthrough = ["--task_weights=price:2,kind:1", "--train_steps=60"]
    assert runner.threads_per_run(2, 2) == 1 and runner.threads_per_run(2, 16) == 8
    assert runner.threads_per_run(4, 2) == 1
    cmd = runner.command(spec, "/s/runs/x", passthrough, 8, python="py")
    assert cmd == [
      "py",
      "-m",
      "mtl_research.cli.train",
      "--run_dir=/s/runs/x",
      "--balancer=fixed",
      "--seed=0",
      "--single_task=price",
      "--train_steps=60",
      "--intra_op_threads=8",
      "--inter_op_threads=1",
    ]
    multi = plan.RunSpec("fixed__seed0", "fixed", 0)
    cmd = runner.command(multi, "d", passthrough + ["--intra_op_threads=3"], 8, python="py")
    assert "--task_weights=price:2,kind:1" in cmd and "--intra_op_threads=3" in cmd
    assert "--intra_op_threads=8" not in cmd and cmd[-1] == "--inter_op_threads=1"


# Whole sweeps.


@pytest.fixture(name="reference", scope="module")
def fixture_reference(tmp_path_factory):
  """The tiny sweep, trained once without interruption."""
  sweep_dir = str(tmp_path_factory.mktemp("reference") / "sweep")
  proc = ablate(sweep_dir, *SWEEP)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return sweep_dir, proc


def test_sweep_trains_every_run(reference):
  sweep_dir, proc = reference
  assert finished(sweep_dir) == RUN_NAMES == sorted(os.listdir(runs_dir(sweep_dir)))
  assert read_json(sweep_dir, "sweep.json") == {
    "balancers": ["fixed", "uncertainty"],
    "seeds": [0, 1],
    "grid": {},
    "with_single_task": True,
    "flags": sorted(TINY),
  }
  for name in RUN_NAMES:
    run = read_json(runs_dir(sweep_dir), name, "run.json")
    metrics = read_json(runs_dir(sweep_dir), name, "metrics.json")
    assert run["name"] == name and run["grid"] == {}
    assert metrics["steps"] == 60 and metrics["single_task"] == run["single_task"]
    assert metrics["balancer"] == run["balancer"]
    expected_tasks = [run["single_task"]] if run["single_task"] else ["price", "kind"]
    assert sorted(metrics["test"]) == sorted(expected_tasks)
    assert not os.path.exists(os.path.join(runs_dir(sweep_dir), name, "FAILED"))
    with open(os.path.join(runs_dir(sweep_dir), name, "log.txt"), encoding="utf-8") as handle:
      log = handle.read()
    assert log.startswith("==== ") and log.count("==== ") == 1
    assert f"--run_dir={os.path.join(runs_dir(sweep_dir), name)}" in log.splitlines()[0]
    assert "--intra_op_threads=" in log.splitlines()[0] and "Results: " in log
  assert read_json(runs_dir(sweep_dir), "uncertainty__seed1", "run.json") == {
    "name": "uncertainty__seed1",
    "balancer": "uncertainty",
    "seed": 1,
    "grid": {},
    "single_task": None,
  }
  flags_txt = open(os.path.join(runs_dir(sweep_dir), "single_task=kind__seed1", "flags.txt"), encoding="utf-8").read()
  assert "--single_task=kind\n" in flags_txt and "--seed=1\n" in flags_txt and "--train_steps=60\n" in flags_txt
  for name in RUN_NAMES:  # the trainer took the directory that already held run.json and log.txt
    assert {"run.json", "log.txt", "flags.txt", "metrics.json", "ckpt"} <= set(
      os.listdir(os.path.join(runs_dir(sweep_dir), name))
    )
  assert "done 8 / running 0 / failed 0 / left 0" in proc.stderr
  assert "8 runs, 0 already finished (skipped), 8 to train, 2 at a time with 1 thread(s) each" in proc.stderr


def test_rerun_trains_nothing(reference):
  sweep_dir, _ = reference
  before, ckpts = mtimes(sweep_dir, RUN_NAMES), checkpoints(sweep_dir)
  proc = ablate(sweep_dir, *SWEEP)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "8 runs, 8 already finished (skipped), 0 to train" in proc.stderr
  assert "start " not in proc.stderr
  assert "8 of 8 runs finished (8 skipped as already finished, 0 trained now), 0 failed" in proc.stdout
  assert mtimes(sweep_dir, RUN_NAMES) == before and checkpoints(sweep_dir) == ckpts


def test_bad_input_stops_before_writing(reference, tmp_path):
  fresh = str(tmp_path / "never")
  cases = [
    (fresh, ("--balancers=fixed,nosuch",), "--balancers: 'nosuch' is not a balancer"),
    (fresh, ("--seeds=0,x",), "--seeds=0,x is not a comma-separated list of integers"),
    (fresh, ("--grid=nosuch=1,2",), "--grid=nosuch=1,2: --nosuch is not a training flag"),
    (fresh, ("--grid=learning_rate=0.001,-1",), "--grid value learning_rate=-1 is invalid"),
    (fresh, ("--seed=3",), "--seed is set by the sweep for each run; use --seeds"),
    (reference[0], (*SWEEP[:-1],), "holds a different sweep (training flags"),
    (reference[0], SWEEP, "is being run by another mtl-ablate right now"),
  ]
  # As if another invocation were running the reference sweep.
  with open(os.path.join(reference[0], ".lock"), "a", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    for path, args, message in cases:
      proc = ablate(path, *args)
      assert proc.returncode == 1, (args, proc.stderr[-2000:])
      assert message in proc.stderr.strip().splitlines()[-1], (args, proc.stderr[-2000:])
  assert not os.path.exists(fresh)


def wait_for(predicate, process, timeout=120.0, interval=0.02):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return True
    if process.poll() is not None:
      return False
    time.sleep(interval)
  return False


# Half the reference sweep (its seed 0), so that the reference's metrics serve here too.
KILLED_SWEEP = ("--balancers=fixed,uncertainty", "--seeds=0", "--with_single_task", "--parallel=2", *TINY)
KILLED_RUN_NAMES = sorted(name for name in RUN_NAMES if name.endswith("__seed0"))


@pytest.mark.slow
def test_killed_sweep_resumes_only_missing_runs(reference, tmp_path):
  sweep_dir = str(tmp_path / "sweep")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  # Its own process group, so that SIGKILL takes the runner and its training processes down
  # at once, like a machine that dies.
  process = subprocess.Popen(
    ablate_args(sweep_dir, *KILLED_SWEEP),
    cwd=REPO_ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,
  )

  def mid_way():
    if not os.path.isdir(runs_dir(sweep_dir)):
      return False
    names = os.listdir(runs_dir(sweep_dir))
    done = [n for n in names if os.path.exists(os.path.join(runs_dir(sweep_dir), n, "metrics.json"))]
    partial[:] = [
      n
      for n in names
      if os.path.isfile(os.path.join(runs_dir(sweep_dir), n, "ckpt", "checkpoint"))
      and not os.path.exists(os.path.join(runs_dir(sweep_dir), n, "metrics.json"))
    ]
    return bool(done) and bool(partial)

  partial = []

  try:
    caught = wait_for(mid_way, process)
  finally:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
  assert caught, "the sweep ended before a run was caught half-way"
  done_before = finished(sweep_dir)
  assert len(done_before) >= 1 and len(done_before) < len(KILLED_RUN_NAMES)
  assert partial and not set(partial) & set(done_before)
  before = mtimes(sweep_dir, done_before)

  proc = ablate(sweep_dir, *KILLED_SWEEP)
  assert proc.returncode == 0, proc.stderr[-3000:]
  total, done = len(KILLED_RUN_NAMES), len(done_before)
  assert f"{total} runs, {done} already finished (skipped), {total - done} to train" in proc.stderr
  for name in done_before:
    assert f"start {name}\n" not in proc.stderr
  assert mtimes(sweep_dir, done_before) == before
  for name in partial:  # a run killed after its first checkpoint continues from it
    with open(os.path.join(runs_dir(sweep_dir), name, "log.txt"), encoding="utf-8") as handle:
      log = handle.read()
    assert log.count("==== ") == 2 and "Resumed from " in log, log[-2000:]
  assert finished(sweep_dir) == KILLED_RUN_NAMES
  # The resumed runs continue from their checkpoint exactly: the input is a pure function of
  # the step, the model, optimizer slots and balancer state are checkpointed, and each run uses
  # the same thread counts. Measured bit-identical on CPU; the tolerance only absorbs printing.
  for name in KILLED_RUN_NAMES:
    assert os.path.isfile(os.path.join(runs_dir(sweep_dir), name, "run.json"))
    assert_same_metrics(
      read_json(runs_dir(sweep_dir), name, "metrics.json"), read_json(runs_dir(reference[0]), name, "metrics.json")
    )


@pytest.mark.slow
def test_sigterm_stops_children_and_the_sweep_resumes(tmp_path):
  sweep_dir = str(tmp_path / "sweep")
  args = ("--balancers=fixed,uncertainty", "--seeds=0", "--parallel=2", *TINY)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  process = subprocess.Popen(
    ablate_args(sweep_dir, *args),
    cwd=REPO_ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
  )
  try:
    flags_files = lambda: any(  # noqa: E731
      os.path.isfile(os.path.join(runs_dir(sweep_dir), name, "flags.txt"))
      for name in (os.listdir(runs_dir(sweep_dir)) if os.path.isdir(runs_dir(sweep_dir)) else [])
    )
    assert wait_for(flags_files, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
  assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert "SIGTERM: stopping" in stderr and "run the same command again to resume it" in stderr
  time.sleep(0.5)
  with pytest.raises(ProcessLookupError):  # the training processes are gone too
    os.killpg(process.pid, 0)
  for name in os.listdir(runs_dir(sweep_dir)):
    assert not os.path.exists(os.path.join(runs_dir(sweep_dir), name, "FAILED"))
  stopped = [
    name
    for name in os.listdir(runs_dir(sweep_dir))
    if not os.path.isfile(os.path.join(runs_dir(sweep_dir), name, "metrics.json"))
  ]
  assert stopped
  for name in stopped:
    with open(os.path.join(runs_dir(sweep_dir), name, "log.txt"), encoding="utf-8") as handle:
      assert "==== interrupted by SIGTERM" in handle.read()
  proc = ablate(sweep_dir, *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert finished(sweep_dir) == ["fixed__seed0", "uncertainty__seed0"]


@pytest.mark.slow
def test_sigkill_of_the_sweep_stops_its_trainer(tmp_path):
  """kill -9 of mtl-ablate: its trainer gets SIGTERM (a parent-death signal), saves a checkpoint and ends."""
  sweep_dir = str(tmp_path / "sweep")
  run = os.path.join(runs_dir(sweep_dir), "fixed__seed0")
  lock = os.path.join(run, ".trainer.lock")
  endless = [arg for arg in TINY if not arg.startswith("--train_steps=")] + ["--train_steps=1000000"]
  process = subprocess.Popen(
    ablate_args(sweep_dir, "--balancers=fixed", "--seeds=0", "--parallel=1", *endless),
    cwd=REPO_ROOT,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,  # so that the finally below can end whatever is left
  )
  try:
    assert wait_for(lambda: os.path.isfile(lock) and os.path.getsize(lock) > 0, process)  # it trains
    with open(lock, encoding="utf-8") as handle:
      trainer = int(handle.read().split()[0])
    process.kill()  # the runner only: the trainer is not signalled by anyone but the kernel
    process.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(trainer):
      time.sleep(0.05)
    assert not _alive(trainer), "the trainer outlived the sweep"
  finally:
    try:
      os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
  with open(os.path.join(run, "log.txt"), encoding="utf-8") as handle:
    log = handle.read()
  assert "SIGTERM received" in log and "ckpt-" in log, log[-2000:]
  assert not os.path.exists(lock)  # released: the next invocation resumes the run at once


def _alive(pid: int) -> bool:
  """Whether process `pid` runs (a zombie, whose new parent has not reaped it yet, has ended)."""
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
      return handle.read().rpartition(")")[2].split()[0] != "Z"
  except FileNotFoundError:
    return False


@pytest.mark.slow
def test_failed_run_is_recorded_and_retried(tmp_path):
  sweep_dir = str(tmp_path / "sweep")
  # A value every flag parser accepts but training refuses: the run fails in its own process.
  args = ("--balancers=fixed", "--seeds=0", "--grid=selection=mean_loss,nosuch:auc", "--parallel=2", *TINY)
  proc = ablate(sweep_dir, *args)
  assert proc.returncode == 1, proc.stderr[-3000:]
  bad, good = "fixed__selection=nosuch_auc__seed0", "fixed__selection=mean_loss__seed0"
  assert finished(sweep_dir) == [good]
  marker = open(os.path.join(runs_dir(sweep_dir), bad, "FAILED"), encoding="utf-8").read().splitlines()
  assert marker[0] == "exit code 1" and 2 <= len(marker) <= 21
  assert marker[-1].startswith("error: --selection=nosuch:auc is not mean_loss")
  assert read_json(runs_dir(sweep_dir), bad, "run.json")["grid"] == {"selection": "nosuch:auc"}
  # It failed before writing flags.txt: its directory holds the sweep's files only.
  assert sorted(os.listdir(os.path.join(runs_dir(sweep_dir), bad))) == ["FAILED", "log.txt", "run.json"]
  assert f"FAILED {bad} (exit code 1)" in proc.stderr and "failed 1" in proc.stderr
  assert "1 of 2 runs finished" in proc.stdout and "1 failed" in proc.stdout

  # The next invocation retries the failed run only, appending to its log.
  before = mtimes(sweep_dir, [good])
  proc = ablate(sweep_dir, *args)
  assert proc.returncode == 1
  assert "2 runs, 1 already finished (skipped), 1 to train" in proc.stderr
  assert mtimes(sweep_dir, [good]) == before
  with open(os.path.join(runs_dir(sweep_dir), bad, "log.txt"), encoding="utf-8") as handle:
    log = handle.read()
  assert log.count("==== ") == 2 and log.count("error: --selection=nosuch:auc is not mean_loss") == 2
  assert os.path.isfile(os.path.join(runs_dir(sweep_dir), bad, "FAILED"))


# The runner alone, with a stand-in for the trainer (no TensorFlow, well under a second).

FAKE_TRAINER = """\
import os, sys
run_dir = next(arg for arg in sys.argv if arg.startswith("--run_dir=")).partition("=")[2]
print("found: " + " ".join(sorted(os.listdir(run_dir))), flush=True)
attempts = os.path.join(os.path.dirname(os.path.dirname(run_dir)), "attempts")
with open(attempts, "a") as handle:
  handle.write("x")
if os.path.getsize(attempts) == 1:
  sys.exit("error: the first attempt fails before writing flags.txt")
for name, text in (("flags.txt", "--seed=0\\n"), ("metrics.json", "{}")):
  with open(os.path.join(run_dir, name), "w") as handle:
    handle.write(text)
print("trained", flush=True)
"""


def test_run_files_are_in_the_run_dir_from_the_start_and_failures_are_retried(tmp_path):
  fake = tmp_path / "fake_python"
  fake.write_text(f"#!{sys.executable}\n{FAKE_TRAINER}", encoding="utf-8")
  fake.chmod(0o755)
  sweep_dir = str(tmp_path / "sweep")
  spec = plan.RunSpec("fixed__seed0", "fixed", 0)
  path = os.path.join(runs_dir(sweep_dir), spec.name)

  def sweep():
    out = io.StringIO()
    outcome = runner.Runner(sweep_dir, [spec], [], cpus=1, python=str(fake), out=out, poll_seconds=0.01).run()
    return outcome, out.getvalue()

  outcome, out = sweep()
  assert outcome.failed == [spec.name] and not outcome.complete
  assert f"FAILED {spec.name} (exit code 1): error: the first attempt fails before writing flags.txt" in out
  assert sorted(os.listdir(sweep_dir)) == ["attempts", "runs"]  # nothing kept aside
  assert sorted(os.listdir(path)) == ["FAILED", "log.txt", "run.json"]
  assert read_json(path, "run.json") == spec.to_json()
  with open(os.path.join(path, "log.txt"), encoding="utf-8") as handle:
    first = handle.read()
  # The trainer started in a directory already holding the sweep's run.json and log.txt.
  assert first.startswith("==== ") and "found: log.txt run.json\n" in first

  outcome, out = sweep()  # the retry removes FAILED before starting and appends to the log
  assert outcome.finished == [spec.name] and outcome.complete and not outcome.failed
  assert sorted(os.listdir(path)) == ["flags.txt", "log.txt", "metrics.json", "run.json"]
  with open(os.path.join(path, "log.txt"), encoding="utf-8") as handle:
    log = handle.read()
  assert log.startswith(first) and log.count("==== ") == 2
  assert log[len(first) :].startswith("==== ") and "found: log.txt run.json\n" in log[len(first) :]
  assert "error: the first attempt fails" in log and log.endswith("trained\n")

  outcome, out = sweep()  # finished: skipped without starting anything
  assert outcome.skipped == 1 and "start " not in out
  assert os.path.getsize(os.path.join(tmp_path, "sweep", "attempts")) == 2


def test_balancer_owned_grid_axis_applies_to_its_balancer_only():
  grid = {"gradnorm_alpha": ("0.5", "1.5"), "learning_rate": ("0.001",)}
  specs = plan.expand(["fixed", "gradnorm"], [0], grid, owners={"gradnorm_alpha": frozenset({"gradnorm"})})
  assert [s.name for s in specs] == [
    "fixed__learning_rate=0.001__seed0",
    "gradnorm__gradnorm_alpha=0.5__learning_rate=0.001__seed0",
    "gradnorm__gradnorm_alpha=1.5__learning_rate=0.001__seed0",
  ]


def test_architecture_owned_grid_axes_apply_to_the_runs_of_their_architectures():
  """One sweep compares architectures each at its own widths; the owners come from the registry."""
  owners = flags_lib.architecture_owners()
  assert owners["expert_units"] == {"mmoe", "ple", "dselect_k"} and owners["hidden_units"] == {"shared_bottom"}
  assert "dropout" not in owners  # read by every architecture: an ordinary axis
  grid = {"model": ("shared_bottom", "mmoe"), "hidden_units": ("128,16",), "expert_units": ("16",), "l2": ("0",)}
  specs = plan.expand(["fixed"], [0], grid, model_owners=owners, model="shared_bottom")
  assert [s.grid for s in specs] == [
    (("hidden_units", "128,16"), ("l2", "0"), ("model", "shared_bottom")),
    (("expert_units", "16"), ("l2", "0"), ("model", "mmoe")),
  ]
  # Without a model axis the passed (or default) --model decides.
  specs = plan.expand(["fixed"], [0], {"expert_units": ("8", "16")}, model_owners=owners, model="mmoe")
  assert [dict(s.grid) for s in specs] == [{"expert_units": "8"}, {"expert_units": "16"}]
  with pytest.raises(UserError, match=r"--expert_units is read only by dselect_k, mmoe, ple, and no run"):
    plan.check_model_axes({"expert_units": ("16",)}, owners, "shared_bottom")
  plan.check_model_axes(grid, owners, "shared_bottom")  # mmoe is in the model axis: accepted


# Packs and shards.


def test_packs_group_runs_that_share_the_program_and_keep_each_configurations_seeds_together():
  specs = plan.expand(
    ["fixed", "gradnorm"], [0, 1, 2], {"batch_size": ("16", "32"), "learning_rate": ("0.1", "0.01")}, ["price"]
  )
  packs = plan.packs(specs, 4)
  assert sorted(spec.name for pack in packs for spec in pack) == sorted(spec.name for spec in specs)
  assert all(1 <= len(pack) <= 4 for pack in packs)
  for pack in packs:  # a pack never mixes loop shapes (the baselines run at the default batch size)
    assert len({dict(spec.grid).get("batch_size") for spec in pack}) == 1
  # Groups: batch size 16 (12 runs), 32 (12 runs), the baselines (3 runs): 3 + 3 + 1 packs.
  assert [len(pack) for pack in packs] == [4, 4, 4, 4, 4, 4, 3]
  first = packs[0]
  assert [spec.seed for spec in first[:3]] == [0, 1, 2] and len(
    {spec.name.rpartition("__")[0] for spec in first[:3]}
  ) == 1
  assert [len(pack) for pack in plan.packs(specs, 1)] == [1] * len(specs)
  # Dealt (all packs train at once): the same groups, each pack a mix of every configuration.
  dealt = plan.packs(specs, 4, dealt=True)
  assert [len(pack) for pack in dealt] == [4, 4, 4, 4, 4, 4, 3]
  assert [{spec.name for spec in pack} for pack in dealt[6:]] == [{spec.name for spec in packs[6]}]
  for pack in dealt[:3]:
    assert {spec.balancer for spec in pack} == {"fixed", "gradnorm"}
    assert len({dict(spec.grid).get("batch_size") for spec in pack}) == 1


def test_shards_partition_the_plan_deterministically():
  specs = plan.expand(["fixed", "uncertainty", "gradnorm"], [0, 1, 2, 3], {}, ["price", "kind"])
  shards = [plan.shard(specs, i, 3) for i in range(3)]
  names = [spec.name for shard in shards for spec in shard]
  assert sorted(names) == sorted(spec.name for spec in specs) and len(set(names)) == len(specs)
  assert [len(shard) for shard in shards] == [7, 7, 6]
  assert plan.shard(specs, 1, 3) == shards[1]
  assert plan.parse_shard("2/3") == (2, 3)
  for text in ("3/3", "-1/3", "1", "a/b", "0/0"):
    with pytest.raises(UserError, match=rf"--shard={text} is not of the form i/n"):
      plan.parse_shard(text)


def test_a_packed_sweep_equals_the_sweep_one_process_per_run(reference, tmp_path):
  """The reference sweep (packed by default: 8 runs in 2 packs) against its runs trained one process each.

  A third of them (--shard=0/3, which holds multi-task runs and baselines):
  each one-process run costs a process start.
  """
  _, proc = reference
  assert "in 2 pack(s) of up to 4 runs" in proc.stderr
  sweep_dir = str(tmp_path / "alone")
  alone = ablate(sweep_dir, *SWEEP, "--pack_size=1", "--shard=0/3")
  assert alone.returncode == 0, alone.stderr[-3000:]
  assert "pack(s)" not in alone.stderr
  names = finished(sweep_dir)
  assert len(names) == 3 and any("single_task" in name for name in names) and any("fixed" in name for name in names)
  for name in names:
    with open(os.path.join(runs_dir(sweep_dir), name, "metrics.json"), "rb") as handle:
      want = handle.read()
    with open(os.path.join(runs_dir(reference[0]), name, "metrics.json"), "rb") as handle:
      assert handle.read() == want, name


def test_a_diverging_run_of_a_pack_fails_alone(tmp_path):
  sweep_dir = str(tmp_path / "sweep")
  args = ("--balancers=fixed", "--seeds=0,1", "--grid=learning_rate=0.01,1e30", "--parallel=1", *TINY)
  proc = ablate(sweep_dir, *args)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "a pack of 4" in proc.stderr
  bad = [name for name in os.listdir(runs_dir(sweep_dir)) if "1e" in name]
  assert finished(sweep_dir) == sorted(set(os.listdir(runs_dir(sweep_dir))) - set(bad)) and len(bad) == 2
  for name in bad:
    marker = open(os.path.join(runs_dir(sweep_dir), name, "FAILED"), encoding="utf-8").read()
    assert marker.startswith("exit code 1\n") and "non-finite" in marker
    assert f"FAILED {name} (exit code 1)" in proc.stderr


@pytest.mark.slow
def test_two_shards_train_one_sweep_directory_side_by_side(tmp_path):
  sweep_dir = str(tmp_path / "sweep")
  args = ("--balancers=fixed,uncertainty", "--seeds=0,1", "--parallel=1", *TINY)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  shards = [
    subprocess.Popen(
      ablate_args(sweep_dir, *args, f"--shard={i}/2"),
      cwd=REPO_ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [shard.communicate(timeout=300) for shard in shards]
  for shard, (_, stderr) in zip(shards, outputs):
    assert shard.returncode == 0, stderr[-3000:]
    assert "2 runs, 0 already finished (skipped), 2 to train" in stderr
  names = ["fixed__seed0", "fixed__seed1", "uncertainty__seed0", "uncertainty__seed1"]
  assert finished(sweep_dir) == names
  for name in names:  # each run trained once, by one shard
    with open(os.path.join(runs_dir(sweep_dir), name, "log.txt"), encoding="utf-8") as handle:
      assert handle.read().count("==== ") == 1
  assert sorted(n for n in os.listdir(sweep_dir) if n.startswith(".lock")) == [".lock.shard0of2", ".lock.shard1of2"]
  # The same shard twice is refused; the whole sweep again finds everything finished.
  with open(os.path.join(sweep_dir, ".lock.shard1of2"), "a", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    proc = ablate(sweep_dir, *args, "--shard=1/2")
  assert proc.returncode == 1 and "(--shard=1/2) is being run by another mtl-ablate" in proc.stderr
  proc = ablate(sweep_dir, *args)
  assert proc.returncode == 0 and "4 runs, 4 already finished (skipped)" in proc.stderr

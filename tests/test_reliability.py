"""Reliability: deterministic reruns, exact resume after SIGKILL and SIGTERM,
checkpoint fallback, and the non-finite guard."""

from __future__ import annotations

import glob
import json
import os
import signal

from conftest import (
  LONG_RUN,
  SMALL_RUN_FLAGS,
  build_config,
  checkpoint_numbers,
  make_bundle,
  read_scalars,
  run_train,
  start_train,
  wait_for_checkpoint,
)
import numpy as np
import pytest
import tensorflow as tf

from mtl_research import provenance, tasks
from mtl_research.config import NanPolicy
from mtl_research.data.pipeline import TrainOrder
from mtl_research.train import components as components_lib
from mtl_research.train import guard, loop
from mtl_research.train.run_dir import RunDir

SPECS = (tasks.TaskSpec("price", tasks.REGRESSION), tasks.TaskSpec("kind", tasks.CLASSIFICATION, 3))


def read_bytes(path: str) -> bytes:
  with open(path, "rb") as handle:
    return handle.read()


@pytest.fixture(name="uninterrupted", scope="module")
def fixture_uninterrupted(tmp_path_factory):
  """metrics.json bytes of the long gradnorm run, never interrupted, by --jit_compile."""
  runs = {}

  def get(jit: str) -> bytes:
    if jit not in runs:
      path = str(tmp_path_factory.mktemp(f"uninterrupted-{jit}") / "run")
      proc = run_train(f"--run_dir={path}", "--balancer=gradnorm", f"--jit_compile={jit}", *LONG_RUN)
      assert proc.returncode == 0, proc.stderr[-3000:]
      runs[jit] = read_bytes(os.path.join(path, "metrics.json"))
    return runs[jit]

  return get


class TestDeterminism:
  # Every balancer in the default mode (XLA on one device), one in the graph loop.
  @pytest.mark.parametrize(
    "balancer, jit", [("fixed", "auto"), ("uncertainty", "auto"), ("gradnorm", "auto"), ("gradnorm", "off")]
  )
  def test_two_runs_are_bit_identical(self, tmp_path, balancer, jit):
    flags = (
      *SMALL_RUN_FLAGS,
      "--train_steps=120",
      "--deterministic",
      "--dropout=0.3",
      f"--balancer={balancer}",
      f"--jit_compile={jit}",
    )
    results = []
    for name in ("a", "b"):
      proc = run_train(f"--run_dir={tmp_path / name}", *flags)
      assert proc.returncode == 0, proc.stderr[-3000:]
      results.append(read_bytes(str(tmp_path / name / "metrics.json")))
    assert results[0] == results[1]
    metrics = json.loads(results[0])
    assert metrics["steps"] == 120 and set(metrics["weights"]) == {"price", "kind"}

  def test_seeds_differ(self, tmp_path):
    """The comparison above can fail: another seed changes metrics.json."""
    flags = (*SMALL_RUN_FLAGS, "--deterministic")
    runs = [run_train(f"--run_dir={tmp_path / str(seed)}", *flags, f"--seed={seed}") for seed in (0, 1)]
    assert all(proc.returncode == 0 for proc in runs)
    assert read_bytes(str(tmp_path / "0" / "metrics.json")) != read_bytes(str(tmp_path / "1" / "metrics.json"))


@pytest.mark.slow
class TestInterruption:
  @pytest.mark.parametrize("jit", ["auto", "off"])
  def test_sigkill_then_rerun_is_identical(self, tmp_path, uninterrupted, jit):
    path = str(tmp_path / "run")
    flags = (f"--run_dir={path}", "--balancer=gradnorm", f"--jit_compile={jit}", *LONG_RUN)
    proc = start_train(*flags)
    step = wait_for_checkpoint(proc, path)
    proc.kill()
    proc.communicate(timeout=60)
    assert step < 3000 and not os.path.exists(os.path.join(path, "metrics.json"))
    rerun = run_train(*flags)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resumed from" in rerun.stdout
    killed, resumed = provenance.read(os.path.join(path, provenance.PROVENANCE_FILE))
    assert (killed["outcome"], killed["ended"]) == (provenance.RUNNING, None)  # never completed: killed
    assert (resumed["outcome"], resumed["steps"]["to"]) == (provenance.FINISHED, 3000)
    assert read_bytes(os.path.join(path, "metrics.json")) == uninterrupted(jit)

  def test_sigterm_saves_exits_zero_and_resumes_identically(self, tmp_path, uninterrupted):
    path = str(tmp_path / "run")
    flags = (f"--run_dir={path}", "--balancer=gradnorm", *LONG_RUN)
    proc = start_train(*flags)
    wait_for_checkpoint(proc, path)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    message = [line for line in stderr.splitlines() if line.startswith("SIGTERM: stopped at step")]
    assert message, stderr[-2000:]
    stopped = int(message[0].split("stopped at step ")[1].split()[0])
    assert 0 < stopped < 3000 and stopped in checkpoint_numbers(path)
    assert not os.path.exists(os.path.join(path, "metrics.json"))
    rerun = run_train(*flags)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"at step {stopped}." in rerun.stdout
    stopped_segment, resumed = provenance.read(os.path.join(path, provenance.PROVENANCE_FILE))
    assert (stopped_segment["outcome"], stopped_segment["steps"]["to"]) == (provenance.INTERRUPTED, stopped)
    assert (resumed["outcome"], resumed["steps"]) == (provenance.FINISHED, {"from": stopped, "to": 3000})
    assert read_bytes(os.path.join(path, "metrics.json")) == uninterrupted("auto")


class TestCheckpointFallback:
  def test_truncated_checkpoint_falls_back_to_the_previous_one(self, tmp_path):
    path = str(tmp_path / "run")
    flags = (f"--run_dir={path}", *SMALL_RUN_FLAGS, "--deterministic")
    first = run_train(*flags)
    assert first.returncode == 0, first.stderr[-3000:]
    expected = read_bytes(os.path.join(path, "metrics.json"))
    os.unlink(os.path.join(path, "metrics.json"))
    newest = checkpoint_numbers(path)[-1]
    # The shard with the variables' values (the other holds the object graph alone).
    data = max(glob.glob(os.path.join(path, "ckpt", f"ckpt-{newest}.data-*")), key=os.path.getsize)
    with open(data, "r+b") as handle:
      handle.truncate(os.path.getsize(data) // 2)
    rerun = run_train(*flags)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"warning: checkpoint {os.path.join(path, 'ckpt', f'ckpt-{newest}')} cannot be read" in rerun.stdout
    previous = checkpoint_numbers(path)[-2]
    assert f"at step {previous}." in rerun.stdout
    assert read_bytes(os.path.join(path, "metrics.json")) == expected


# --- the non-finite guard, in process with a poisoned row ---------------------------------


def poisoned_bundle(row: int):
  bundle = make_bundle(SPECS, num_train=256)
  bundle.train.labels["price"][row] = np.nan
  return bundle


def first_step_with_row(row: int, num_rows: int, batch_size: int, seed: int) -> int:
  """The 1-based step whose batch holds `row` first."""
  for index, batch in enumerate(TrainOrder(num_rows, batch_size, seed).batches(0, 10 * num_rows)):
    if row in batch:
      return index + 1
  raise AssertionError("row never drawn")


def steps_with_row(row: int, num_rows: int, batch_size: int, seed: int, steps: int) -> int:
  return sum(int(row in batch) for batch in TrainOrder(num_rows, batch_size, seed).batches(0, steps))


def guarded_run(tmp_path, policy: str, steps: int = 60, jit: str = "auto"):
  config = build_config(
    str(tmp_path / "run"),
    loop={
      "train_steps": steps,
      "steps_per_loop": 20,
      "checkpoint_every": 20,
      "summary_every": 20,
      "eval_every": 0,
      "nan_policy": policy,
      "jit_compile": jit,
    },
  )
  bundle = poisoned_bundle(row=5)
  parts = components_lib.build(config, bundle)
  messages = []
  run = RunDir(config.run_dir)
  os.makedirs(run.path)
  trainer = loop.Trainer(config, bundle, parts, run, log=messages.append)
  return trainer, parts, run, messages


class TestNonFiniteGuard:
  @pytest.mark.parametrize("jit", ["auto", "off"])
  def test_stop_names_the_step_and_task_and_keeps_good_checkpoints(self, tmp_path, jit):
    trainer, _, run, messages = guarded_run(tmp_path, NanPolicy.STOP, jit=jit)
    bad_step = first_step_with_row(5, 256, 32, 0)
    assert bad_step <= 60
    with pytest.raises(guard.NonFiniteError) as raised:
      trainer.run()
    message = str(raised.value)
    assert f"non-finite loss at step {bad_step} in task(s) price (nan)" in message
    assert "kind" not in message.split("; ")[0]
    assert "\n" not in message
    assert not os.path.exists(run.metrics_file)
    (segment,) = provenance.read(os.path.join(run.path, provenance.PROVENANCE_FILE))
    loop_mode = "xla" if jit == "auto" else "graph"
    assert (segment["outcome"], segment["environment"]["loop"]) == (provenance.FAILED, loop_mode)
    # No checkpoint after the failure, and the newest one still reads and is finite.
    last_good = max(n for n in checkpoint_numbers(run.path))
    assert last_good < bad_step
    assert f"ckpt-{last_good}" in message
    reader = tf.train.load_checkpoint(os.path.join(run.checkpoint_dir, f"ckpt-{last_good}"))
    for name, _ in tf.train.list_variables(os.path.join(run.checkpoint_dir, f"ckpt-{last_good}")):
      value = reader.get_tensor(name)
      if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        assert np.all(np.isfinite(value)), name
    assert any("replaying" in line for line in messages)

  @pytest.mark.parametrize("jit", ["auto", "off"])
  def test_skip_batch_skips_exactly_the_poisoned_batches(self, tmp_path, jit):
    steps = 60
    trainer, parts, run, messages = guarded_run(tmp_path, NanPolicy.SKIP_BATCH, steps, jit)
    metrics = trainer.run()
    expected = steps_with_row(5, 256, 32, 0, steps)
    assert expected >= 2  # the row comes back every epoch of 8 steps
    assert int(parts.skipped_batches.numpy()) == expected
    assert metrics["steps"] == steps
    assert all(np.isfinite(v).all() for v in parts.model.get_weights())
    assert all(np.isfinite(value) for task in metrics["test"].values() for value in task.values())
    scalars = read_scalars(run.train_logdir)
    assert scalars["nan_guard/skipped_batches"][-1] == (steps, float(expected))
    assert any(line.startswith("warning: skipped") for line in messages)

  @pytest.mark.parametrize("jit", ["auto", "off"])
  def test_a_skipped_step_changes_no_state(self, tmp_path, jit):
    config = build_config(loop={"nan_policy": NanPolicy.SKIP_BATCH, "jit_compile": jit})
    bundle = poisoned_bundle(row=5)
    parts = components_lib.build(config, bundle)
    before = [v.numpy().copy() for v in parts.train_loop.state_variables + list(parts.optimizer.variables)]
    logs = parts.train_loop.run(1, careful=True, rows=np.arange(32)[None])
    assert int(logs["guard"]["count"]) == 1 and int(logs["guard"]["first_bad_step"]) == 0
    after = [v.numpy() for v in parts.train_loop.state_variables + list(parts.optimizer.variables)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert int(parts.global_step.numpy()) == 1  # the step still advances: the next batch is the next one
    # No step applied: the progress line's means are NaN, not zero.
    assert np.isnan(logs["mean_losses"]).all() and np.isnan(logs["mean_objective"])

  def test_loop_means_leave_skipped_batches_out(self):
    """A skipped batch changes no state, so the means of [good, bad, good] are those of [good, good]."""
    config = build_config(loop={"nan_policy": NanPolicy.SKIP_BATCH})
    bundle = poisoned_bundle(row=5)
    good_a, bad, good_b = np.arange(32, 64), np.arange(0, 32), np.arange(64, 96)
    skipped = components_lib.build(config, bundle).train_loop.run(3, careful=True, rows=np.stack([good_a, bad, good_b]))
    assert int(skipped["guard"]["count"]) == 1
    clean = components_lib.build(config, bundle).train_loop.run(2, careful=True, rows=np.stack([good_a, good_b]))
    np.testing.assert_allclose(skipped["mean_losses"], clean["mean_losses"], rtol=1e-6)
    np.testing.assert_allclose(skipped["mean_objective"], clean["mean_objective"], rtol=1e-6)
    assert np.isfinite(skipped["mean_losses"]).all()

  def test_fast_loop_reports_unhealthy_after_a_bad_step(self):
    config = build_config()
    bundle = poisoned_bundle(row=5)
    parts = components_lib.build(config, bundle)
    batches = np.stack([np.arange(32, 64), np.arange(0, 32), np.arange(32, 64)])  # the bad row in the middle step
    logs = parts.train_loop.run(3, rows=batches)
    assert not bool(logs["healthy"])
    clean = components_lib.build(config, make_bundle(SPECS, num_train=256))
    assert bool(clean.train_loop.run(3, rows=batches)["healthy"])


def test_a_non_finite_update_from_finite_inputs_stops_even_under_skip_batch(tmp_path):
  """GradNorm with L(0) = 0: every loss and gradient is finite, but the ratio 0/0 makes w NaN."""
  config = build_config(
    str(tmp_path / "run"),
    balancer="gradnorm",
    loop={
      "train_steps": 40,
      "steps_per_loop": 20,
      "checkpoint_every": 20,
      "eval_every": 0,
      "nan_policy": NanPolicy.SKIP_BATCH,
    },
  )
  bundle = make_bundle(SPECS, num_train=256)
  parts = components_lib.build(config, bundle)
  parts.balancer.initial_losses.assign([0.0, 0.0])
  parts.global_step.assign(5)  # past the L(0) window, so the zeros stay
  run = RunDir(config.run_dir)
  os.makedirs(run.path)
  messages = []
  with pytest.raises(guard.NonFiniteError) as raised:
    loop.Trainer(config, bundle, parts, run, log=messages.append).run()
  assert "non-finite value at step 6 with every task loss finite" in str(raised.value)
  assert checkpoint_numbers(run.path) == [5]  # the state the run started from; nothing after the failure
  assert not any(line.startswith("warning: skipped") for line in messages)

"""tf.distribute: mirrored replicas and two loopback workers agree with one device; checkpoints
cross strategies.

Mirrored runs train in the test process, whose CPU conftest.py split into
TEST_CPU_REPLICAS logical devices before TensorFlow started. Loopback workers
are processes of their own: collectives are configured at start-up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from conftest import (
  REPO_ROOT,
  RESUMED_RUN,
  SMALL_RUN_FLAGS,
  TEST_CPU_REPLICAS,
  TRAIN_SCRIPT,
  assert_metrics_agree,
  assert_refused,
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
from mtl_research.data.pipeline import TrainOrder
from mtl_research.errors import UserError
from mtl_research.models.base import Dropout
from mtl_research.train import components, distribution, guard, loop
from mtl_research.train.run_dir import RunDir

MIRRORED = ("--strategy=mirrored", "--cpu_replicas=2")
RUN = (*SMALL_RUN_FLAGS, "--deterministic", "--train_steps=100", "--eval_every=50", "--checkpoint_every=50")
TOLERANCE = 1e-3  # relative; the bound (measured: about 1e-7)
# Long enough to be stopped mid-run, short enough that rounding differences stay
# far below TOLERANCE (they grow with training: ~2e-3 on a kernel after 3000
# steps). No dropout: replicas draw masks for their half-batches, which cannot
# equal one device's masks for the whole batch.
CROSS_RUN = RESUMED_RUN
WORKER_TIMEOUT = 240  # seconds; a worker whose peer never comes waits forever otherwise


@pytest.fixture(name="single", scope="module")
def fixture_single(tmp_path_factory):
  """Single-device runs by balancer, trained once per module."""
  runs = {}

  def get(balancer: str) -> str:
    if balancer not in runs:
      path = str(tmp_path_factory.mktemp("single") / "run")
      proc = run_train(f"--run_dir={path}", *balancer_flags(balancer), *RUN)
      assert proc.returncode == 0, proc.stderr[-3000:]
      runs[balancer] = path
    return runs[balancer]

  return get


def balancer_flags(balancer: str) -> list[str]:
  """ "name" or "name@scope" (a --gradient_scope) as command-line flags."""
  name, _, scope = balancer.partition("@")
  return [f"--balancer={name}", *([f"--gradient_scope={scope}"] if scope else [])]


# mgda and nash_mtl: the replicas' per-task gradients are all-reduced before the balancer solves on them;
# mgda@representation: the replicas' Gramians of ∇_Z L_t are summed.
# graddrop: each replica draws the masks of its own rows from the global batch's draw; pcgrad: every replica
# draws the same task orders. dwa: the epoch means are of the global losses (6 epochs here, weights from
# the third); famo: the losses after the update are recomputed by each replica on its rows and all-reduced.
@pytest.mark.parametrize(
  "balancer",
  ["fixed", "uncertainty", "gradnorm", "mgda", "mgda@representation", "nash_mtl", "graddrop", "pcgrad", "dwa", "famo"],
)
def test_mirrored_replicas_match_one_device(tmp_path, single, balancer):
  path = str(tmp_path / "run")
  proc = run_train(f"--run_dir={path}", *balancer_flags(balancer), *RUN, *MIRRORED)
  assert proc.returncode == 0, proc.stderr[-3000:]
  reference = single(balancer)
  assert_metrics_agree(metrics_of(path), metrics_of(reference), 128, TOLERANCE)
  assert_weights_agree(path, reference, TOLERANCE)


def test_mmoe_mirrored_replicas_match_one_device(tmp_path):
  """An architecture other than shared-bottom: MMoE's experts, gates (and their utilization summaries,
  averaged over the replicas' rows) under --strategy=mirrored against one device, with GradNorm on the
  experts' last layers."""
  run = tuple(flag for flag in RUN if not flag.startswith("--hidden_units"))  # shared-bottom's flag
  flags = ("--model=mmoe", "--num_experts=3", "--expert_units=8", "--tower_units=4", "--balancer=gradnorm", *run)
  paths = {name: str(tmp_path / name) for name in ("mirrored", "one")}
  for name, extra in (("mirrored", MIRRORED), ("one", ())):
    proc = run_train(f"--run_dir={paths[name]}", *flags, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
  assert_metrics_agree(metrics_of(paths["mirrored"]), metrics_of(paths["one"]), 128, TOLERANCE)
  assert_weights_agree(paths["mirrored"], paths["one"], TOLERANCE)


def free_ports(count: int) -> list[int]:
  sockets = [socket.socket() for _ in range(count)]
  for sock in sockets:
    sock.bind(("127.0.0.1", 0))
  ports = [sock.getsockname()[1] for sock in sockets]
  for sock in sockets:
    sock.close()
  return ports


def run_workers(args: list[str], count: int = 2) -> list[tuple[int, str]]:
  """Runs `count` workers of `--strategy=multi_worker` on loopback; [(exit status, output)].

  Every worker is killed (SIGKILL: a worker waiting for its peers ignores
  SIGTERM) if any of them is not done within WORKER_TIMEOUT.
  """
  cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
  procs = []
  for index in range(count):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=tf_config)
    procs.append(
      subprocess.Popen(
        [sys.executable, TRAIN_SCRIPT, *args, "--strategy=multi_worker"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
    )
  results = []
  try:
    for proc in procs:
      output, _ = proc.communicate(timeout=WORKER_TIMEOUT)
      results.append((proc.returncode, output))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
  return results


@pytest.mark.slow
def test_two_loopback_workers_match_one_device(tmp_path, single):
  path = str(tmp_path / "run")
  results = run_workers([f"--run_dir={path}", "--balancer=gradnorm", *RUN])
  for code, output in results:
    assert code == 0, output[-3000:]
  assert "worker-1 finished; the chief wrote" in results[1][1]
  assert f"Results: {path}/metrics.json" in results[0][1]
  reference = single("gradnorm")
  assert_metrics_agree(metrics_of(path), metrics_of(reference), 128, TOLERANCE)
  assert_weights_agree(path, reference, TOLERANCE)
  # The other worker wrote only to a scratch directory, which it removed.
  scratch = results[1][1].split("Training 100 steps from step 0 into ")[1].split()[0]
  assert not os.path.exists(scratch)


@pytest.fixture(name="uninterrupted_long", scope="module")
def fixture_uninterrupted_long(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("long") / "run")
  proc = run_train(f"--run_dir={path}", "--balancer=gradnorm", *CROSS_RUN)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return path


@pytest.mark.parametrize("first, then", [(MIRRORED, ()), ((), MIRRORED)], ids=["mirrored-to-one", "one-to-mirrored"])
def test_a_checkpoint_resumes_under_another_strategy(tmp_path, uninterrupted_long, first, then):
  path = str(tmp_path / "run")
  base = (f"--run_dir={path}", "--balancer=gradnorm", *CROSS_RUN)
  proc = run_train_stopped(*base, *first)
  assert proc.returncode == 0 and "SIGTERM: stopped at step" in proc.stderr, proc.stderr[-3000:]
  assert 0 < max(checkpoint_numbers(path)) < 1000
  assert not os.path.exists(os.path.join(path, "metrics.json"))
  resumed = run_train(*base, *then)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resumed from" in resumed.stdout
  assert_metrics_agree(metrics_of(path), metrics_of(uninterrupted_long), 300, TOLERANCE)
  assert_weights_agree(path, uninterrupted_long, TOLERANCE)


@pytest.mark.parametrize(
  "flags, culprit",
  [
    (("--strategy=mirrored", "--cpu_replicas=2", "--batch_size=33"), "--batch_size=33"),
    (("--cpu_replicas=2",), "--cpu_replicas=2 needs --strategy=mirrored"),
    (("--strategy=mirrored", "--cpu_replicas=2", "--nan_policy=skip_batch"), "--nan_policy=skip_batch"),
    (("--strategy=mirrored", "--cpu_replicas=2", "--executor=single_threaded"), "--executor=single_threaded"),
    (("--strategy=multi_worker",), "TF_CONFIG"),
  ],
  ids=["batch-not-divisible", "replicas-without-strategy", "skip-batch", "single-threaded", "no-tf-config"],
)
def test_impossible_distribution_settings_are_refused(tmp_path, flags, culprit):
  path = str(tmp_path / "run")
  proc = run_train(f"--run_dir={path}", *SMALL_RUN_FLAGS, *flags)
  assert_refused(proc, path, culprit)


def test_the_trainer_takes_cpus_already_split_as_asked_and_refuses_another_count():
  assert distribution.replicas(distribution.create("mirrored", TEST_CPU_REPLICAS)) == TEST_CPU_REPLICAS
  with pytest.raises(UserError, match=r"--cpu_replicas=3 must be configured before TensorFlow starts.* 2 logical"):
    distribution.create("mirrored", 3)


def test_replicas_draw_different_dropout_masks():
  strategy = distribution.create("mirrored", 2)
  with strategy.scope():
    layer = Dropout(0.5)
    layer.build((4, 64))
  masks = strategy.experimental_local_results(strategy.run(tf.function(lambda: layer(tf.ones([4, 64]), training=True))))
  assert not np.array_equal(masks[0].numpy(), masks[1].numpy())
  assert all(0.2 < np.mean(mask.numpy() == 0) < 0.8 for mask in masks)  # both replicas dropped units


def test_the_non_finite_guard_names_the_step_under_mirrored(tmp_path):
  strategy = distribution.create("mirrored", 2)
  specs = (tasks.TaskSpec("price", tasks.REGRESSION), tasks.TaskSpec("kind", tasks.CLASSIFICATION, 3))
  bundle = make_bundle(specs, num_train=256)
  bundle.train.labels["price"][5] = np.nan
  config = build_config(
    str(tmp_path / "run"),
    balancer="gradnorm",
    loop={"train_steps": 60, "steps_per_loop": 20, "checkpoint_every": 20, "eval_every": 0},
  )
  os.makedirs(config.run_dir)
  parts = components.build(config, bundle, strategy)
  first = next(i + 1 for i, b in enumerate(TrainOrder(256, 32, 0).batches(0, 100)) if 5 in b)
  with pytest.raises(guard.NonFiniteError) as raised:
    loop.Trainer(config, bundle, parts, RunDir(config.run_dir), log=lambda line: None).run()
  message = str(raised.value)
  assert message.startswith(f"non-finite loss at step {first} in task(s) price (nan)"), message
  assert "skip_batch" not in message  # not offered under a strategy

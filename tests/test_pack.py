"""Packs: several runs trained by one compiled loop (train/pack_loop.py, train/pack.py, mtl-train --seeds)."""

from __future__ import annotations

import json
import os

from conftest import SMALL_RUN_FLAGS, build_config, listing, metrics_of, run_train, run_train_stopped
import numpy as np
import pytest

from mtl_research import provenance
from mtl_research.data import DATASETS
from mtl_research.train import components as components_lib
from mtl_research.train import loop as loop_lib
from mtl_research.train.pack import PackTrainer
from mtl_research.train.pack_loop import PackLoop
from mtl_research.train.run_dir import RunDir

# One member per family the issue names: loss weighting (fixed, uncertainty), GradNorm (its own
# state and Adam, here with dropout drawing masks), a Gramian method (MGDA) and gradient surgery (PCGrad).
MEMBERS = (
  ("fixed", {}, {}),
  ("uncertainty", {}, {}),
  ("gradnorm", {}, {"dropout": 0.2}),
  ("mgda", {}, {}),
  ("pcgrad", {}, {}),
)


def _build(k: int, balancer: str, model_params: dict, jit: str = "on", **loop):
  config = build_config(
    seed=k,
    balancer=balancer,
    model_params={"hidden_units": (16, 8), **model_params},
    loop={"jit_compile": jit, "train_steps": 60, "steps_per_loop": 8, **loop},
  )
  bundle = DATASETS.get(config.dataset.name).component(config.dataset.params, config.seed, None)
  return components_lib.build(config, bundle)


def _variables(parts) -> list[np.ndarray]:
  return [v.numpy() for v in [*parts.model.variables, *parts.balancer.variables, *parts.optimizer.variables]]


def _assert_packed_equals_alone(members, left_out: int | None) -> None:
  """Bit for bit, model, balancer and optimizer state, `left_out` (if any) sitting out the middle call."""
  alone = [_build(k, name, model) for k, (name, _, model) in enumerate(members)]
  packed = [_build(k, name, model) for k, (name, _, model) in enumerate(members)]
  pack = PackLoop([p.train_loop for p in packed], jit_compile=True)
  pack.compile(False, [p.origins for p in packed], [name for name, _, _ in members])
  everyone = [True] * len(members)
  # 20 steps together (more than steps_per_call: several calls), then 10 with diagnostics (and without
  # member `left_out`), then 5 together.
  pack.run(20, [False] * len(members), everyone)
  pack.run(10, [True] * len(members), [k != left_out for k in range(len(members))])
  logs = pack.run(5, [False] * len(members), everyone)
  for k, parts in enumerate(alone):
    parts.compile_loop()
    parts.train_loop.run(25 if k == left_out else 35)
  for k, (want, got) in enumerate(zip(alone, packed)):
    assert int(got.global_step.numpy()) == int(want.global_step.numpy())
    for a, b in zip(_variables(want), _variables(got)):
      np.testing.assert_array_equal(a, b, err_msg=members[k][0])
    assert logs[k]["healthy"]
  # One program per set of running members: everyone, and everyone but `left_out`.
  assert len(pack._programs) == (1 if left_out is None else 2)  # pylint: disable=protected-access


def test_packed_runs_compute_exactly_what_they_compute_alone_under_xla():
  _assert_packed_equals_alone(MEMBERS, None)


def test_a_member_sitting_out_a_call_leaves_the_others_exactly_as_alone():
  # Cheap members: what is tested is the program of a subset, not the balancers.
  _assert_packed_equals_alone([("fixed", {}, {})] * 3, 1)


def test_pack_loop_refuses_loops_of_other_shapes():
  one = _build(0, "fixed", {}, jit="off")
  other = _build(1, "fixed", {}, jit="off", batch_size=16)
  with pytest.raises(ValueError, match="batch size"):
    PackLoop([one.train_loop, other.train_loop], jit_compile=False)


def _trainer(tmp_path, k: int, learning_rate: float, messages: list) -> loop_lib.Trainer:
  config = build_config(
    str(tmp_path / f"run{k}"),
    seed=k,
    optimizer={"learning_rate": learning_rate},
    loop={"train_steps": 40, "steps_per_loop": 10, "eval_every": 20, "checkpoint_every": 20},
  )
  bundle = DATASETS.get(config.dataset.name).component(config.dataset.params, config.seed, None)
  os.makedirs(config.run_dir)
  return loop_lib.Trainer(
    config, bundle, components_lib.build(config, bundle), RunDir(config.run_dir), log=messages.append
  )


def test_a_member_whose_loss_turns_non_finite_stops_alone(tmp_path):
  messages: list[list[str]] = [[], [], []]
  trainers = [_trainer(tmp_path, k, lr, messages[k]) for k, lr in enumerate((1e-3, 1e30, 1e-2))]
  pack = PackTrainer(trainers, ["good", "diverging", "also_good"], jit_fall_back=True, log=lambda line: None)
  results = pack.run()
  assert [r.metrics is not None for r in results] == [True, False, True]
  assert "non-finite" in results[1].error
  assert any(line.startswith("error:") and "non-finite" in line for line in messages[1])
  for k in (0, 2):
    assert metrics_of(str(tmp_path / f"run{k}"))["steps"] == 40
  assert not os.path.exists(tmp_path / "run1" / "metrics.json")
  with open(tmp_path / "run1" / provenance.PROVENANCE_FILE, encoding="utf-8") as handle:
    assert json.load(handle)["segments"][-1]["outcome"] == provenance.FAILED


def test_seeds_train_a_pack_whose_runs_equal_the_runs_trained_alone(tmp_path):
  flags = (*SMALL_RUN_FLAGS, "--balancer=gradnorm", "--dropout=0.1")
  packed = run_train(f"--run_dir={tmp_path / 'pack'}", "--seeds=3,5", *flags)
  assert packed.returncode == 0, packed.stderr
  assert "[seed5] Results:" in packed.stdout
  recorded = (tmp_path / "pack" / "seed5" / "flags.txt").read_text()
  assert "--seed=5\n" in recorded and "--seeds" not in recorded
  # The run's own flags.txt trains it alone (one process, no pack), to the same bits.
  alone = run_train(f"--flagfile={tmp_path / 'pack' / 'seed5' / 'flags.txt'}", f"--run_dir={tmp_path / 'alone'}")
  assert alone.returncode == 0, alone.stderr
  assert "The pack of" not in alone.stdout
  assert listing(str(tmp_path / "pack" / "seed5"))["metrics.json"] == listing(str(tmp_path / "alone"))["metrics.json"]


def test_seeds_interrupted_checkpoint_every_run_and_resume_each(tmp_path):
  flags = (*SMALL_RUN_FLAGS, "--train_steps=60", "--checkpoint_every=20", "--steps_per_loop=10", "--eval_every=20")
  stopped = run_train_stopped(f"--run_dir={tmp_path / 'pack'}", "--seeds=0,1", *flags)
  assert stopped.returncode == 0, stopped.stderr
  assert stopped.stderr.count("stopped at step") == 2
  for seed in (0, 1):
    assert not os.path.exists(tmp_path / "pack" / f"seed{seed}" / "metrics.json")
  resumed = run_train(f"--run_dir={tmp_path / 'pack'}", "--seeds=0,1", *flags)
  assert resumed.returncode == 0, resumed.stderr
  assert resumed.stdout.count("Resumed from") == 2
  whole = run_train(f"--run_dir={tmp_path / 'whole'}", "--seeds=0,1", *flags)
  for seed in (0, 1):
    got = metrics_of(str(tmp_path / "pack" / f"seed{seed}"))
    assert got == metrics_of(str(tmp_path / "whole" / f"seed{seed}"))
  assert whole.returncode == 0


@pytest.mark.parametrize(
  "args, text",
  [
    (("--seeds=0,0",), "--seeds=0,0 must list distinct integers"),
    (("--seeds=0,x",), "not a comma-separated list of integers"),
    (("--seeds=0,1", "--seed=2"), "--seed and --seeds are both given"),
    (("--seeds=0,1", "--strategy=mirrored", "--cpu_replicas=2"), "train on one device"),
  ],
)
def test_seeds_mistakes_are_refused_before_anything_is_written(tmp_path, args, text):
  proc = run_train(f"--run_dir={tmp_path / 'pack'}", *args, *SMALL_RUN_FLAGS)
  assert proc.returncode == 1
  assert text in proc.stderr
  assert not os.path.exists(tmp_path / "pack")

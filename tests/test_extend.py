"""Extending a run: a larger --train_steps (or --epochs) continues a finished run when its past does not
depend on its length; otherwise, or for a shorter length, one sentence and nothing changed."""

from __future__ import annotations

import os

from conftest import (
  SMALL_RUN_FLAGS,
  checkpoint_numbers,
  final_variables,
  listing,
  metrics_of,
  read_scalars,
  run_train_stopped,
)
import numpy as np
import pytest

from mtl_research import config as config_lib
from mtl_research import tasks as tasks_lib
from mtl_research.balancers import BALANCERS
from mtl_research.balancers.fixed import Fixed
from mtl_research.optim import model_optimizer
from mtl_research.reports.events import read_session_hparams
from mtl_research.train import components as components_lib
from mtl_research.train import run_dir as run_dir_lib

# Evaluations and checkpoints every 20 steps, so a run of 60 and one of 120 evaluate the same steps:
# a straight run and an extended one then choose among the same candidates.
SHORT, LONG = 60, 120


def flag_lines(path: str) -> list[str]:
  with open(os.path.join(path, "flags.txt"), encoding="utf-8") as handle:
    return handle.read().splitlines()


def assert_same_run(got: str, want: str) -> None:
  """Bit-identical: every float variable of the last checkpoints, and metrics.json."""
  assert checkpoint_numbers(got)[-1] == checkpoint_numbers(want)[-1]
  got_vars, want_vars = final_variables(got), final_variables(want)
  assert got_vars.keys() == want_vars.keys() and len(want_vars) > 10
  for name, value in want_vars.items():
    np.testing.assert_array_equal(got_vars[name], value, err_msg=name)
  assert metrics_of(got) == metrics_of(want)


def assert_refused_untouched(proc, before: dict[str, bytes], path: str, *texts: str) -> None:
  assert proc.returncode != 0
  for text in texts:
    assert text in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(error_lines) == 1, proc.stderr[-2000:]
  assert listing(path) == before


# --- a finished run extended, against a run that was never interrupted ------------------------


@pytest.mark.parametrize("balancer", ["fixed", "uncertainty"])
def test_extended_run_is_bit_identical_to_a_straight_one(tmp_path, train_cli, balancer):
  """Default --jit_compile (XLA): 60 steps then 120 equal 120 steps, checkpoints and metrics.json."""
  flags = (*SMALL_RUN_FLAGS, f"--balancer={balancer}", "--dropout=0.1")
  extended, straight = str(tmp_path / "extended"), str(tmp_path / "straight")
  first = train_cli(f"--run_dir={extended}", *flags, f"--train_steps={SHORT}")
  assert first.returncode == 0, first.stderr[-3000:]
  assert metrics_of(extended)["steps"] == SHORT
  if balancer == "fixed":
    # Killed mid-extension: flags.txt already says 120, no metrics.json claims the run finished,
    # and the same command resumes it like any other run.
    stopped = run_train_stopped(f"--run_dir={extended}", *flags, f"--train_steps={LONG}")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "stopped at step 80" in stopped.stderr
    assert f"--train_steps={LONG}" in flag_lines(extended)
    assert not os.path.exists(os.path.join(extended, "metrics.json"))
  proc = train_cli(f"--run_dir={extended}", *flags, f"--train_steps={LONG}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  resumed_at = 80 if balancer == "fixed" else SHORT
  assert f"at step {resumed_at}." in proc.stdout
  if balancer != "fixed":
    assert f"Extending {extended} from --train_steps={SHORT} to {LONG}." in proc.stdout
  assert f"Training {LONG} steps from step {resumed_at}" in proc.stdout
  assert f"--train_steps={LONG}" in flag_lines(extended) and f"--train_steps={SHORT}" not in flag_lines(extended)
  assert metrics_of(extended)["steps"] == LONG
  # Validation went on every 20 steps; the first run's evaluations stayed candidates of the selection.
  evals = read_scalars(os.path.join(extended, "eval"))["eval/price/r2"]
  assert [step for step, _ in evals] == list(range(20, LONG + 1, 20))
  # The HParams dashboard shows the new length, in one session.
  values, _ = read_session_hparams(os.path.join(extended, "eval"))
  assert values["train_steps"] == str(LONG)
  assert len(run_dir_lib.event_files(os.path.join(extended, "eval"), run_dir_lib.RUN_METADATA_SUFFIX)) == 1

  reference = train_cli(f"--run_dir={straight}", *flags, f"--train_steps={LONG}")
  assert reference.returncode == 0, reference.stderr[-3000:]
  assert_same_run(extended, straight)
  # Every flag line but --run_dir (and the seal over them, which covers --run_dir too).
  assert [line for line in flag_lines(extended) if not line.startswith(("--run_dir=", "# "))] == [
    line for line in flag_lines(straight) if not line.startswith(("--run_dir=", "# "))
  ]


def test_epochs_extend_a_run_whose_length_they_set(tmp_path, train_cli):
  path = str(tmp_path / "run")
  flags = (*SMALL_RUN_FLAGS, "--train_steps=0", "--eval_every=0")
  first = train_cli(f"--run_dir={path}", *flags, "--epochs=1")
  assert first.returncode == 0, first.stderr[-3000:]
  steps_per_epoch = metrics_of(path)["steps"]
  assert steps_per_epoch == 512 // 32
  proc = train_cli(f"--run_dir={path}", *flags, "--epochs=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"Extending {path} from --epochs=1 to 2." in proc.stdout
  assert "--epochs=2" in flag_lines(path)
  assert metrics_of(path)["steps"] == 2 * steps_per_epoch
  # The run's length was set by --epochs: --train_steps is another unit, a different flag.
  before = listing(path)
  proc = train_cli(f"--run_dir={path}", *flags, "--epochs=2", "--train_steps=100")
  assert_refused_untouched(proc, before, path, "--train_steps=0 there, 100 now", "--overwrite")


# --- refusals: one sentence, nothing on disk changed ---------------------------------------------


@pytest.fixture(name="finished_run", scope="module")
def fixture_finished_run(tmp_path_factory, train_cli):
  """A finished 40-step run (fixed balancer, constant learning rate) that the refusals leave untouched."""
  path = str(tmp_path_factory.mktemp("finished") / "run")
  proc = train_cli(f"--run_dir={path}", *SMALL_RUN_FLAGS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return path


def test_shortening_is_refused(finished_run, train_cli):
  before = listing(finished_run)
  proc = train_cli(f"--run_dir={finished_run}", *SMALL_RUN_FLAGS, "--train_steps=20")
  assert_refused_untouched(
    proc, before, finished_run, "--train_steps=20 is less than the --train_steps=40", "cannot be shortened"
  )


def test_extension_with_another_flag_changed_is_refused(finished_run, train_cli):
  before = listing(finished_run)
  proc = train_cli(f"--run_dir={finished_run}", *SMALL_RUN_FLAGS, "--train_steps=80", "--learning_rate=0.01")
  assert_refused_untouched(proc, before, finished_run, "--learning_rate=0.001 there, 0.01 now", "--overwrite")


def test_a_balancer_that_declares_it_uses_the_run_length_refuses_extension(finished_run, train_cli, monkeypatch):
  monkeypatch.setattr(Fixed, "uses_run_length", True)
  before = listing(finished_run)
  proc = train_cli(f"--run_dir={finished_run}", *SMALL_RUN_FLAGS, "--train_steps=80")
  assert_refused_untouched(
    proc,
    before,
    finished_run,
    f"--balancer=fixed uses the run length, so --run_dir={finished_run} cannot be extended from "
    "--train_steps=40 to 80; choose another --run_dir or pass --overwrite.",
  )
  # Resuming at the recorded length is not an extension, so the declaration does not matter.
  proc = train_cli(f"--run_dir={finished_run}", *SMALL_RUN_FLAGS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Training" not in proc.stdout


def test_a_schedule_over_the_run_refuses_extension(tmp_path, train_cli):
  path = str(tmp_path / "run")
  flags = (*SMALL_RUN_FLAGS, "--lr_schedule=cosine", "--train_steps=20")
  first = train_cli(f"--run_dir={path}", *flags)
  assert first.returncode == 0, first.stderr[-3000:]
  before = listing(path)
  proc = train_cli(f"--run_dir={path}", *flags, "--train_steps=40")
  assert_refused_untouched(
    proc, before, path, f"--lr_schedule=cosine uses the run length, so --run_dir={path} cannot be extended"
  )
  assert "Resumed" not in proc.stdout  # refused before the data or the checkpoint is read


# --- the declarations match what the components compute -----------------------------------------


@pytest.mark.parametrize(
  "schedule, decay_steps",
  [(schedule, 0) for schedule in config_lib.LrSchedule] + [(config_lib.LrSchedule.STEP, 5)],
)
def test_schedule_declares_exactly_when_its_rate_depends_on_the_run_length(schedule, decay_steps):
  config = config_lib.OptimizerConfig(schedule=schedule, decay_steps=decay_steps)

  def rates(total: int) -> list[float]:
    rate = model_optimizer.learning_rate(config, total)
    return [float(rate(step)) if callable(rate) else float(rate) for step in range(30)]

  depends = rates(30) != rates(90)
  declared = model_optimizer.run_length_dependence(config)
  assert (declared is not None) == depends, (schedule, decay_steps, declared)
  if declared is not None:
    assert f"--lr_schedule={schedule}" in declared


STEPS = 12  # longer than GradNorm's L(0) window of --gradnorm_l0_steps=0: one epoch of 256 rows / 32


@pytest.mark.parametrize(
  "balancer, params",
  [(name, {}) for name in BALANCERS.names()] + [("gradnorm", {"gradnorm_l0_steps": 0})],
  ids=[*BALANCERS.names(), "gradnorm-l0-epoch"],
)
def test_balancer_not_declaring_the_run_length_computes_the_same_in_a_longer_run(
  balancer, params, make_config, make_bundle
):
  """The first steps of a run 3x longer are the same bits, unless the balancer declares `uses_run_length`."""
  tasks = (tasks_lib.TaskSpec("a", tasks_lib.REGRESSION), tasks_lib.TaskSpec("b", tasks_lib.CLASSIFICATION, 3))
  bundle = make_bundle(tasks)
  states, declared = [], []
  for total in (STEPS, 3 * STEPS):
    config = make_config(balancer=balancer, balancer_params=params, loop={"train_steps": total, "jit_compile": "off"})
    parts = components_lib.build(config, bundle)
    declared.append(parts.balancer.uses_run_length)
    parts.train_loop.run(STEPS)
    states.append([v.numpy().copy() for v in (*parts.model.variables, *parts.balancer.variables)])
  assert declared[0] == declared[1] and len(states[0]) == len(states[1])
  same = all(np.array_equal(short, long) for short, long in zip(*states))
  # The property the declaration stands for: a balancer that does not declare it computes the same
  # bits in a longer run (one that declares it may or may not differ in its first steps).
  assert same or declared[0], f"{balancer} {params} differs in a longer run but does not declare uses_run_length"

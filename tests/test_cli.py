"""End-to-end runs of scripts/train.py: quality, the run directory contract, resuming."""

import json
import os
import re

from conftest import listing
import pytest
import tensorflow as tf

from mtl_research import provenance

DEFAULT_STEPS = 10 * (8000 // 32)  # --epochs × full batches of --num_train / --batch_size
TRAIN_TAGS = (
  "loss/price",
  "loss/kind",
  "loss/total",
  "weighted_loss/price",
  "weighted_loss/kind",
  "weight/price",
  "weight/kind",
  "learning_rate",
  "steps_per_sec",
)


@pytest.fixture(name="default_run", scope="module")
def fixture_default_run(tmp_path_factory, train_cli):
  """The true default configuration, trained once: `scripts/train.py --run_dir=DIR`."""
  path = str(tmp_path_factory.mktemp("default") / "run")
  proc = train_cli(f"--run_dir={path}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return path, proc


@pytest.fixture(name="default_metrics", scope="module")
def fixture_default_metrics(default_run):
  with open(os.path.join(default_run[0], "metrics.json"), encoding="utf-8") as handle:
    return json.load(handle)


@pytest.fixture(name="conflict_run", scope="module")
def fixture_conflict_run(tmp_path_factory, train_cli, small_run_flags):
  """A 40-step run with loops of 7 steps, summaries every 10 and --log_grad_conflict."""
  path = str(tmp_path_factory.mktemp("conflict") / "run")
  proc = train_cli(
    f"--run_dir={path}", *small_run_flags, "--steps_per_loop=7", "--summary_every=10", "--log_grad_conflict"
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return path


class TestDefaultRun:
  def test_learns_both_tasks(self, default_metrics):
    # Best possible R² is about 0.92; Bayes accuracy 0.86-0.89, chance 1/3.
    assert default_metrics["test"]["price"]["r2"] >= 0.8
    assert default_metrics["test"]["kind"]["accuracy"] >= 0.7
    assert default_metrics["val"]["price"]["r2"] >= 0.8

  def test_metrics_json_contract(self, default_metrics):
    assert {"val", "test", "weights", "steps"} <= set(default_metrics)
    assert default_metrics["steps"] == DEFAULT_STEPS == 2500
    assert default_metrics["weights"] == {"price": 1.0, "kind": 1.0}
    for split in ("val", "test"):
      assert set(default_metrics[split]) == {"price", "kind"}
      assert set(default_metrics[split]["price"]) == {"mse", "mae", "r2"}
      assert set(default_metrics[split]["kind"]) == {"accuracy", "cross_entropy"}

  def test_run_dir_contract(self, default_run):
    path, proc = default_run
    assert sorted(os.listdir(path)) == ["ckpt", "eval", "flags.txt", "metrics.json", "provenance.json", "train"]
    (segment,) = provenance.read(os.path.join(path, provenance.PROVENANCE_FILE))
    assert (segment["outcome"], segment["steps"]) == (provenance.FINISHED, {"from": 0, "to": DEFAULT_STEPS})
    for logdir in ("train", "eval"):
      assert any(name.startswith("events.out.tfevents.") for name in os.listdir(os.path.join(path, logdir)))
    assert os.path.isfile(os.path.join(path, "ckpt", "checkpoint"))
    assert tf.train.latest_checkpoint(os.path.join(path, "ckpt")).endswith(f"ckpt-{DEFAULT_STEPS}")
    with open(os.path.join(path, "flags.txt"), encoding="utf-8") as handle:
      lines = handle.read().splitlines()
    assert f"--run_dir={path}" in lines
    assert "--batch_size=32" in lines and "--epochs=10" in lines and "--balancer=fixed" in lines
    assert not any(line.startswith("--overwrite") for line in lines)
    assert os.path.join(path, "metrics.json") in proc.stdout

  def test_train_summaries_only_at_summary_steps(self, default_run, scalars_of):
    scalars = scalars_of(os.path.join(default_run[0], "train"))
    expected_steps = list(range(100, DEFAULT_STEPS + 1, 100))  # --summary_every=100
    for tag in TRAIN_TAGS:
      assert tag in scalars, sorted(scalars)
      assert [step for step, _ in scalars[tag]] == expected_steps, tag
    assert not any(tag.startswith("conflict/") for tag in scalars)
    values = {tag: dict(points) for tag, points in scalars.items()}
    for step in expected_steps:
      assert values["weight/kind"][step] == 1.0
      assert values["learning_rate"][step] == pytest.approx(1e-3)
      assert values["weighted_loss/price"][step] == pytest.approx(values["loss/price"][step])
      assert values["loss/total"][step] == pytest.approx(
        values["loss/price"][step] + values["loss/kind"][step], rel=1e-5
      )

  def test_eval_summaries(self, default_run, default_metrics, scalars_of):
    scalars = scalars_of(os.path.join(default_run[0], "eval"))
    for tag in ("eval/price/r2", "eval/price/mse", "eval/kind/accuracy", "eval/kind/cross_entropy"):
      assert [step for step, _ in scalars[tag]] == [500, 1000, 1500, 2000, 2500], tag  # --eval_every=500
    last_r2 = scalars["eval/price/r2"][-1][1]
    assert last_r2 == pytest.approx(default_metrics["val"]["price"]["r2"], rel=1e-5)
    assert all(0.0 <= value <= 1.0 for _, value in scalars["eval/kind/accuracy"])

  def test_flagfile_resumes_without_training(self, default_run, default_metrics, train_cli):
    path, _ = default_run
    checkpoints = sorted(os.listdir(os.path.join(path, "ckpt")))
    proc = train_cli(f"--flagfile={os.path.join(path, 'flags.txt')}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resumed" in proc.stdout
    assert f"step {DEFAULT_STEPS}" in proc.stdout
    assert "Training" not in proc.stdout
    assert sorted(os.listdir(os.path.join(path, "ckpt"))) == checkpoints
    with open(os.path.join(path, "metrics.json"), encoding="utf-8") as handle:
      metrics = json.load(handle)
    assert metrics["steps"] == DEFAULT_STEPS
    # The final evaluation is repeated on the restored weights.
    assert metrics["test"]["price"]["r2"] == pytest.approx(default_metrics["test"]["price"]["r2"], rel=1e-6)
    assert metrics["test"]["kind"]["accuracy"] == default_metrics["test"]["kind"]["accuracy"]

  def test_different_flags_are_refused_and_change_nothing(self, default_run, train_cli):
    path, _ = default_run
    before = listing(path)
    proc = train_cli(f"--run_dir={path}", "--seed=1")
    assert proc.returncode != 0
    assert "--run_dir" in proc.stderr and "--overwrite" in proc.stderr
    assert "--seed=0 there, 1 now" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert listing(path) == before


class TestSmallRuns:
  def test_grad_conflict_logged_only_at_summary_steps(self, conflict_run, scalars_of):
    scalars = scalars_of(os.path.join(conflict_run, "train"))
    summary_steps = [10, 20, 30, 40]  # loops end at 7, 10, 17, 20, ...: summaries only every 10
    for tag in ("conflict/cos/price__kind", "conflict/grad_norm/price", "conflict/grad_norm/kind") + TRAIN_TAGS:
      assert [step for step, _ in scalars[tag]] == summary_steps, tag
    assert all(-1.0 <= value <= 1.0 for _, value in scalars["conflict/cos/price__kind"])
    # Non-zero: the placeholders of non-diagnosis steps are zeros.
    assert all(value > 0 for _, value in scalars["conflict/grad_norm/price"])
    assert not any(tag.startswith("conflict/cos/kind__") for tag in scalars)

  def test_small_run_layout(self, conflict_run, scalars_of):
    eval_scalars = scalars_of(os.path.join(conflict_run, "eval"))
    assert [step for step, _ in eval_scalars["eval/price/r2"]] == [20, 40]  # --eval_every=20, and the end
    ckpt = sorted(name for name in os.listdir(os.path.join(conflict_run, "ckpt")) if name.endswith(".index"))
    # The initial state (the last good one until the first periodic save), then every 20 steps.
    assert ckpt == ["ckpt-0.index", "ckpt-20.index", "ckpt-40.index"]

  def test_operational_flags_may_change_on_resume(self, conflict_run, train_cli):
    proc = train_cli(
      f"--flagfile={os.path.join(conflict_run, 'flags.txt')}",
      "--nolog_grad_conflict",
      "--summary_every=5",
      "--eval_batch_size=64",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resumed" in proc.stdout

  def test_overwrite_replaces_a_run_with_other_flags(self, tmp_path, train_cli, small_run_flags):
    path = str(tmp_path / "run")
    first = train_cli(f"--run_dir={path}", *small_run_flags, "--train_steps=20")
    assert first.returncode == 0, first.stderr[-3000:]
    proc = train_cli(f"--run_dir={path}", *small_run_flags, "--train_steps=20", "--seed=1", "--overwrite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resumed" not in proc.stdout
    with open(os.path.join(path, "flags.txt"), encoding="utf-8") as handle:
      lines = handle.read().splitlines()
    assert "--seed=1" in lines and "--seed=0" not in lines
    with open(os.path.join(path, "metrics.json"), encoding="utf-8") as handle:
      assert json.load(handle)["steps"] == 20

    # Only the new run's checkpoints: initial, last and selected (best), each an index and its data shard(s).
    def listing(directory: str) -> list[str]:
      return sorted({re.sub(r"\.data-\d+-of-\d+$", ".data", name) for name in os.listdir(directory)})

    assert listing(os.path.join(path, "ckpt")) == [
      "best",
      "checkpoint",
      "ckpt-0.data",
      "ckpt-0.index",
      "ckpt-20.data",
      "ckpt-20.index",
    ]
    assert listing(os.path.join(path, "ckpt", "best")) == ["best-20.data", "best-20.index", "checkpoint"]

  def test_non_run_directory_is_refused(self, tmp_path, train_cli):
    path = tmp_path / "notes"
    path.mkdir()
    (path / "notes.txt").write_text("keep me")
    proc = train_cli(f"--run_dir={path}", "--train_steps=5", "--num_train=64")
    assert proc.returncode != 0
    assert "--run_dir" in proc.stderr and "flags.txt" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.listdir(path) == ["notes.txt"]
    assert (path / "notes.txt").read_text() == "keep me"


def test_result_files_are_readable_by_others(default_run):
  """Atomic writes go through mkstemp (0600); the results must still follow the umask."""
  for name in ("flags.txt", "metrics.json"):
    mode = os.stat(os.path.join(default_run[0], name)).st_mode
    assert mode & 0o044 == 0o044, oct(mode)


def test_tensorboard_metadata_names_the_run_and_logs_integers_as_integers(default_run):
  """What the HParams dashboard shows for a run: its directory's name as the trial ID, integer flags as
  text (the dashboard prints numbers as "0.0000"), and the progress lines say when the loop compiles."""
  from mtl_research.reports.events import read_session_hparams  # pylint: disable=g-import-not-at-top

  path, proc = default_run
  session = read_session_hparams(os.path.join(path, "eval"))
  assert session is not None
  values, trial_id = session
  assert trial_id == os.path.basename(path)
  assert values["seed"] == "0" and values["train_steps"] == "0" and values["hidden_units"] == "128,64"
  assert values["learning_rate"] == pytest.approx(0.001) and values["balancer"] == "fixed"
  assert read_session_hparams(os.path.join(path, "train")) is None
  lines = proc.stdout.splitlines()
  assert lines.index("Compiling the train loop with XLA…") < next(
    i for i, line in enumerate(lines) if line.startswith("Compiled the train loop")
  )

"""The run-directory contract: flagfile round trip, refusal of other flags, defaults, a sweep's files, extension."""

import os
import re

import pytest

from mtl_research.errors import UserError
from mtl_research.train import run_dir


def test_flagfile_round_trip_keeps_booleans_explicit():
  values = {"normalize": "false", "log_grad_conflict": "true", "task_weights": "a:1,b:2"}
  text = run_dir.flag_file_text(values)
  assert "--normalize=false\n" in text  # no --no prefix that could be misread
  assert run_dir.parse_flagfile(text.splitlines()) == values


def test_flag_missing_from_old_run_counts_as_its_default():
  old = {"learning_rate": "0.001"}
  new = {"learning_rate": "0.001", "gradnorm_alpha": "1.5"}
  assert run_dir.differences(old, new, (), {"gradnorm_alpha": "1.5"}) == []
  assert run_dir.differences(old, {**new, "gradnorm_alpha": "0.5"}, (), {"gradnorm_alpha": "1.5"}) == [
    "--gradnorm_alpha=1.5 there, 0.5 now"
  ]


def test_other_flags_refused_and_nothing_changes(tmp_path):
  path = str(tmp_path / "run")
  run_dir.prepare(path, {"learning_rate": "0.001", "eval_every": "5"}, overwrite=False)
  before = open(os.path.join(path, "flags.txt"), encoding="utf-8").read()
  # An operational flag may change; a result-changing one may not.
  run_dir.prepare(path, {"learning_rate": "0.001", "eval_every": "7"}, False, operational={"eval_every"})
  with pytest.raises(UserError, match=r"--learning_rate=0.001 there, 0.01 now.*--overwrite"):
    run_dir.prepare(path, {"learning_rate": "0.01", "eval_every": "7"}, False, operational={"eval_every"})
  assert "--eval_every=7" in open(os.path.join(path, "flags.txt"), encoding="utf-8").read()
  assert before != open(os.path.join(path, "flags.txt"), encoding="utf-8").read()


def test_sweep_files_are_names_the_sweep_runner_writes():
  from mtl_research.sweep import runner  # pylint: disable=import-outside-toplevel

  assert run_dir.SWEEP_FILES == {runner.RUN_FILE, runner.LOG_FILE, runner.FAILED_FILE}


def write_files(path, names):
  os.makedirs(path, exist_ok=True)
  for name in names:
    with open(os.path.join(path, name), "w", encoding="utf-8") as handle:
      handle.write(f"{name} of the sweep\n")


def test_directory_with_only_sweep_files_is_a_new_run(tmp_path):
  path = str(tmp_path / "run")
  write_files(path, ["run.json", "log.txt", "FAILED"])
  flags = {"learning_rate": "0.001"}
  for overwrite in (False, True):
    assert run_dir.check(path, flags, overwrite) == run_dir.Found(resume=False)
  assert sorted(os.listdir(path)) == ["FAILED", "log.txt", "run.json"]  # check is read-only
  run_dir.prepare(path, flags, overwrite=False)
  assert sorted(os.listdir(path)) == ["FAILED", "flags.txt", "log.txt", "run.json"]
  for name in ("run.json", "log.txt", "FAILED"):
    assert open(os.path.join(path, name), encoding="utf-8").read() == f"{name} of the sweep\n"
  assert run_dir.check(path, flags, overwrite=False) == run_dir.Found(resume=True)  # now a run to resume


@pytest.mark.parametrize("other", ["notes.txt", "run.json.tmp", "ckpt"])
def test_any_other_file_without_flags_is_refused(tmp_path, other):
  path = str(tmp_path / "run")
  write_files(path, ["run.json", "log.txt", "FAILED"])
  if other == "ckpt":
    os.makedirs(os.path.join(path, other))
  else:
    write_files(path, [other])
  before = sorted(os.listdir(path))
  for overwrite in (False, True):
    with pytest.raises(UserError, match="is not empty and has no flags.txt, so it is not a run directory"):
      run_dir.prepare(path, {"learning_rate": "0.001"}, overwrite)
  assert sorted(os.listdir(path)) == before


def test_overwrite_deletes_the_run_but_keeps_sweep_files(tmp_path):
  path = str(tmp_path / "run")
  run_dir.prepare(path, {"learning_rate": "0.001"}, overwrite=False)
  write_files(path, ["run.json", "log.txt", "metrics.json", "preprocessing.json"])
  write_files(os.path.join(path, "ckpt", "best"), ["checkpoint"])
  with pytest.raises(UserError, match="--overwrite"):
    run_dir.prepare(path, {"learning_rate": "0.01"}, overwrite=False)
  run_dir.prepare(path, {"learning_rate": "0.01"}, overwrite=True)
  assert sorted(os.listdir(path)) == ["flags.txt", "log.txt", "run.json"]
  assert open(os.path.join(path, "log.txt"), encoding="utf-8").read() == "log.txt of the sweep\n"
  assert "--learning_rate=0.01\n" in open(os.path.join(path, "flags.txt"), encoding="utf-8").read()


def test_leftover_of_an_interrupted_write_does_not_make_a_foreign_directory(tmp_path):
  """A run killed while writing flags.txt leaves only the temporary file; rerunning must work."""
  path = tmp_path / "run"
  path.mkdir()
  (path / "run.json").write_text("{}")
  (path / ".flags.txt.k2j3h4.tmp").write_text("--learning_rate=0.0")
  assert not run_dir.check(str(path), {"learning_rate": "0.001"}, overwrite=False).resume
  run_dir.prepare(str(path), {"learning_rate": "0.001"}, overwrite=False)
  assert sorted(os.listdir(path)) == ["flags.txt", "run.json"]
  (path / "notes.tmp").write_text("mine")  # not a leftover of ours: no leading dot
  run_dir.prepare(str(path), {"learning_rate": "0.001"}, overwrite=False)
  assert (path / "notes.tmp").read_text() == "mine"


# --- extension: a larger length flag ---------------------------------------------------------------

STEPS_40 = {"learning_rate": "0.001", "train_steps": "40", "epochs": "10"}


def finished_run(tmp_path) -> str:
  """A run directory as a finished 40-step run leaves it (flags.txt, metrics.json, a checkpoint file)."""
  path = str(tmp_path / "run")
  run_dir.prepare(path, STEPS_40, overwrite=False)
  write_files(path, ["metrics.json", "log.txt"])
  write_files(os.path.join(path, "ckpt"), ["ckpt-40.index"])
  return path


def contents(path: str) -> dict[str, str]:
  found = {}
  for root, _, names in os.walk(path):
    for name in names:
      with open(os.path.join(root, name), encoding="utf-8") as handle:
        found[os.path.relpath(os.path.join(root, name), path)] = handle.read()
  return found


def test_same_length_resumes_and_a_longer_one_extends(tmp_path):
  path = finished_run(tmp_path)
  assert run_dir.check(path, STEPS_40, False, length=("train_steps", 40)) == run_dir.Found(resume=True)
  longer = {**STEPS_40, "train_steps": "100"}
  found = run_dir.check(path, longer, False, length=("train_steps", 100))
  assert found == run_dir.Found(resume=True, extension=run_dir.Extension("train_steps", 40, 100))
  assert str(found.extension) == "--train_steps=40 to 100"
  # Without `length` the longer run is just a different one.
  with pytest.raises(UserError, match=r"--train_steps=40 there, 100 now.*--overwrite"):
    run_dir.check(path, longer, False)


def test_accepted_extension_updates_flags_and_drops_the_finished_marker(tmp_path):
  path = finished_run(tmp_path)
  # The summarizer's final test metrics describe the shorter run: removed; the curves stay.
  final = os.path.join("eval", "events.out.tfevents.1.host.final")
  write_files(os.path.join(path, "eval"), [os.path.basename(final), "events.out.tfevents.1.host"])
  before = contents(path)
  run_dir.prepare(path, {**STEPS_40, "train_steps": "100"}, False, length=("train_steps", 100))
  after = contents(path)
  # metrics.json means "finished": a crash before the longer run ends must not leave it behind, so
  # it is kept under another name (the result before the extension stays readable).
  assert set(before) - set(after) == {"metrics.json", final}
  before.pop(final)
  assert after["metrics.before_extension.json"] == before["metrics.json"]
  assert "--train_steps=100\n" in after["flags.txt"] and "--train_steps=40\n" not in after["flags.txt"]
  assert {k: v for k, v in after.items() if k not in ("flags.txt", "metrics.before_extension.json")} == {
    k: v for k, v in before.items() if k not in ("flags.txt", "metrics.json")
  }
  # The crash case: flags.txt says 100 now, so the same command is a plain resume.
  assert run_dir.check(path, {**STEPS_40, "train_steps": "100"}, False, length=("train_steps", 100)).extension is None


def test_epochs_extend_when_they_set_the_length(tmp_path):
  path = str(tmp_path / "run")
  by_epochs = {**STEPS_40, "train_steps": "0"}
  run_dir.prepare(path, by_epochs, overwrite=False)
  found = run_dir.check(path, {**by_epochs, "epochs": "12"}, False, length=("epochs", 12))
  assert found.extension == run_dir.Extension("epochs", 10, 12)
  # --train_steps counts other units than the --epochs that set this run's length: a different run.
  with pytest.raises(UserError, match=r"--train_steps=0 there, 500 now"):
    run_dir.check(path, {**by_epochs, "train_steps": "500"}, False, length=("train_steps", 500))


@pytest.mark.parametrize(
  "values, length, length_users, message",
  [
    (
      {**STEPS_40, "train_steps": "20"},
      ("train_steps", 20),
      (),
      r"^--train_steps=20 is less than the --train_steps=40 that --run_dir=\S+ was written with, and a run cannot "
      r"be shortened; pass --train_steps=40 or more, or --overwrite to replace it\.$",
    ),
    (
      {**STEPS_40, "train_steps": "100"},
      ("train_steps", 100),
      ("--lr_schedule=cosine",),
      r"^--lr_schedule=cosine uses the run length, so --run_dir=\S+ cannot be extended from --train_steps=40 to "
      r"100; choose another --run_dir or pass --overwrite\.$",
    ),
    (
      {**STEPS_40, "train_steps": "100"},
      ("train_steps", 100),
      ("--lr_schedule=cosine", "--balancer=x"),
      r"^--lr_schedule=cosine and --balancer=x use the run length",
    ),
    (
      {**STEPS_40, "train_steps": "100", "learning_rate": "0.01"},
      ("train_steps", 100),
      (),
      r"--learning_rate=0.001 there, 0.01 now\); pass --overwrite",
    ),
  ],
  ids=["shorter", "schedule", "two-users", "another-flag"],
)
def test_refused_extension_is_one_sentence_and_changes_nothing(tmp_path, values, length, length_users, message):
  path = finished_run(tmp_path)
  before = contents(path)
  for call in (run_dir.check, run_dir.prepare):
    with pytest.raises(UserError, match=message):
      call(path, values, False, length=length, length_users=length_users)
  assert contents(path) == before
  # --overwrite replaces the run, whatever its length.
  run_dir.prepare(path, values, True, length=length, length_users=length_users)
  assert "metrics.json" not in os.listdir(path)


def test_a_missing_length_line_is_not_filled_with_a_default(tmp_path):
  """A flags.txt without --train_steps says nothing of the run's length, whatever `defaults` claims."""
  path = str(tmp_path / "run")
  run_dir.prepare(path, {"learning_rate": "0.001"}, overwrite=False)
  requested = {"learning_rate": "0.001", "train_steps": "100"}
  with pytest.raises(UserError, match=r"--train_steps=\(missing\) there, 100 now"):
    run_dir.check(path, requested, False, defaults={"train_steps": "100"}, length=("train_steps", 100))


def test_flags_txt_is_sealed_and_read_back_exactly(tmp_path):
  path = str(tmp_path / "flags.txt")
  values = {"learning_rate": "0.001", "hidden_units": "128,64", "note": "a=b"}
  with open(path, "w", encoding="utf-8") as handle:
    handle.write(run_dir.flag_file_text(values))
  assert run_dir.read_flag_file(path) == values
  lines = open(path, encoding="utf-8").read().splitlines()
  assert lines[:3] == ["--hidden_units=128,64", "--learning_rate=0.001", "--note=a=b"]
  assert re.fullmatch(r"# mtl_research flags\.txt: 3 flags, sha256 [0-9a-f]{64}", lines[3])
  # An unsealed file (written before the seal existed) is read as it is.
  with open(path, "w", encoding="utf-8") as handle:
    handle.write("\n".join(lines[:3]) + "\n")
  assert run_dir.read_flag_file(path) == values
  # A seal that does not match its lines is damage, whichever line changed.
  with open(path, "w", encoding="utf-8") as handle:
    handle.write("\n".join([lines[0], "--learning_rate=0.002", lines[2], lines[3]]) + "\n")
  with pytest.raises(UserError, match=r"flags\.txt is damaged: its flag lines do not match the seal"):
    run_dir.read_flag_file(path)

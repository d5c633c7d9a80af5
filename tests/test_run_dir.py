"""The run-directory contract: flagfile round trip, refusal of other flags, defaults, a sweep's files."""

import os

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
    assert run_dir.check(path, flags, overwrite) is False
  assert sorted(os.listdir(path)) == ["FAILED", "log.txt", "run.json"]  # check is read-only
  run_dir.prepare(path, flags, overwrite=False)
  assert sorted(os.listdir(path)) == ["FAILED", "flags.txt", "log.txt", "run.json"]
  for name in ("run.json", "log.txt", "FAILED"):
    assert open(os.path.join(path, name), encoding="utf-8").read() == f"{name} of the sweep\n"
  assert run_dir.check(path, flags, overwrite=False) is True  # now a run to resume


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
  assert run_dir.check(str(path), {"learning_rate": "0.001"}, overwrite=False) is False
  run_dir.prepare(str(path), {"learning_rate": "0.001"}, overwrite=False)
  assert sorted(os.listdir(path)) == ["flags.txt", "run.json"]
  (path / "notes.tmp").write_text("mine")  # not a leftover of ours: no leading dot
  run_dir.prepare(str(path), {"learning_rate": "0.001"}, overwrite=False)
  assert (path / "notes.tmp").read_text() == "mine"

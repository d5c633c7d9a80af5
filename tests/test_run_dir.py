"""The run-directory contract: flagfile round trip, refusal of other flags, defaults."""

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
      "--gradnorm_alpha=1.5 there, 0.5 now"]


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

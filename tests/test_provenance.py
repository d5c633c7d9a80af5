"""provenance.json: what a run records about where it came from, and how reports compare it."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from mtl_research import provenance
from mtl_research.errors import UserError

LOOP = provenance.LoopSettings(
  executor="single_threaded", xla=False, deterministic=True, strategy="default", replicas=1
)


def test_a_segment_is_recorded_when_training_starts_and_completed_when_it_ends(tmp_path):
  recorder = provenance.Recorder(str(tmp_path), LOOP)
  recorder.start(20)
  (running,) = provenance.read(str(tmp_path / provenance.PROVENANCE_FILE))
  assert running["outcome"] == provenance.RUNNING and running["ended"] is None  # what a SIGKILL leaves
  assert running["steps"] == {"from": 20, "to": 20}
  recorder.end(provenance.INTERRUPTED, 60)
  second = provenance.Recorder(str(tmp_path), LOOP)
  second.start(60)
  second.end(provenance.FINISHED, 100)
  first, last = provenance.read(str(tmp_path / provenance.PROVENANCE_FILE))
  assert (first["outcome"], first["steps"]) == (provenance.INTERRUPTED, {"from": 20, "to": 60})
  assert (last["outcome"], last["steps"]) == (provenance.FINISHED, {"from": 60, "to": 100})
  for segment in (first, last):
    assert segment["started"] <= segment["training_started"] <= segment["ended"]
    assert segment["wall_seconds"] >= 0
    environment = segment["environment"]
    assert set(environment) == set(provenance.ENVIRONMENT_KEYS)
    assert (environment["executor"], environment["loop"], environment["deterministic"]) == (
      "single_threaded",
      "graph",
      True,
    )
    assert (environment["tensorflow"], environment["numpy"]) == (tf.__version__, np.__version__)


def _git(directory, *args) -> str:
  return subprocess.run(["git", "-C", str(directory), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_code_version_is_the_checkouts_commit_and_whether_tracked_files_changed(tmp_path):
  package = tmp_path / "checkout" / "mtl_research"
  package.mkdir(parents=True)
  (package / "step.py").write_text("x = 1\n")
  _git(tmp_path / "checkout", "init", "-q")
  _git(tmp_path / "checkout", "-c", "user.email=a@b", "-c", "user.name=a", "add", ".")
  _git(tmp_path / "checkout", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "one")
  head = _git(tmp_path / "checkout", "rev-parse", "HEAD")
  assert provenance.code_version(str(package)) == (head, False)
  (package / "notes.txt").write_text("untracked\n")  # a run directory in the checkout is not a code change
  assert provenance.code_version(str(package)) == (head, False)
  (package / "step.py").write_text("x = 2\n")
  assert provenance.code_version(str(package)) == (head, True)
  # A package installed somewhere inside another repository is not that repository's code.
  nested = package / "site-packages" / "mtl_research"
  nested.mkdir(parents=True)
  assert provenance.code_version(str(nested)) == (None, None)
  assert provenance.code_version(str(tmp_path / "elsewhere")) == (None, None)


@pytest.mark.parametrize(
  "content, culprit",
  [
    ("[1, 2]", "not a provenance file"),
    ('{"schema_version": 1}', "not a provenance file"),
    ('{"schema_version": 99, "segments": []}', "schema_version 99"),
    ('{"schema_version": 1, "segments": [3]}', "segments[0]"),
    ('{"schema_version": 1, "segm', "cannot be read as JSON"),
  ],
)
def test_a_damaged_file_is_refused_naming_it(tmp_path, content, culprit):
  path = tmp_path / provenance.PROVENANCE_FILE
  path.write_text(content)
  with pytest.raises(UserError, match=r"^" + str(path).replace(".", r"\.")) as raised:
    provenance.read(str(path))
  assert culprit in str(raised.value)


def test_a_damaged_record_does_not_stop_training_it_is_started_anew(tmp_path):
  path = tmp_path / provenance.PROVENANCE_FILE
  path.write_text("garbage")
  provenance.Recorder(str(tmp_path), LOOP).start(0)
  assert len(json.loads(path.read_text())["segments"]) == 1


def _segments(**environment):
  base = dict.fromkeys(provenance.ENVIRONMENT_KEYS, "same")
  return [{"environment": {**base, **environment}}]


def test_differences_name_each_key_that_differs_with_its_counts():
  runs = {
    "a": _segments(tensorflow="2.21.0"),
    "b": _segments(tensorflow="2.21.0"),
    "c": _segments(tensorflow="2.20.0", gpus=["NVIDIA H200"]),
    "d": _segments(tensorflow="2.21.0") + _segments(tensorflow="2.21.0", git_dirty=True),  # resumed, edited code
  }
  assert provenance.differences(runs) == [
    "git_dirty (same in 4 runs, true in 1 run)",
    "tensorflow (2.21.0 in 3 runs, 2.20.0 in 1 run)",
    "gpus (same in 3 runs, NVIDIA H200 in 1 run)",
  ]
  assert provenance.differences({"a": _segments(), "b": _segments()}) == []

"""Regressions found in review of the tabular data layer; each failed before its fix."""

import json

import numpy as np
import pytest
from table_helpers import load, write_csv

from mtl_research.data import csv_reader
from mtl_research.errors import UserError


def test_resume_keeps_the_task_order_of_the_flag(tmp_path):
  """preprocessing.json is written with sorted keys; the heads must keep --tasks order."""
  rows = [[i, i * 0.5, "a" if i % 2 else "b"] for i in range(40)]
  path = write_csv(str(tmp_path / "t.csv"), ["x", "y", "k"], rows)
  tasks = (("y", "regression"), ("k", "classification"))  # not alphabetical
  first = load("csv", csv_path=path, tasks=tasks)
  saved = json.loads(json.dumps(first.preprocessing, sort_keys=True))
  resumed = load("csv", fitted=saved, csv_path=path, tasks=tasks)
  assert first.task_names == resumed.task_names == ["y", "k"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_non_numeric_regression_target_names_its_line_wherever_it_lands(tmp_path, seed):
  rows = [[i, i * 1.5] for i in range(20)]
  rows[19][1] = "oops"  # line 21, in whichever split the seed puts it
  path = write_csv(str(tmp_path / "t.csv"), ["a", "y"], rows)
  with pytest.raises(UserError, match=r"line 21 holds 'oops'"):
    load("csv", seed=seed, csv_path=path, tasks=(("y", "regression"),), split=(0.5, 0.25, 0.25))


@pytest.mark.parametrize("seed", [0, 1])
def test_infinite_regression_target_names_its_line(tmp_path, seed):
  rows = [[i, i * 1.5] for i in range(20)]
  rows[19][1] = "inf"
  path = write_csv(str(tmp_path / "t.csv"), ["a", "y"], rows)
  with pytest.raises(UserError, match=r"non-finite value .* line 21"):
    load("csv", seed=seed, csv_path=path, tasks=(("y", "regression"),), split=(0.5, 0.25, 0.25))


def test_column_demoted_after_the_first_chunk_keeps_its_spelling(tmp_path, monkeypatch):
  monkeypatch.setattr(csv_reader, "CHUNK_LINES", 4)
  path = write_csv(str(tmp_path / "t.csv"), ["v"], [[v] for v in ["1", "2", "3", "1", "2", "word", "1", "2.50"]])
  column = csv_reader.read_table(path).columns["v"]
  assert column.tolist() == [b"1", b"2", b"3", b"1", b"2", b"word", b"1", b"2.50"]


def test_class_labels_mixing_whole_and_fractional_numbers(tmp_path):
  labels = ["0", "1", "0.5"] * 10
  path = write_csv(str(tmp_path / "t.csv"), ["x", "c"], [[i, c] for i, c in enumerate(labels)])
  bundle = load("csv", csv_path=path, tasks=(("c", "classification"),))
  assert bundle.class_names["c"] == ("0", "0.5", "1")
  names = np.array(bundle.class_names["c"])
  for split in (bundle.train, bundle.val, bundle.test):
    assert set(names[split.labels["c"]]) <= {"0", "0.5", "1"}


def test_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
  path = tmp_path / "bom.csv"
  path.write_bytes("\ufeffa,b\n1,2\n3,4\n".encode("utf-8"))
  assert csv_reader.read_header(str(path)) == ["a", "b"]

"""The data summary of a tabular run: what build_bundle records, and how it is rendered.

The trainer's side (printed, and written to <run_dir>/data_summary.txt) is
checked by test_csv_source.py's CLI run and test_evaluate_export.py's fixture.
"""

from __future__ import annotations

import numpy as np

try:
  from tests import table_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import table_helpers as helpers

from mtl_research.data import summary
from mtl_research.data.preprocessing import (
  CategoricalFeature,
  ClassificationTarget,
  NumericFeature,
  Preprocessing,
  RegressionTarget,
)


def preprocessing(num_numeric: int = 2, classes: tuple[str, ...] = ("no", "yes")) -> Preprocessing:
  numeric = tuple(NumericFeature(f"n{i}", 0.0, 1.0, indicator=i == 0) for i in range(num_numeric))
  categorical = (
    CategoricalFeature("color", ("blue", "red"), "one_hot"),
    CategoricalFeature("city", tuple(f"c{i}" for i in range(40)), "embedding"),
  )
  return Preprocessing(numeric + categorical, (RegressionTarget("y", 5.0, 2.0), ClassificationTarget("b", classes)))


def test_render_of_one_split_file():
  data = summary.DataSummary(
    (summary.SourceRows("/data/dir/table.csv", 200, 5),),
    (0.6, 0.2, 0.2),
    {"train": 117, "val": 39, "test": 39},
    {"val": {"color": 3, "city": 1}},
    preprocessing(),
    reused=False,
  )
  assert summary.render(data) == (
    "Data summary (preprocessing fitted on the train split):\n"
    "  rows: train 117, val 39, test 39 (--split=0.6,0.2,0.2 of table.csv: 200 read, 5 dropped for a missing target)\n"
    "  features: 4 columns\n"
    "    numeric (2): n0, n1\n"
    "    missing indicators added (1): n0\n"
    "    one-hot, categories seen in training (1): color 2\n"
    "    embedded, categories seen in training (1): city 40\n"
    "  task y: regression\n"
    "  task b: classification, 2 classes: no, yes\n"
    "  unseen categories in val: color 3, city 1\n"
  )


def test_render_of_three_files_reused_and_single_task():
  sources = (("a", 10, 0), ("b", 5, 1), ("c", 1500, 0))
  data = summary.DataSummary(
    tuple(summary.SourceRows(f"{name}.csv", rows, dropped) for name, rows, dropped in sources),
    None,
    {"train": 10, "val": 4, "test": 1500},
    {},
    preprocessing(),
    reused=True,
  )
  text = summary.render(data.with_tasks(["b"]))
  lines = text.splitlines()
  assert lines[0] == "Data summary (preprocessing reused from the run's preprocessing.json):"
  rows = "  rows: train 10 (a.csv), val 4 (b.csv: 5 read, 1 dropped for a missing target), test 1,500 (c.csv)"
  assert lines[1] == rows
  assert "task y" not in text and lines[-1] == "  task b: classification, 2 classes: no, yes"
  assert "unseen" not in text


def test_many_columns_and_classes_stay_compact():
  classes = tuple(f"class{i}" for i in range(25))
  data = summary.DataSummary(
    (summary.SourceRows("t.csv", 1000, 0),),
    (0.8, 0.1, 0.1),
    {"train": 800, "val": 100, "test": 100},
    {},
    preprocessing(num_numeric=200, classes=classes),
    reused=False,
  )
  lines = summary.render(data).splitlines()
  assert len(lines) < 15 and max(len(line) for line in lines) <= summary.WIDTH, lines
  first = lines.index(next(line for line in lines if line.startswith("    numeric (200): ")))
  end = next(i for i in range(first + 1, len(lines)) if not lines[i].startswith(" " * 6))  # continuation lines
  numeric = " ".join(" ".join(lines[first:end]).split())
  # Each name whole (never cut at a line end), the first 40, then how many more.
  assert numeric == "numeric (200): " + ", ".join(f"n{i}" for i in range(40)) + ", ... 160 more"
  first = lines.index(next(line for line in lines if line.startswith("  task b:")))
  task = " ".join(" ".join(lines[first:]).split())  # continuation lines joined
  assert "25 classes: class0, class1," in task and task.endswith("class9, ... 15 more") and "class10" not in task


def test_unseen_line():
  assert summary.unseen_line("new.csv", {}) is None
  assert summary.unseen_line("new.csv", {"city": 1234, "job": 1}) == "unseen categories in new.csv: city 1,234, job 1"


def test_the_csv_source_records_rows_classes_and_unseen_categories(tmp_path):
  header = ("x", "k", "y", "c")
  train = [[i, "ab"[i % 2], i, "uv"[i % 2]] for i in range(40)]
  val = [[1, "a", 1, "u"], [2, "zz", "", "v"], [3, "zz", 3, "v"], [4, "?", 4, "u"]]  # one row without y
  test = [[1, "b", 1, "u"], [2, "a", 2, "v"]]
  paths = [helpers.write_csv(tmp_path / f"{n}.csv", header, r) for n, r in zip(("t", "v", "s"), (train, val, test))]
  bundle = helpers.load(
    "csv",
    csv_path=paths[0],
    val_csv_path=paths[1],
    test_csv_path=paths[2],
    tasks=(("y", "regression"), ("c", "classification")),
  )
  data = bundle.summary
  assert [(s.path, s.read, s.dropped) for s in data.sources] == [(paths[0], 40, 0), (paths[1], 4, 1), (paths[2], 2, 0)]
  assert data.split is None and dict(data.rows) == {"train": 40, "val": 3, "test": 2}
  # k: "zz" and "?" (never missing in train) were never seen; the other "zz" row (dropped: no y) is not counted.
  assert {split: dict(counts) for split, counts in data.unseen.items()} == {"val": {"k": 2}}
  assert data.preprocessing == bundle.fitted and not data.reused
  text = summary.render(data)
  assert "  rows: train 40 (t.csv), val 3 (v.csv: 4 read, 1 dropped for a missing target), test 2 (s.csv)\n" in text
  assert "  task c: classification, 2 classes: u, v\n" in text and "  unseen categories in val: k 2\n" in text
  assert bundle.only("c").summary.preprocessing.task_names == ["c"]
  # The resumed run's preprocessing: reused, and the same rows.
  again = helpers.load(
    "csv",
    fitted=bundle.fitted,
    csv_path=paths[0],
    val_csv_path=paths[1],
    test_csv_path=paths[2],
    tasks=(("y", "regression"), ("c", "classification")),
  ).summary
  assert again.reused and again.rows == data.rows
  np.testing.assert_array_equal(bundle.val.labels["c"], [0, 1, 0])


def test_generated_datasets_have_no_summary():
  assert helpers.load("synthetic", num_train=64, num_val=8, num_test=8).summary is None

"""The bad-input catalogue of data files: CSV and .npz files, and a run's preprocessing.json.

Each refusal names the real culprit (issue 14, class 5): the file, the flag,
the column, the physical line of a CSV file (blank lines counted), an
array's index in an .npz file, a field of preprocessing.json. Degenerate
data the run cannot learn from (class 6) is refused here too. The contract
and the harness are tests/catalogue.py's; every case runs in this process.
"""

from __future__ import annotations

import gzip
import json
import os

from catalogue import EVALUATE, ROWS, Catalogue, check_refused, csv_flags, helpers, npz_flags, trained_command
import numpy as np
import pytest

catalogue = Catalogue()
case = catalogue.case

# Row i of helpers.mixed_rows is on line i + 2 (the header is line 1) unless blank lines come before it.


def _lines(rows: list[list[str]]) -> list[str]:
  return helpers.csv_text(helpers.MIXED_HEADER, rows).splitlines()


def _with_blank_lines(lines: list[str], *before: int) -> list[str]:
  """`lines` with a blank line inserted before each line number of `before` (1-based, in the original)."""
  for line in sorted(before, reverse=True):
    lines.insert(line - 1, "")
  return lines


def _write(place, name: str, lines: list[str], newline: str = "\n") -> str:
  text = newline.join(lines) + newline
  path = place.tmp / name
  if name.endswith(".gz"):
    path.write_bytes(gzip.compress(text.encode()))
  else:
    path.write_bytes(text.encode())
  return str(path)


def _changed(**changes: dict[int, str]) -> list[list[str]]:
  """The mixed rows with `column={row: value}` changes (column named as in MIXED_HEADER)."""
  rows = helpers.mixed_rows(ROWS)
  for column, values in changes.items():
    for row, value in values.items():
      rows[row][helpers.MIXED_HEADER.index(column)] = value
  return rows


# Line numbers: physical lines, blank lines counted, whatever the line ends or the compression.


@case("csv-blank-lines-then-text-in-regression-target")
def _(place):
  lines = _with_blank_lines(_lines(_changed(y={40: "heavy"})), 5, 10)  # row 40: line 42, then 44
  path = _write(place, "blank.csv", lines)
  return csv_flags(path), ["'y'", path, "line 44", "'heavy'"]


def _short_row_after_blank_lines(place, name: str, newline: str):
  lines = _lines(helpers.mixed_rows(ROWS))
  lines[60] = lines[60].rsplit(",", 1)[0]  # line 61 lost its last field
  path = _write(place, name, _with_blank_lines(lines, 20, 30, 40), newline)
  return csv_flags(path), [path, "line 64 has 7 fields"]


@case("csv-crlf-line-ends-blank-lines-then-a-short-row")
def _(place):
  return _short_row_after_blank_lines(place, "crlf.csv", "\r\n")


@case("csv-gzip-blank-lines-then-a-short-row")
def _(place):
  return _short_row_after_blank_lines(place, "blank.csv.gz", "\n")


@case("csv-blank-line-then-inf-in-numeric-feature")
def _(place):
  path = _write(place, "inf.csv", _with_blank_lines(_lines(_changed(num={60: "-inf"})), 3))
  return csv_flags(path), ["'num'", path, "non-finite", "line 63"]


@case("csv-val-file-with-blank-line-then-text-in-numeric-column")
def _(place):
  train = place.mixed_csv("train.csv")
  val = _write(place, "val.csv", _with_blank_lines(_lines(_changed(num={10: "ten"})), 2))
  test = place.mixed_csv("test.csv")
  return [*csv_flags(train), f"--val_csv_path={val}", f"--test_csv_path={test}"], ["'num'", val, "line 13", "'ten'"]


@case("csv-blank-line-then-class-unknown-to-the-resumed-run")
def _(place):
  run_dir, csv_path = place.trained()
  lines = _with_blank_lines(_lines(_changed(c={20: "99"})), 4)  # row 20: line 22, then 23
  _write(place, os.path.relpath(csv_path, place.tmp), lines)
  return trained_command(run_dir, csv_path), ["'c'", csv_path, "'99'", "line 23"]


# Quotes: what neither parser takes is named with its line and its reason.


@case("csv-quote-never-closed")
def _(place):
  path = place.mixed_csv("unclosed.csv", _changed(city={30: '"city 30'}))
  return csv_flags(path), [path, "line 32", "never closed"]


@case("csv-text-after-a-closing-quote")
def _(place):
  path = place.mixed_csv("after.csv", _changed(color={30: '"red"dish'}))
  return csv_flags(path), [path, "line 32", "after the closing quote"]


@case("csv-quoted-line-break-leaves-too-many-fields")
def _(place):
  # A quote opened in line 32's city and closed in line 34's color joins three lines into one row of 10 fields.
  path = place.mixed_csv("joined.csv", _changed(city={30: '"city 30'}, color={32: 'red"'}))
  return csv_flags(path), [path, "line 32 has 10 fields", "runs on to line 34"]


# Paths.


@case("csv-path-is-a-directory")
def _(place):
  path = place.path("data")
  os.makedirs(path)
  return csv_flags(path), [path, "is a directory"]


@case("csv-test-path-is-a-directory")
def _(place):
  path = place.path("test")
  os.makedirs(path)
  train, val = place.mixed_csv("train.csv"), place.mixed_csv("val.csv")
  return [*csv_flags(train), f"--val_csv_path={val}", f"--test_csv_path={path}"], [path, "is a directory"]


@case("npz-path-is-a-directory")
def _(place):
  path = place.path("arrays.npz")
  os.makedirs(path)
  return npz_flags(path), [path, "is a directory"]


# Headers.


@case("csv-byte-order-mark-and-header-only")
def _(place):
  path = place.write("header.csv", b"\xef\xbb\xbf" + ",".join(helpers.MIXED_HEADER).encode() + b"\r\n\r\n")
  return csv_flags(path), [path, "no data rows"]


@case("csv-header-repeats-a-column-but-for-spaces")
def _(place):
  header = ["rid", "num", "color", " y", "city", "y ", "b", "c"]
  path = helpers.write_csv(place.tmp / "dupes.csv", header, helpers.mixed_rows(ROWS))
  return csv_flags(path), [path, "repeats column 'y'"]


# Flags that contradict the data.


@case("csv-categorical_columns-names-a-regression-target")
def _(place):
  return [*csv_flags(place.mixed_csv()), "--categorical_columns=zip,y"], ["--categorical_columns", "'y'", "regression"]


# Targets without values, or without anything to learn (class 6: refused, not trained into NaN or accuracy 0).


@case("csv-regression-target-empty-in-every-row")
def _(place):
  path = place.mixed_csv("empty_y.csv", _changed(y=dict.fromkeys(range(ROWS), "")))
  return csv_flags(path), ["'y'", path, "no value in any of its 200 rows"]


@case("csv-classification-target-missing-in-every-row-of-the-val-file")
def _(place):
  train, test = place.mixed_csv("train.csv"), place.mixed_csv("test.csv")
  val = place.mixed_csv("val.csv", _changed(b=dict.fromkeys(range(ROWS), "?")))
  return [*csv_flags(train), f"--val_csv_path={val}", f"--test_csv_path={test}"], ["'b'", val, "no value"]


@case("csv-no-row-has-every-target")
def _(place):
  path = place.mixed_csv(
    "alternating.csv", _changed(y=dict.fromkeys(range(0, ROWS, 2), "NA"), b={i: "" for i in range(1, ROWS, 2)})
  )
  return csv_flags(path), [path, "No row", "b, c, y"]


@case("csv-regression-target-constant")
def _(place):
  path = place.mixed_csv("constant.csv", _changed(y=dict.fromkeys(range(ROWS), "1000")))
  return csv_flags(path), ["'y'", path, "same value (1000)"]


@case("csv-classification-target-with-a-class-per-row")
def _(place):
  path = place.mixed_csv("ids.csv", _changed(c={i: f"id{i}" for i in range(ROWS)}))
  return csv_flags(path), ["'c'", path, "different class in each of its 195 rows"]


@case("csv-inf-in-regression-target")
def _(place):
  path = place.mixed_csv("inf_y.csv", _changed(y={12: "inf"}))
  return csv_flags(path), ["'y'", path, "non-finite", "line 14"]


# Numbers beyond float32: refused, naming the first one in the file.


@case("csv-feature-values-of-1e308")
def _(place):
  path = place.mixed_csv("huge.csv", _changed(num={10: "1e308", 11: "-1e308"}))
  return csv_flags(path), ["'num'", path, "line 12", "1e+308", "float32"]


@case("csv-regression-target-of-1e39-without-standardization")
def _(place):
  path = place.mixed_csv("huge_y.csv", _changed(y={90: "-1e39"}))
  return [*csv_flags(path), "--nostandardize_targets"], ["'y'", path, "line 92", "-1e+39", "float32"]


# NumPy files: an array and an index, never a line.


def _arrays(**overrides) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  x = rng.normal(size=(ROWS, 3))
  return {"x": x, "y": x[:, 0] + 0.1 * rng.normal(size=ROWS), **overrides}


def _npz(place, **arrays) -> str:
  path = place.path("data.npz")
  np.savez(path, **arrays)
  return path


@case("npz-target-shorter-than-x")
def _(place):
  arrays = _arrays()
  path = _npz(place, x=arrays["x"], y=arrays["y"][:150])
  return npz_flags(path), ["'y'", path, "(150,)", "(200,)", "'x'"]


@case("npz-inf-in-x")
def _(place):
  x = _arrays()["x"]
  x[23, 1] = np.inf
  path = _npz(place, **_arrays(x=x))
  return npz_flags(path), ["Array 'x'", path, "x[23, 1]"]


@case("npz-inf-in-target")
def _(place):
  y = _arrays()["y"]
  y[17] = -np.inf
  path = _npz(place, **_arrays(y=y))
  return npz_flags(path), ["Array 'y'", path, "y[17]"]


@case("npz-x-of-1e308")
def _(place):
  x = _arrays()["x"]
  x[5, 0] = 1e308
  path = _npz(place, **_arrays(x=x))
  return npz_flags(path), ["Array 'x'", path, "x[5, 0]", "float32"]


@case("npz-target-nan-in-every-row")
def _(place):
  path = _npz(place, **_arrays(y=np.full(ROWS, np.nan)))
  return npz_flags(path), ["Array 'y'", path, "no value"]


@case("npz-text-in-regression-target")
def _(place):
  y = _arrays()["y"].astype(str)
  y[7] = "seven"
  path = _npz(place, **_arrays(y=y))
  return npz_flags(path), ["'y'", path, "y[7]", "'seven'"]


@case("npz-complex-x")
def _(place):
  path = _npz(place, **_arrays(x=_arrays()["x"] * (1 + 1j)))
  return npz_flags(path), ["Array 'x'", path, "complex"]


@case("npz-task-named-like-a-column-of-x")
def _(place):
  path = _npz(place, **_arrays(x0=_arrays()["y"]))
  return [*npz_flags(path)[:2], "--tasks=x0:regression", *npz_flags(path)[3:]], ["--tasks", "'x0'", path]


# A run's preprocessing.json of the wrong shape: the resumed run and mtl-evaluate name the field.


def _damaged_preprocessing(place, damage) -> tuple[str, str, str]:
  run_dir, csv_path = place.trained()
  path = os.path.join(run_dir, "preprocessing.json")
  with open(path, encoding="utf-8") as handle:
    document = json.load(handle)
  damage(document)
  with open(path, "w", encoding="utf-8") as handle:
    json.dump(document, handle)
  return run_dir, csv_path, path


def _feature(document, name: str) -> dict:
  return next(feature for feature in document["features"] if feature["name"] == name)


@case("preprocessing_json-feature-type-a-list-on-resume")
def _(place):
  run_dir, csv_path, path = _damaged_preprocessing(place, lambda d: _feature(d, "num").update(type=["numeric"]))
  return trained_command(run_dir, csv_path), [path, "features[1].type"]


@case("preprocessing_json-target-kind-an-object-on-resume")
def _(place):
  run_dir, csv_path, path = _damaged_preprocessing(place, lambda d: d["targets"]["y"].update(kind={"regression": 1}))
  return trained_command(run_dir, csv_path), [path, "targets.y.kind"]


@case("preprocessing_json-targets-renamed-on-resume")
def _(place):
  def rename(document):
    document["targets"]["weight"] = document["targets"].pop("y")
    document["task_order"] = ["weight" if name == "y" else name for name in document["task_order"]]

  run_dir, csv_path, _ = _damaged_preprocessing(place, rename)
  return trained_command(run_dir, csv_path), ["preprocessing.json", "weight:regression", "--tasks="]


@case("preprocessing_json-vocabulary-an-object", command=EVALUATE)
def _(place):
  run_dir, csv_path, path = _damaged_preprocessing(place, lambda d: _feature(d, "color").update(vocabulary={"red": 1}))
  return [f"--run_dir={run_dir}", f"--csv_path={csv_path}"], [path, "features[2].vocabulary"]


@case("preprocessing_json-features-emptied", command=EVALUATE)
def _(place):
  run_dir, csv_path, path = _damaged_preprocessing(place, lambda d: d.update(features=[]))
  return [f"--run_dir={run_dir}", f"--csv_path={csv_path}"], [path, "features is empty"]


@case("preprocessing_json-target-also-a-feature", command=EVALUATE)
def _(place):
  run_dir, csv_path, path = _damaged_preprocessing(place, lambda d: _feature(d, "num").update(name="y"))
  return [f"--run_dir={run_dir}", f"--csv_path={csv_path}"], [path, "'y' is both a feature and a target"]


# mtl-evaluate reads CSV files with the same reader: the same culprits.


def _evaluate(place, name: str, lines: list[str]) -> tuple[list[str], str]:
  run_dir, _ = place.trained()
  path = _write(place, name, lines)
  return [f"--run_dir={run_dir}", f"--csv_path={path}"], path


@case("csv-blank-line-then-text-in-numeric-feature", command=EVALUATE)
def _(place):
  args, path = _evaluate(place, "new.csv", _with_blank_lines(_lines(_changed(num={30: "n/a"})), 6))
  return args, ["'num'", path, "line 33", "'n/a'"]


@case("csv-blank-line-then-text-in-regression-target", command=EVALUATE)
def _(place):
  args, path = _evaluate(place, "new.csv", _with_blank_lines(_lines(_changed(y={30: "heavy"})), 6))
  return args, ["'y'", path, "line 33", "'heavy'"]


@case("csv-quote-never-closed", command=EVALUATE)
def _(place):
  args, path = _evaluate(place, "new.csv", _lines(_changed(city={100: '"city'})))
  return args, [path, "line 102", "never closed"]


@case("csv-feature-beyond-float32", command=EVALUATE)
def _(place):
  args, path = _evaluate(place, "new.csv", _lines(_changed(num={3: "4e38"})))
  return args, ["'num'", path, "line 5", "float32"]


@case("csv-path-is-a-directory", command=EVALUATE)
def _(place):
  run_dir, _ = place.trained()
  path = place.path("new")
  os.makedirs(path)
  return [f"--run_dir={run_dir}", f"--csv_path={path}"], [path, "is a directory"]


# The test.


@pytest.mark.parametrize("case", catalogue.cases)
def test_bad_input_is_refused_with_one_line_and_nothing_changes(case, tmp_path, catalogue_run):
  check_refused(case, tmp_path, catalogue_run)

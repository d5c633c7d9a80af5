"""The bad-input catalogue of `mtl-evaluate`, and of flagfiles (every command reads them alike).

Issue 14, class 4: no mistake ends in a traceback. mtl-evaluate checks every
output path (--metrics_out, --predictions_out, --export_dir) before it writes
anything, so that a refused command leaves no metrics file, no evaluations/
directory and no half export behind; a run whose checkpoints cannot be read is
refused with one sentence naming its checkpoint directory; a flagfile that is
a directory or not UTF-8 text (itself or one it includes) is named in one
sentence. The contract and the harness are tests/catalogue.py's; every case
runs in this process.
"""

from __future__ import annotations

import os
import re

from catalogue import EVALUATE, ROWS, SMALL_TABLE_FLAGS, TASKS_FLAG, Catalogue, check_refused, helpers, snapshot
from conftest import SMALL_RUN_FLAGS
import pytest

from mtl_research.cli import common
from mtl_research.errors import UserError

catalogue = Catalogue()
case = catalogue.case


def _evaluate(place, *extra: str, csv_path: str | None = None) -> tuple[list[str], str, str]:
  """(arguments evaluating a copy of the trained run on its own data file, run_dir, csv_path)."""
  run_dir, trained_csv = place.trained()
  csv_path = csv_path or trained_csv
  return [f"--run_dir={run_dir}", f"--csv_path={csv_path}", *extra], run_dir, csv_path


# The run directory.


@case("run_dir-missing", command=EVALUATE)
def _(place):
  path = place.path("runs", "x")
  return [f"--run_dir={path}", f"--csv_path={place.mixed_csv()}"], [f"--run_dir={path}", "does not exist"]


@case("run_dir-is-a-regular-file", command=EVALUATE)
def _(place):
  path = place.write("run", "notes\n")
  return [f"--run_dir={path}", f"--csv_path={place.mixed_csv()}"], [f"--run_dir={path}", "not a directory"]


@case("run_dir-not-a-run", command=EVALUATE)
def _(place):
  path = os.path.dirname(place.write("photos/cat.jpg", "meow\n"))
  return [f"--run_dir={path}", f"--csv_path={place.mixed_csv()}"], [f"--run_dir={path}", "not a run directory"]


@case("run_dir-without-preprocessing_json", command=EVALUATE)
def _(place):
  args, run_dir, _ = _evaluate(place)
  os.remove(os.path.join(run_dir, "preprocessing.json"))  # as a run on generated data has none
  return args, [f"--run_dir={run_dir}", "preprocessing.json", "tabular"]


@case("run_dir-flags_txt-a-line-changed", command=EVALUATE)
def _(place):
  args, run_dir, _ = _evaluate(place)
  path = os.path.join(run_dir, "flags.txt")
  with open(path, encoding="utf-8") as handle:
    text = handle.read()
  with open(path, "w", encoding="utf-8") as handle:
    handle.write(text.replace("--hidden_units=16\n", "--hidden_units=32\n"))
  return args, [path, "damaged"]


@case("run_dir-flags_txt-not-utf8", command=EVALUATE)
def _(place):
  args, run_dir, _ = _evaluate(place)
  path = os.path.join(run_dir, "flags.txt")
  with open(path, "r+b") as handle:
    handle.write(b"\xff\xfe")
  return args, [path, "not UTF-8"]


def _damage_checkpoints(directory: str, pattern: str) -> int:
  """Truncates the data files in `directory` whose names match `pattern`; returns how many."""
  damaged = [name for name in os.listdir(directory) if re.fullmatch(pattern, name)]
  for name in damaged:
    with open(os.path.join(directory, name), "r+b") as handle:
      handle.truncate(os.fstat(handle.fileno()).st_size // 2)
  return len(damaged)


@case("run_dir-every-checkpoint-damaged", command=EVALUATE)
def _(place):
  args, run_dir, _ = _evaluate(place)
  ckpt = os.path.join(run_dir, "ckpt")
  assert _damage_checkpoints(ckpt, r"ckpt-\d+\.data-.*") >= 2
  assert _damage_checkpoints(os.path.join(ckpt, "best"), r"best-\d+\.data-.*") >= 1
  return args, [f"no checkpoint in {ckpt} can be read", f"--run_dir={run_dir}"]


@case("run_dir-checkpoints-deleted", command=EVALUATE)
def _(place):
  args, run_dir, _ = _evaluate(place)
  ckpt = os.path.join(run_dir, "ckpt")
  for directory, _, names in os.walk(ckpt):
    for name in names:
      os.remove(os.path.join(directory, name))
  return args, [f"--run_dir={run_dir}", f"no checkpoint in {ckpt}"]


# What to evaluate.


@case("neither-csv_path-nor-export_dir", command=EVALUATE)
def _(place):
  run_dir, _ = place.trained()
  return [f"--run_dir={run_dir}", f"--predictions_out={place.path('p.csv')}"], ["--csv_path", "--export_dir"]


@case("csv-missing", command=EVALUATE)
def _(place):
  path = place.path("new.csv")
  args, _, _ = _evaluate(place, csv_path=path)
  return args, [path, "does not exist"]


@case("csv-without-a-feature-column", command=EVALUATE)
def _(place):
  rows = [[value for i, value in enumerate(row) if i != 2] for row in helpers.mixed_rows(ROWS)]
  header = [name for name in helpers.MIXED_HEADER if name != "color"]
  path = helpers.write_csv(place.tmp / "new.csv", header, rows)
  args, _, _ = _evaluate(place, csv_path=path)
  return args, [path, "'color'"]


@case("csv-class-the-model-does-not-know", command=EVALUATE)
def _(place):
  rows = helpers.mixed_rows(ROWS)
  rows[40][7] = "99"  # line 42
  path = helpers.write_csv(place.tmp / "new.csv", helpers.MIXED_HEADER, rows)
  args, _, _ = _evaluate(place, csv_path=path)
  return args, ["'c'", path, "'99'", "line 42"]


def _without_targets(place) -> str:
  rows = [row[:5] for row in helpers.mixed_rows(ROWS)]
  return helpers.write_csv(place.tmp / "new.csv", helpers.MIXED_HEADER[:5], rows)


@case("csv-without-target-columns-and-no-predictions_out", command=EVALUATE)
def _(place):
  path = _without_targets(place)
  args, _, _ = _evaluate(place, f"--export_dir={place.path('export')}", csv_path=path)
  return args, [path, "no target columns", "--predictions_out"]


@case("csv-without-target-columns-and-a-metrics_out", command=EVALUATE)
def _(place):
  path = _without_targets(place)
  metrics_out = place.path("m.json")
  args, _, _ = _evaluate(
    place, f"--predictions_out={place.path('p.csv')}", f"--metrics_out={metrics_out}", csv_path=path
  )
  return args, [f"--metrics_out={metrics_out}", "no target columns"]


def _alternating_targets(place) -> str:
  """The rows alternate between a value of y and one of b (and c): no row has all three targets."""
  rows = helpers.mixed_rows(ROWS)
  for i, row in enumerate(rows):
    if i % 2:
      row[5] = ""
    else:
      row[6] = row[7] = ""
  return helpers.write_csv(place.tmp / "new.csv", helpers.MIXED_HEADER, rows)


@case("csv-no-row-has-every-target", command=EVALUATE)
def _(place):
  path = _alternating_targets(place)
  args, _, _ = _evaluate(place, csv_path=path)
  return args, [path, "no row", "(b, c, y)", "--predictions_out"]


@case("csv-no-row-has-every-target-and-a-metrics_out", command=EVALUATE)
def _(place):
  path = _alternating_targets(place)
  metrics_out = place.path("m.json")
  args, _, _ = _evaluate(
    place, f"--predictions_out={place.path('p.csv')}", f"--metrics_out={metrics_out}", csv_path=path
  )
  return args, [f"--metrics_out={metrics_out}", "no row"]


# Outputs: each checked before anything is written, so a refusal writes no file (the metrics of
# the default --metrics_out included) and creates no evaluations/ directory.


@case("predictions_out-is-a-directory", command=EVALUATE)
def _(place):
  path = place.path("out")
  os.makedirs(path)
  args, _, _ = _evaluate(place, f"--predictions_out={path}")
  return args, [f"--predictions_out={path}", "is a directory"]


@case("predictions_out-in-proc", command=EVALUATE)
def _(place):
  args, _, _ = _evaluate(place, "--predictions_out=/proc/x")
  return args, ["--predictions_out=/proc/x", "/proc"]


@case("predictions_out-in-a-missing-directory", command=EVALUATE)
def _(place):
  path = place.path("outputs", "p.csv")
  args, _, _ = _evaluate(place, f"--predictions_out={path}")
  return args, [f"--predictions_out={path}", "does not exist"]


@case("predictions_out-under-a-regular-file", command=EVALUATE)
def _(place):
  path = os.path.join(place.write("notes.txt", "notes\n"), "p.csv")
  args, _, _ = _evaluate(place, f"--predictions_out={path}")
  return args, [f"--predictions_out={path}", "not a directory"]


@case("predictions_out-is-the-csv_path", command=EVALUATE)
def _(place):
  args, _, csv_path = _evaluate(place)
  return [*args, f"--predictions_out={csv_path}"], [f"--predictions_out={csv_path}", "--csv_path"]


@case("predictions_out-is-the-metrics_out", command=EVALUATE)
def _(place):
  path = place.path("out.json")
  args, _, _ = _evaluate(place, f"--predictions_out={path}", f"--metrics_out={path}")
  return args, ["--predictions_out", "--metrics_out", path]


@case("predictions_out-is-the-default-metrics_out", command=EVALUATE)
def _(place):
  args, run_dir, csv_path = _evaluate(place)
  os.makedirs(os.path.join(run_dir, "evaluations"))
  path = os.path.join(run_dir, "evaluations", os.path.basename(csv_path) + ".json")
  return [*args, f"--predictions_out={path}"], ["--predictions_out", "--metrics_out", path]


@case("predictions_out-inside-the-export_dir", command=EVALUATE)
def _(place):
  export_dir = place.path("export")
  os.makedirs(export_dir)  # empty, so fine for the export alone
  path = os.path.join(export_dir, "p.csv")
  args, _, _ = _evaluate(place, f"--export_dir={export_dir}", f"--predictions_out={path}")
  return args, [f"--predictions_out={path}", f"--export_dir={export_dir}"]


@case("metrics_out-is-a-directory", command=EVALUATE)
def _(place):
  path = place.path("metrics")
  os.makedirs(path)
  args, _, _ = _evaluate(place, f"--metrics_out={path}")
  return args, [f"--metrics_out={path}", "is a directory"]


@case("metrics_out-in-a-missing-directory", command=EVALUATE)
def _(place):
  path = place.path("results", "m.json")
  args, _, _ = _evaluate(place, f"--metrics_out={path}")
  return args, [f"--metrics_out={path}", "does not exist"]


for _name in ("metrics.json", "flags.txt", "preprocessing.json"):

  @case(f"metrics_out-overwrites-the-runs-{_name}", command=EVALUATE)
  def _(place, _name=_name):
    args, run_dir, _ = _evaluate(place)
    path = os.path.join(run_dir, _name)
    return [*args, f"--metrics_out={path}"], [f"--metrics_out={path}", f"--run_dir={run_dir}"]


@case("export_dir-is-a-regular-file", command=EVALUATE)
def _(place):
  path = place.write("model.pb", "weights\n")
  run_dir, _ = place.trained()
  return [f"--run_dir={run_dir}", f"--export_dir={path}"], [f"--export_dir={path}", "not a directory"]


@case("export_dir-not-empty", command=EVALUATE)
def _(place):
  path = os.path.dirname(place.write("serving/keep.txt", "mine\n"))
  run_dir, _ = place.trained()
  return [f"--run_dir={run_dir}", f"--export_dir={path}"], [f"--export_dir={path}", "not empty"]


@case("export_dir-in-proc", command=EVALUATE)
def _(place):
  run_dir, _ = place.trained()
  return [f"--run_dir={run_dir}", "--export_dir=/proc/serving"], ["--export_dir=/proc/serving", "/proc"]


@case("export_dir-is-the-run_dir", command=EVALUATE)
def _(place):
  run_dir, _ = place.trained()
  return [f"--run_dir={run_dir}", f"--export_dir={run_dir}"], [f"--export_dir={run_dir}"]


@case("predictions_out-without-csv_path", command=EVALUATE)
def _(place):
  run_dir, _ = place.trained()
  path = place.path("p.csv")
  return [f"--run_dir={run_dir}", f"--export_dir={place.path('export')}", f"--predictions_out={path}"], [
    f"--predictions_out={path}",
    "--csv_path",
  ]


@case("export_dir-good-but-predictions_out-a-directory", command=EVALUATE)
def _(place):
  path = place.path("out")
  os.makedirs(path)
  args, _, _ = _evaluate(place, f"--export_dir={place.path('export')}", f"--predictions_out={path}")
  return args, [f"--predictions_out={path}", "is a directory"]


# Flagfiles: read by every command's flag parsing (cli/common.parse_flags).


@case("flagfile-not-utf8")
def _(place):
  path = place.write("flags.cfg", "\n".join(SMALL_RUN_FLAGS).encode() + b"\n--seed=1 # caf\xe9\n")
  return [f"--flagfile={path}"], [f"--flagfile={path}", "UTF-8", "line 8"]


@case("flagfile-is-a-directory")
def _(place):
  path = place.path("configs")
  os.makedirs(path)
  return [f"--flagfile={path}"], [f"--flagfile={path}", "is a directory"]


@case("flagfile-includes-a-file-that-is-not-utf8")
def _(place):
  inner = place.write("inner.cfg", b"--seed=1\n--hidden_units=16 \xa7 width\n")
  outer = place.write("outer.cfg", "\n".join([*SMALL_RUN_FLAGS, f"--flagfile={inner}"]) + "\n")
  return [f"--flagfile={outer}"], [inner, "UTF-8", "line 2", outer]


@case("flagfile-includes-a-missing-file")
def _(place):
  inner = place.path("absent.cfg")
  outer = place.write("outer.cfg", f"--flagfile={inner}\n")
  return [f"--flagfile={outer}", *SMALL_RUN_FLAGS], [inner, "does not exist", outer]


@case("flagfile-a-runs-flags_txt-saved-as-latin-1")
def _(place):
  csv_path = place.mixed_csv("données.csv")
  lines = [f"--run_dir={place.path('run')}", "--dataset=csv", f"--csv_path={csv_path}", TASKS_FLAG]
  path = place.write("flags.txt", "\n".join([*lines, *SMALL_TABLE_FLAGS]).encode("latin-1") + b"\n")
  return [f"--flagfile={path}"], [f"--flagfile={path}", "UTF-8", "line 3"]


@case("flagfile-not-utf8", command=EVALUATE)
def _(place):
  run_dir, csv_path = place.trained()
  path = place.write("evaluate.cfg", f"--run_dir={run_dir}\n--csv_path={csv_path}\n".encode() + b"\x80\n")
  return [f"--flagfile={path}"], [f"--flagfile={path}", "UTF-8", "line 3"]


@case("flagfile-is-a-directory", command=EVALUATE)
def _(place):
  path = place.path("configs")
  os.makedirs(path)
  return [f"--flagfile={path}"], [f"--flagfile={path}", "is a directory"]


# The test.


@pytest.mark.parametrize("case", catalogue.cases)
def test_bad_input_is_refused_with_one_line_and_nothing_changes(case, tmp_path, catalogue_run):
  check_refused(case, tmp_path, catalogue_run)


# The mechanisms, one by one.


def test_flagfiles_are_read_as_absl_reads_them(tmp_path):
  bad = tmp_path / "bad.cfg"
  bad.write_bytes(b"--seed=1\n\xff\n")
  good = tmp_path / "good.cfg"
  good.write_text(f"# a comment\n--flagfile={good}\n--seed=1\n")  # a file including itself: absl skips it
  outer = tmp_path / "outer.cfg"
  outer.write_text(f"--hidden_units=16\n--flagfile={good}\n")
  common.check_flagfiles([f"--flagfile={outer}", "--flagfile=", "--", f"--flagfile={bad}"])  # after --: no flag
  for args in ([f"--flagfile={bad}"], ["--flagfile", str(bad)], [f"-flagfile={bad}"], ["-flagfile", str(bad)]):
    with pytest.raises(UserError, match=f"^--flagfile={bad} is not UTF-8 text: line 2 holds the byte 0xff"):
      common.check_flagfiles(["--seed=2", *args])
  # Included from a file: named with the line that includes it, at any depth.
  (tmp_path / "middle.cfg").write_text(f"--seed=3\n-flagfile={bad}\n")
  outer.write_text(f"--flagfile={good}\n--flagfile={tmp_path / 'middle.cfg'}\n")
  with pytest.raises(UserError) as error:
    common.check_flagfiles([f"--flagfile={outer}"])
  assert str(error.value).startswith(f"{bad} (included by line 2 of {tmp_path / 'middle.cfg'}) is not UTF-8 text")
  # Whatever absl's own error would be (no name after --flagfile) is left to absl.
  common.check_flagfiles(["--flagfile"])


def test_output_paths_are_checked_without_writing_anything(tmp_path):
  data = tmp_path / "data.csv"
  data.write_text("x\n1\n")
  before = snapshot(tmp_path)
  common.check_output_file("out", str(tmp_path / "new.csv"))
  common.check_output_file("out", str(data))  # an existing file is replaced
  common.check_output_file("out", str(tmp_path / "a" / "b" / "m.json"), make_parents=True)
  common.check_output_dir("export_dir", str(tmp_path / "export"))
  assert snapshot(tmp_path) == before  # the probes leave nothing, and no directory is made
  refusals = {
    "is a directory": lambda: common.check_output_file("out", str(tmp_path)),
    "its directory": lambda: common.check_output_file("out", str(tmp_path / "a" / "m.json")),
    "is not a directory": lambda: common.check_output_file("out", str(data / "m.json"), make_parents=True),
    "/proc takes no new file": lambda: common.check_output_file("out", "/proc/a/b", make_parents=True),
    "exists and is not a directory": lambda: common.check_output_dir("export_dir", str(data)),
    "is not empty": lambda: common.check_output_dir("export_dir", str(tmp_path)),
  }
  for expected, check in refusals.items():
    with pytest.raises(UserError, match=f"^--(out|export_dir)=.*{re.escape(expected)}"):
      check()
  assert snapshot(tmp_path) == before


def test_outputs_must_be_apart_from_each_other_and_from_the_inputs(tmp_path):
  data = tmp_path / "data.csv"
  data.write_text("x\n1\n")
  os.symlink(data, tmp_path / "link.csv")
  os.link(data, tmp_path / "hard.csv")
  inputs = [("csv_path", str(data))]
  common.check_outputs_apart([("a", str(tmp_path / "a.csv")), ("b", str(tmp_path / "b.csv"))], [], inputs)
  for name in ("data.csv", "link.csv", "hard.csv"):  # the same file by any name
    with pytest.raises(UserError, match=f"^--a={tmp_path / name} would overwrite --csv_path={data}"):
      common.check_outputs_apart([("a", str(tmp_path / name))], [], inputs)
  with pytest.raises(UserError, match="^--a and --b both name"):
    common.check_outputs_apart([("a", str(tmp_path / "x.csv")), ("b", str(tmp_path / "." / "x.csv"))])
  with pytest.raises(UserError, match="is inside --export_dir"):
    common.check_outputs_apart([("a", str(tmp_path / "e" / "x.csv"))], [("export_dir", str(tmp_path / "e"))])

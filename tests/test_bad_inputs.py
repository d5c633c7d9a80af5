"""The bad input catalogue of `python scripts/train.py`: flags, data files, run directories.

The contract every case is checked against, and the harness, are in
tests/catalogue.py. Run directories that must already hold a run (resume
refused, damaged checkpoints, a class the saved preprocessing does not know)
are copies of one small CSV run trained once per test process.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
import re
import stat
import zlib

from catalogue import (
  ROWS,
  SMALL_TABLE_FLAGS,
  TASKS_FLAG,
  Catalogue,
  check_refused,
  csv_flags,
  helpers,
  npz_flags,
  trained_command,
)
from conftest import SMALL_RUN_FLAGS
import numpy as np
import pytest

# The catalogue. Each case: (place) -> (arguments, substrings the error line must contain).
# Without a --run_dir of its own, a case runs with --run_dir=<tmp_path>/run, which must not appear.

catalogue = Catalogue()
case = catalogue.case


# Flags.


@case("flag-unknown-name")
def _(place):
  return [*SMALL_RUN_FLAGS, "--batch_sise=16"], ["batch_sise"]


@case("flag-batch_size-zero")
def _(place):
  return [*SMALL_RUN_FLAGS, "--batch_size=0"], ["--batch_size=0"]


@case("flag-learning_rate-negative")
def _(place):
  return [*SMALL_RUN_FLAGS, "--learning_rate=-1"], ["--learning_rate", "positive"]


@case("flag-train_steps-not-a-number")
def _(place):
  return [*SMALL_RUN_FLAGS[:4], "--train_steps=abc"], ["--train_steps=abc"]


@case("flag-hidden_units-not-a-list-of-integers")
def _(place):
  return [*SMALL_RUN_FLAGS, "--hidden_units=16,x"], ["--hidden_units", "'x'"]


@case("flag-dropout-one")
def _(place):
  return [*SMALL_RUN_FLAGS, "--dropout=1"], ["--dropout", "below 1.0"]


@case("flag-momentum-with-adam")
def _(place):
  return [*SMALL_RUN_FLAGS, "--optimizer=adam", "--momentum=0.9"], ["--momentum", "--optimizer=sgd", "--optimizer=adam"]


@case("flag-csv_path-with-synthetic-dataset")
def _(place):
  return [*SMALL_RUN_FLAGS, f"--csv_path={place.mixed_csv()}"], ["--csv_path", "--dataset=synthetic"]


@case("flag-single_task-unknown-task")
def _(place):
  return [*SMALL_RUN_FLAGS, "--single_task=colour"], ["--single_task=colour", "price, kind"]


@case("flag-selection-unknown-task")
def _(place):
  return [*SMALL_RUN_FLAGS, "--selection=colour:accuracy"], ["--selection=colour:accuracy", "price:mse"]


@case("flag-selection-metric-of-the-other-kind")
def _(place):
  return [*SMALL_RUN_FLAGS, "--selection=price:accuracy"], ["--selection=price:accuracy", "kind:accuracy"]


@case("flag-balancer-unknown")
def _(place):
  return [*SMALL_RUN_FLAGS, "--balancer=pc_grad"], ["--balancer=pc_grad", "fixed", "gradnorm"]


@case("flag-graddrop-parameter-scope")
def _(place):
  return [*SMALL_RUN_FLAGS, "--balancer=graddrop", "--gradient_scope=parameters"], [
    "--balancer=graddrop",
    "--gradient_scope=parameters",
    "representation",
  ]


@case("flag-graddrop_leak-above-one")
def _(place):
  return [*SMALL_RUN_FLAGS, "--balancer=graddrop", "--graddrop_leak=1.5"], ["--graddrop_leak", "[0, 1]"]


@case("flag-dwa_temperature-zero")
def _(place):
  return [*SMALL_RUN_FLAGS, "--balancer=dwa", "--dwa_temperature=0"], ["--dwa_temperature", "above 0"]


@case("flag-stch_mu-negative")
def _(place):
  return [*SMALL_RUN_FLAGS, "--balancer=stch", "--stch_mu=-1"], ["--stch_mu", "above 0"]


@case("flag-rlw_distribution-unknown")
def _(place):
  return [*SMALL_RUN_FLAGS, "--balancer=rlw", "--rlw_distribution=cauchy"], ["--rlw_distribution", "dirichlet"]


@case("flag-famo_min_losses-unknown-task")
def _(place):
  return [*SMALL_RUN_FLAGS, "--balancer=famo", "--famo_min_losses=colour:0.1"], ["--famo_min_losses", "colour"]


@case("flag-task_weights-every-task-zero")
def _(place):
  return [*SMALL_RUN_FLAGS, "--task_weights=price:0,kind:0"], ["--task_weights", "weight 0", "price, kind"]


@case("flag-task_weights-zero-for-the-single-task")
def _(place):
  return [*SMALL_RUN_FLAGS, "--single_task=kind", "--task_weights=kind:0"], ["--task_weights", "weight 0", "kind"]


@case("flag-tasks-unknown-kind")
def _(place):
  return csv_flags(place.mixed_csv(), tasks="--tasks=y:ranking"), ["--tasks", "'y:ranking'"]


@case("flag-split-does-not-sum-to-one")
def _(place):
  return [*csv_flags(place.mixed_csv()), "--split=0.5,0.3,0.3"], ["--split=0.5,0.3,0.3", "sum to 1"]


@case("positional-argument")
def _(place):
  return [*SMALL_RUN_FLAGS, "fixed"], ["unexpected argument 'fixed'"]


@case("flagfile-missing")
def _(place):
  path = place.path("flags.txt")
  return [f"--flagfile={path}"], [path]


# Files.


@case("csv-missing")
def _(place):
  path = place.path("absent.csv")
  return csv_flags(path), [path, "does not exist"]


@case("csv-path-not-given")
def _(place):
  return ["--dataset=csv", TASKS_FLAG, *SMALL_TABLE_FLAGS], ["--csv_path"]


@case("csv-empty")
def _(place):
  path = helpers.write_text(place.tmp / "empty.csv", "")
  return csv_flags(path), [path, "empty"]


@case("csv-row-with-fewer-fields")
def _(place):
  lines = helpers.csv_text(helpers.MIXED_HEADER, helpers.mixed_rows(ROWS)).splitlines()
  lines[77] = lines[77].rsplit(",", 2)[0]  # line 78 lost its last two fields
  path = helpers.write_text(place.tmp / "short_row.csv", "\n".join(lines) + "\n")
  return csv_flags(path), [path, "line 78", "6 fields"]


@case("csv-gzip-truncated")
def _(place):
  packed = gzip.compress(helpers.csv_text(helpers.MIXED_HEADER, helpers.mixed_rows(ROWS)).encode())
  path = str(place.tmp / "cut.csv.gz")
  Path(path).write_bytes(packed[: len(packed) // 2])
  return csv_flags(path), [path, "truncated"]


@case("csv-gzip-truncated-at-a-line-end")
def _(place):
  lines = helpers.csv_text(helpers.MIXED_HEADER, helpers.mixed_rows(ROWS)).splitlines(keepends=True)
  packer = zlib.compressobj(wbits=31)  # gzip format
  packed = packer.compress("".join(lines[:151]).encode()) + packer.flush(zlib.Z_FULL_FLUSH)  # 150 rows, no end
  path = str(place.tmp / "cut.csv.gz")
  Path(path).write_bytes(packed)
  return csv_flags(path), [path, "truncated"]


@case("csv-tasks-column-missing")
def _(place):
  path = place.mixed_csv()
  return csv_flags(path, tasks="--tasks=y:regression,income:classification"), ["--tasks", "'income'", path]


@case("csv-column-both-feature-and-target")
def _(place):
  return [*csv_flags(place.mixed_csv()), "--feature_columns=num,y"], ["'y'", "--feature_columns", "--tasks"]


@case("csv-text-in-regression-target")
def _(place):
  rows = helpers.mixed_rows(ROWS)
  rows[40][5] = "heavy"  # line 42
  path = place.mixed_csv("words.csv", rows)
  return csv_flags(path), ["'y'", path, "line 42", "'heavy'"]


@case("csv-classification-target-with-one-class")
def _(place):
  rows = helpers.mixed_rows(ROWS)
  for row in rows:
    row[7] = "7"
  return csv_flags(place.mixed_csv("one_class.csv", rows)), ["'c'", "1 class"]


@case("csv-inf-in-numeric-feature")
def _(place):
  rows = helpers.mixed_rows(ROWS)
  rows[60][1] = "inf"  # line 62
  path = place.mixed_csv("inf.csv", rows)
  return csv_flags(path), ["'num'", path, "non-finite", "line 62"]


@case("csv-class-unknown-to-the-resumed-run")
def _(place):
  run_dir, csv_path = place.trained()
  rows = helpers.mixed_rows(ROWS)
  rows[20][7] = "99"  # line 22: a class the saved preprocessing.json does not have
  helpers.write_csv(csv_path, helpers.MIXED_HEADER, rows)
  return trained_command(run_dir, csv_path), ["'c'", csv_path, "'99'", "line 22"]


@case("npz-not-an-npz-file")
def _(place):
  path = helpers.write_text(place.tmp / "data.npz", "x,y\n1,2\n")
  return npz_flags(path), [path]


@case("npz-holding-one-npy-array")
def _(place):
  path = place.path("data.npz")
  with open(path, "wb") as handle:
    np.save(handle, np.zeros((64, 3)))
  return npz_flags(path), [path]


@case("npz-holding-object-arrays")
def _(place):
  path = place.path("data.npz")
  np.savez(path, x=np.zeros((64, 3)), y=np.array([1.0, "a", None, 2] * 16, dtype=object))
  return npz_flags(path), [path]


# Run directories.


@case("run_dir-is-a-regular-file")
def _(place):
  path = helpers.write_text(place.tmp / "run", "notes\n")
  return [*SMALL_RUN_FLAGS, f"--run_dir={path}"], [f"--run_dir={path}", "not a directory"]


@case("run_dir-not-empty-and-not-a-run")
def _(place):
  path = place.path("photos")
  os.makedirs(path)
  helpers.write_text(os.path.join(path, "cat.jpg"), "meow\n")
  return [*SMALL_RUN_FLAGS, f"--run_dir={path}"], [f"--run_dir={path}", "not a run directory"]


@case("run_dir-written-with-other-flags")
def _(place):
  run_dir, csv_path = place.trained()
  return [*trained_command(run_dir, csv_path), "--learning_rate=0.01"], [
    f"--run_dir={run_dir}",
    "--learning_rate=0.001 there, 0.01 now",
    "--overwrite",
  ]


# A run's flags.txt damaged by hand, then the run asked to go on with another value of a flag whose
# line is gone or changed: the record is never repaired from the command line (issue 14, class 1).


def _damaged_flags(place, damage) -> tuple[list[str], list[str]]:
  run_dir, csv_path = place.trained()
  path = os.path.join(run_dir, "flags.txt")
  with open(path, "rb") as handle:
    text = handle.read()
  with open(path, "wb") as handle:
    handle.write(damage(text))
  return [*trained_command(run_dir, csv_path), "--learning_rate=0.5"], [path, "damaged", "--overwrite"]


def _without_line(prefix: bytes):
  return lambda text: b"".join(line for line in text.splitlines(keepends=True) if not line.startswith(prefix))


@case("flags_txt-a-line-deleted")
def _(place):
  return _damaged_flags(place, _without_line(b"--learning_rate="))


@case("flags_txt-a-value-changed")
def _(place):
  return _damaged_flags(place, lambda text: text.replace(b"--learning_rate=0.001\n", b"--learning_rate=0.5\n"))


@case("flags_txt-a-line-added")
def _(place):
  return _damaged_flags(place, lambda text: b"--momentum=0.9\n" + text)


@case("flags_txt-emptied")
def _(place):
  return _damaged_flags(place, lambda text: b"")


@case("flags_txt-text-garbage")
def _(place):
  return _damaged_flags(place, lambda text: b"lorem ipsum dolor\n" + text[len(text) // 2 :])


@case("flags_txt-not-utf8")
def _(place):
  return _damaged_flags(place, lambda text: b"\xff\xfe" + text)


@case("flags_txt-only-the-seal-deleted")
def _(place):
  # Now it reads as an older, unsealed file, which is compared flag by flag: the recorded
  # learning rate, not the requested one, is what the run was trained with.
  args, _ = _damaged_flags(place, _without_line(b"# mtl_research flags.txt:"))
  return args, ["--learning_rate=0.001 there, 0.5 now", "--overwrite"]


@case("flags_txt-unsealed-with-a-line-deleted")
def _(place):
  # An older, unsealed file missing a line: the flag counts as its default (0.001), never as the
  # requested value, so the run trained at 0.001 is not resumed at 0.5.
  args, _ = _damaged_flags(
    place, lambda text: _without_line(b"--learning_rate=")(_without_line(b"# mtl_research flags.txt:")(text))
  )
  return args, ["--learning_rate=0.001 there, 0.5 now", "--overwrite"]


@case("run_dir-under-a-regular-file")
def _(place):
  path = os.path.join(helpers.write_text(place.tmp / "notes.txt", "notes\n"), "run")
  return [*SMALL_RUN_FLAGS, f"--run_dir={path}"], [f"--run_dir={path}", "cannot be written"]


@case(
  "run_dir-in-a-read-only-directory",
  pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories"),
)
def _(place):
  parent = place.path("locked")
  os.makedirs(parent)
  os.chmod(parent, stat.S_IRUSR | stat.S_IXUSR)
  path = os.path.join(parent, "run")
  return [*SMALL_RUN_FLAGS, f"--run_dir={path}"], [f"--run_dir={path}", "cannot be written"]


@case("run_dir-every-checkpoint-damaged")
def _(place):
  run_dir, csv_path = place.trained()
  ckpt = os.path.join(run_dir, "ckpt")
  damaged = [name for name in os.listdir(ckpt) if re.fullmatch(r"ckpt-\d+\.data-.*", name)]
  assert len(damaged) >= 2, os.listdir(ckpt)
  for name in damaged:
    with open(os.path.join(ckpt, name), "r+b") as handle:
      size = os.fstat(handle.fileno()).st_size
      handle.truncate(size // 2)
      handle.seek(0)
      handle.write(b"\xff" * min(16, size // 2))
  os.remove(os.path.join(run_dir, "metrics.json"))  # unfinished: it must resume from a checkpoint
  return trained_command(run_dir, csv_path), [f"no checkpoint in {ckpt} can be read", "--overwrite"]


# The test.


@pytest.mark.parametrize("case", catalogue.cases)
def test_bad_input_is_refused_with_one_line_and_nothing_changes(case, tmp_path, catalogue_run):
  check_refused(case, tmp_path, catalogue_run)

"""The run directory contract that later tools read.

  flags.txt     a flagfile reproducing the run (--flagfile=<run_dir>/flags.txt), sealed by its last
                line (count and SHA-256 of the flag lines): a damaged record is refused (read_flag_file)
  preprocessing.json  fitted encoding of tabular data (vocabularies, means, class names), if any
  metrics.json  {"val": {task: {metric: v}}, "test": {...}, "weights": {task: w}, "steps": n, ...}
  metrics.before_extension.json  the metrics.json of the run before its last extension, if any
  data_summary.txt  what was inferred from a tabular dataset, if any
  train/ eval/  TensorBoard event files; in eval/ also *.run_metadata (HParams values, custom-scalars
                layout; rewritten whenever training starts) and *.final (the final test metrics, written
                by mtl-summarize)
  ckpt/         tf.train.CheckpointManager checkpoints (model, optimizer, balancer, step)
  ckpt/best/    the checkpoint selected by --selection (best validation score)
  .trainer.lock held (flock) by the trainer writing the run, naming its pid and host
                (train/run_lock.py); deleted when it ends, left (locking nothing) by one killed.
                No part of the run: ignored like the SWEEP_FILES below, kept by --overwrite

A sweep (mtl_research/sweep/runner.py) also keeps its own bookkeeping in each
run directory, the SWEEP_FILES: run.json (which run of the sweep this is),
log.txt (every attempt's output) and FAILED (the last attempt failed). It
writes them before starting the trainer, so the trainer treats them as no
part of the run: a directory that holds nothing but SWEEP_FILES is new (not
"a stranger's non-empty directory"), and --overwrite deletes everything in a
run directory except them. Any other file without a flags.txt still means the
directory is not a run directory, and it is refused.

A run may be extended: the same flags but a larger length flag (--train_steps,
or --epochs when it sets the length) continue it from its last checkpoint,
unless a flag whose component's rule reads the run's length says otherwise
(a cosine schedule: the first 500 steps of a decay over 1000 are not those of
a decay over 500). Once accepted, metrics.json (which means "finished") is
renamed metrics.before_extension.json, the final metrics a summarizer wrote
into eval/ are removed, and flags.txt records the new length; a crash then
resumes the longer run like any other. A length can never decrease.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import hashlib
import os
import re
import shutil
from typing import TYPE_CHECKING

from mtl_research.errors import UserError
from mtl_research.files import is_partial_write, write_text_atomic

if TYPE_CHECKING:  # reports/ read run directories without TensorFlow; mtl_research.data imports it
  from mtl_research.data.preprocessing import Preprocessing

FLAGS_FILE = "flags.txt"
METRICS_FILE = "metrics.json"
METRICS_BEFORE_EXTENSION_FILE = "metrics.before_extension.json"
# Event files in eval/ that are replaced, not appended to: the run's HParams values and layout
# (train/tensorboard_meta.py) and its final test metrics (reports/hparams.py).
RUN_METADATA_SUFFIX = ".run_metadata"
FINAL_METRICS_SUFFIX = ".final"
PREPROCESSING_FILE = "preprocessing.json"
# A sweep's bookkeeping in a run directory (written by sweep/runner.py, read by
# reports/collect.py); the trainer ignores these files and --overwrite keeps them.
RUN_FILE = "run.json"
LOG_FILE = "log.txt"
FAILED_FILE = "FAILED"
SWEEP_FILES = frozenset({RUN_FILE, LOG_FILE, FAILED_FILE})
# The lock of the trainer writing the run (train/run_lock.py); the trainer ignores it and
# --overwrite keeps it (deleting a held lock file would let a second trainer lock a new one).
LOCK_FILE = ".trainer.lock"


@dataclasses.dataclass(frozen=True)
class RunDir:
  path: str

  @property
  def flags_file(self) -> str:
    return os.path.join(self.path, FLAGS_FILE)

  @property
  def metrics_file(self) -> str:
    return os.path.join(self.path, METRICS_FILE)

  @property
  def preprocessing_file(self) -> str:
    return os.path.join(self.path, PREPROCESSING_FILE)

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.path, "ckpt")

  @property
  def best_checkpoint_dir(self) -> str:
    return os.path.join(self.path, "ckpt", "best")

  @property
  def train_logdir(self) -> str:
    return os.path.join(self.path, "train")

  @property
  def eval_logdir(self) -> str:
    return os.path.join(self.path, "eval")


@dataclasses.dataclass(frozen=True)
class Extension:
  """A run asked to train longer than its flags.txt says: the flag that sets its length, before and after."""

  flag: str  # train_steps, or epochs when --train_steps is 0
  before: int
  after: int

  def __str__(self) -> str:
    return f"--{self.flag}={self.before} to {self.after}"


@dataclasses.dataclass(frozen=True)
class Found:
  """What `check` found in a run directory."""

  resume: bool  # it holds a run to continue (False: a new run, or one --overwrite replaces)
  extension: Extension | None = None  # that run is asked to train longer


def event_files(logdir: str, suffix: str) -> list[str]:
  """The event files in `logdir` whose names end with `suffix` (one of the *_SUFFIX above)."""
  if not os.path.isdir(logdir):
    return []
  return sorted(os.path.join(logdir, name) for name in os.listdir(logdir) if name.endswith(suffix))


def parse_flagfile(lines: Iterable[str]) -> dict[str, str]:
  """`--name=value` lines (as `flag_file_text` writes them) as {name: value}; other lines are skipped.

  For reading a run's record, use `read_flag_file`, which refuses a damaged one.
  """
  result = {}
  for line in lines:
    name, sep, value = line.strip().partition("=")
    if name.startswith("--") and sep:
      result[name[2:]] = value
  return result


# The last line of flags.txt: how many flag lines come before it and their SHA-256, so that a line
# deleted, changed or added by hand is found (a comment to absl's --flagfile).
_SEAL = re.compile(r"^# mtl_research flags\.txt: (\d+) flags, sha256 ([0-9a-f]{64})$")


def _seal(body: str, count: int) -> str:
  return f"# mtl_research flags.txt: {count} flags, sha256 {hashlib.sha256(body.encode('utf-8')).hexdigest()}\n"


def flag_file_text(values: Mapping[str, str]) -> str:
  """A flagfile with one explicit `--name=value` line per flag, sorted, and the seal line."""
  body = "".join(f"--{name}={values[name]}\n" for name in sorted(values))
  return body + _seal(body, len(values))


def read_flag_file(path: str) -> dict[str, str]:
  """The flags a run recorded in `path` (its flags.txt); UserError naming the file if it is damaged.

  The record is the only account of how the run's checkpoints were trained, so
  it is never repaired from the current flags: a file that is not UTF-8, holds
  a line that is not `--flag=value`, holds no flag, or whose seal line does not
  match its flag lines (one deleted, changed or added by hand) is refused. A
  file without a seal, written before this version, is read as it is.
  """
  advice = "restore it, or pass --overwrite to train the run again from scratch"
  try:
    with open(path, "rb") as handle:
      text = handle.read().decode("utf-8")
  except UnicodeDecodeError:
    raise UserError(f"{path} is damaged: it is not UTF-8 text; {advice}.") from None
  except OSError as error:
    raise UserError(f"{path} cannot be read: {error.strerror}.") from None
  lines = text.splitlines(keepends=True)
  seal = _SEAL.match(lines[-1].rstrip("\n")) if lines else None
  body_lines = lines[:-1] if seal else lines
  values = {}
  for number, line in enumerate(body_lines, 1):
    name, sep, value = line.rstrip("\n").partition("=")
    if not (name.startswith("--") and len(name) > 2 and sep):
      raise UserError(f"{path} is damaged: line {number} is not a --flag=value line ({line.strip()[:60]!r}); {advice}.")
    values[name[2:]] = value
  if not values:
    raise UserError(f"{path} is damaged: it records no flag; {advice}.")
  body = "".join(body_lines)
  if seal and _seal(body, len(body_lines)) != lines[-1].rstrip("\n") + "\n":
    raise UserError(
      f"{path} is damaged: its flag lines do not match the seal written with them (a line was deleted, changed or "
      f"added since); {advice}."
    )
  return values


def differences(
  old: Mapping[str, str], new: Mapping[str, str], ignore: Iterable[str], defaults: Mapping[str, str]
) -> list[str]:
  """Human-readable differences between two flag sets, ignoring `ignore`.

  A flag missing from one side counts as its default, so that a run written
  before a new component (and its flags) existed can still be resumed.
  """
  ignored = set(ignore)
  diffs = []
  for name in sorted(set(old) | set(new)):
    before, after = old.get(name, defaults.get(name)), new.get(name, defaults.get(name))
    if name not in ignored and before != after:
      diffs.append(f"--{name}={before} there, {after} now")
  return diffs


def run_entries(path: str) -> list[str]:
  """The names in directory `path` that belong to the run; [] if it is missing.

  Not a sweep's SWEEP_FILES, nor the trainer's LOCK_FILE, nor the temporary
  file of a write a kill interrupted (a run killed while writing flags.txt has
  only that).
  """
  if not os.path.isdir(path):
    return []
  return sorted(
    name for name in os.listdir(path) if name not in SWEEP_FILES and name != LOCK_FILE and not is_partial_write(name)
  )


def check(
  path: str,
  flag_values: Mapping[str, str],
  overwrite: bool,
  operational: Iterable[str] = (),
  defaults: Mapping[str, str] | None = None,
  length: tuple[str, int] | None = None,
  length_users: Sequence[str] = (),
) -> Found:
  """Read-only: raises UserError if `path` cannot hold this run; says whether it holds one to resume.

  A directory that is missing, empty or holds only a sweep's SWEEP_FILES is a new run.
  `length`: the flag that sets the run's length and its requested value. A
  smaller value than flags.txt records is refused; a larger one is an
  extension (`Found.extension`), refused with one sentence naming
  `length_users` if there are any: the flags whose components declare that
  their rule reads the run's length.
  """
  run = RunDir(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"--run_dir={path} exists and is not a directory.")
  if not run_entries(path):
    return Found(resume=False)
  if not os.path.isfile(run.flags_file):
    raise UserError(
      f"--run_dir={path} is not empty and has no {FLAGS_FILE}, so it is not a run directory; choose another --run_dir."
    )
  if overwrite:
    return Found(resume=False)
  recorded = read_flag_file(run.flags_file)
  ignored = {*operational, *([length[0]] if length else [])}
  diffs = differences(recorded, flag_values, ignored, defaults or {})
  # The recorded text itself, never a default in its place: a missing line says nothing of the length.
  before = _positive_int(recorded.get(length[0])) if length else None
  if length and before is None:  # missing, or --train_steps=0: --epochs set that run's length, in other units
    diffs.insert(0, f"--{length[0]}={recorded.get(length[0], '(missing)')} there, {length[1]} now")
  if diffs:
    raise UserError(
      f"--run_dir={path} was written with different flags ({'; '.join(diffs[:3])}); "
      "pass --overwrite to replace it or choose another --run_dir."
    )
  if length is None or before is None or length[1] == before:
    return Found(resume=True)
  flag, after = length
  if after < before:
    raise UserError(
      f"--{flag}={after} is less than the --{flag}={before} that --run_dir={path} was written with, and a "
      f"run cannot be shortened; pass --{flag}={before} or more, or --overwrite to replace it."
    )
  extension = Extension(flag, before, after)
  if length_users:
    uses = "uses" if len(length_users) == 1 else "use"
    raise UserError(
      f"{' and '.join(length_users)} {uses} the run length, so --run_dir={path} cannot be extended from "
      f"{extension}; choose another --run_dir or pass --overwrite."
    )
  return Found(resume=True, extension=extension)


def _positive_int(text: str | None) -> int | None:
  try:
    value = int(text) if text is not None else 0
  except ValueError:
    return None
  return value if value > 0 else None


def read_preprocessing(path: str) -> Preprocessing | None:
  """The fitted preprocessing saved in run dir `path`, if any (UserError naming the file if unreadable)."""
  from mtl_research.data import preprocessing as preprocessing_lib  # pylint: disable=g-import-not-at-top

  file = RunDir(path).preprocessing_file
  return preprocessing_lib.read(file) if os.path.isfile(file) else None


def prepare(
  path: str,
  flag_values: Mapping[str, str],
  overwrite: bool,
  operational: Iterable[str] = (),
  defaults: Mapping[str, str] | None = None,
  preprocessing: Preprocessing | None = None,
  length: tuple[str, int] | None = None,
  length_users: Sequence[str] = (),
) -> RunDir:
  """Creates or reopens a run directory; refuses one written with other flags (see `check`).

  Raises UserError before changing anything on disk when the directory cannot
  be used. With `overwrite`, an existing run is deleted first: everything in
  the directory but a sweep's SWEEP_FILES and the trainer's LOCK_FILE. An
  accepted extension renames metrics.json (and removes the summarizer's final
  metrics) before flags.txt records the new length: a crash in between leaves
  a run that the same command extends again, never a "finished" run with a
  stale result.
  """
  run = RunDir(path)
  found = check(path, flag_values, overwrite, operational, defaults, length, length_users)
  try:
    if overwrite:  # flags.txt last: a directory left half-deleted is still a run directory
      for name in sorted(run_entries(path), key=lambda name: name == FLAGS_FILE):
        entry = os.path.join(path, name)
        if os.path.isdir(entry) and not os.path.islink(entry):
          shutil.rmtree(entry)
        else:
          os.unlink(entry)
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
      if is_partial_write(name):
        os.unlink(os.path.join(path, name))
    if found.extension is not None:
      if os.path.exists(run.metrics_file):  # kept, but no longer saying "finished"
        os.replace(run.metrics_file, os.path.join(path, METRICS_BEFORE_EXTENSION_FILE))
      for name in event_files(run.eval_logdir, FINAL_METRICS_SUFFIX):
        os.unlink(name)
    write_text_atomic(run.flags_file, flag_file_text(flag_values))
    if preprocessing is not None:
      from mtl_research.data import preprocessing as preprocessing_lib  # pylint: disable=g-import-not-at-top

      preprocessing_lib.write(run.preprocessing_file, preprocessing)
  except OSError as error:
    raise UserError(f"--run_dir={path} cannot be written: {error.strerror}.") from None
  return run

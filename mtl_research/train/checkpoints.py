"""A run's checkpoints: periodic ones in ckpt/, the selected one in ckpt/best/.

Restores never trust a single file. The candidates are found by listing the
directory (not only through TensorFlow's `checkpoint` state file, which can be
damaged too), newest first; one that cannot be read (truncated, checksum
mismatch, missing shard, not matching the model) is reported in a warning and
the previous one is tried. Checkpoints are read only through
`tf.train.Checkpoint`.

The trainer and mtl-evaluate restore through the same calls (`Checkpoints`'s
`restore_best`, then `restore_latest`): `restore_model` says which model it
restored (`Restored`), the selected one, the last one, the newest one of an
unfinished run, or the newest readable one because the selected one cannot be
read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import dataclasses
import gc
import logging
import os
import re

import tensorflow as tf

from mtl_research.errors import UserError
from mtl_research.files import write_text_atomic
from mtl_research.train.run_dir import RunDir

PREFIX = "ckpt"
BEST_PREFIX = "best"
_KEEP = 3
# Eager saves before the write is traced: the trace pays back after about 7 (class docstring).
_EAGER_SAVES = 8


def candidates(directory: str, prefix: str = PREFIX) -> list[tuple[int, str]]:
  """[(number, path prefix)] of the checkpoints in `directory` with an index file, newest first."""
  if not os.path.isdir(directory):
    return []
  pattern = re.compile(rf"{re.escape(prefix)}-(\d+)\.index")
  found = [
    (int(match.group(1)), os.path.join(directory, name[: -len(".index")]))
    for name in os.listdir(directory)
    if (match := pattern.fullmatch(name))
  ]
  return sorted(found, reverse=True)


def _reason(error: Exception) -> str:
  lines = [line for line in str(error).splitlines() if line.strip()]
  text = lines[-1] if lines else type(error).__name__
  return text[:200]


def restore_first_readable(
  checkpoint: tf.train.Checkpoint, paths: list[str], partial: bool, warn: Callable[[str], None]
) -> str | None:
  """Restores the first of `paths` that reads completely; returns it (None if none does).

  A failed attempt may already have assigned some variables, which the next
  attempt assigns again: every attempt asserts that all of `checkpoint`'s
  objects were matched. Each failure is one warning line through `warn`.
  """
  for number, path in enumerate(paths, 1):
    try:
      status = checkpoint.restore(path)
      if partial:
        status = status.expect_partial()
      status.assert_existing_objects_matched()
      return path
    # TensorFlow reports damage with many types (OpError, IndexError, ValueError, AssertionError).
    except Exception as error:  # pylint: disable=broad-except
      then = "trying the previous one" if number < len(paths) else "skipped"
      warn(
        f"warning: checkpoint {path} cannot be read or does not match this run's model and balancer "
        f"({_reason(error)}); {then}."
      )
  return None


@contextlib.contextmanager
def _tensorflow_warnings_off() -> Iterator[None]:
  logger = tf.get_logger()
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _write_state_file(directory: str, latest: str, kept: list[str]) -> None:
  """TensorFlow's `checkpoint` state file (a CheckpointState text proto), as CheckpointManager writes it.

  Written by hand: `tf.compat.v1.train.update_checkpoint_state` logs a deprecation
  warning on every call. Paths are relative to `directory`, oldest first.
  """
  names = [os.path.basename(path) for path in kept]
  lines = [f'model_checkpoint_path: "{os.path.basename(latest)}"']
  lines += [f'all_model_checkpoint_paths: "{name}"' for name in names]
  write_text_atomic(os.path.join(directory, "checkpoint"), "\n".join(lines) + "\n")


class Checkpoints:
  """Saves and restores the periodic and the selected checkpoints of one run.

  After its first `_EAGER_SAVES` saves, a run saves with one traced function
  (`tf.train.Checkpoint.write` inside `tf.function`): written eagerly, a
  checkpoint of the default model takes about 9 ms (22 ms the first time),
  nearly all of it Python walking the object graph, which made checkpoints a
  large share of a long XLA run; traced, 2 ms, but the trace costs about 65 ms
  (measured on 2 cores). The first saves are eager because most runs of a sweep
  save only a few times, and a pack of 25 runs paid 25 traces. The
  files are TensorFlow's usual ones; the directory keeps the newest `keep`
  checkpoints and TensorFlow's `checkpoint` state file, as
  `tf.train.CheckpointManager` would.
  """

  def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, best_directory: str, warn: Callable[[str], None]):
    self.checkpoint = checkpoint
    self.directory = directory
    self.best_directory = best_directory
    self.warn = warn
    self._write: tf.types.experimental.GenericFunction | None = None
    self._saves = 0

  def _save(self, directory: str, prefix: str, step: int, keep: int) -> str:
    """Writes `<directory>/<prefix>-<step>`, keeps the newest `keep`, updates the state file."""
    # Created before the first write, so that every checkpoint holds the same objects as TF's own saves.
    _ = self.checkpoint.save_counter
    # Created now, not earlier: the run directory may be cleared (--overwrite) before the first save.
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, f"{prefix}-{step}")
    self._saves += 1
    if self._saves <= _EAGER_SAVES:
      self.checkpoint.write(path)
    else:
      if self._write is None:
        self._write = tf.function(self.checkpoint.write, autograph=False)
      self._write(tf.constant(path))
    kept = [found for _, found in candidates(directory, prefix)]
    for old in kept[keep:]:
      for name in tf.io.gfile.glob(f"{old}.index") + tf.io.gfile.glob(f"{old}.data-*"):
        tf.io.gfile.remove(name)
    _write_state_file(directory, path, list(reversed(kept[:keep])))
    return path

  def save(self, step: int) -> str:
    """Saves a periodic checkpoint numbered `step` (the newest 3 are kept); returns its path."""
    return self._save(self.directory, PREFIX, step, _KEEP)

  def save_unless_saved(self, step: int) -> str:
    """The path of the periodic checkpoint of `step`, saved now unless it already exists."""
    found = dict(candidates(self.directory))
    return found[step] if step in found else self.save(step)

  def save_best(self, step: int) -> str:
    """Saves the selected checkpoint (replacing the previous one); returns its path."""
    return self._save(self.best_directory, BEST_PREFIX, step, 1)

  @property
  def latest_number(self) -> int | None:
    """The step of the newest periodic checkpoint on disk, or None."""
    found = candidates(self.directory)
    return found[0][0] if found else None

  def restore_latest(
    self,
    checkpoint: tf.train.Checkpoint | None = None,
    directory: str | None = None,
    advice: str = "pass --overwrite to start the run again",
  ) -> str | None:
    """Restores the newest readable periodic checkpoint into `checkpoint` (default: all).

    Reads `directory` (default: where this run saves). Returns the path, or
    None if there is no checkpoint. Raises UserError if there are some and
    none can be read, ending with `advice`.
    """
    directory = directory or self.directory
    paths = [path for _, path in candidates(directory)]
    if not paths:
      return None
    restored = restore_first_readable(checkpoint or self.checkpoint, paths, checkpoint is not None, self.warn)
    if restored is None:
      raise UserError(
        f"no checkpoint in {directory} can be read and matches this run (tried {len(paths)}: damaged, "
        f"or written by another version of mtl_research); {advice}."
      )
    return restored

  def best(self) -> tuple[int, str] | None:
    """(step, path) of the newest selected checkpoint on disk, if any."""
    found = candidates(self.best_directory, BEST_PREFIX)
    return found[0] if found else None

  def restore_best(self, checkpoint: tf.train.Checkpoint) -> str | None:
    """Restores the selected checkpoint into `checkpoint` (partial); None if unreadable or absent."""
    paths = [path for _, path in candidates(self.best_directory, BEST_PREFIX)]
    return restore_first_readable(checkpoint, paths, True, self.warn) if paths else None


# What `restore_model` restored: its `Restored.kind`.
SELECTED = "selected"  # ckpt/best of a finished run: the checkpoint whose metrics metrics.json reports
LAST = "last"  # the last checkpoint of a finished run that selects none (--selection=last, or no ckpt/best)
UNFINISHED = "unfinished"  # the newest checkpoint of a run that has not finished: none is selected yet
FALLBACK = "fallback"  # the newest readable periodic checkpoint: ckpt/best of a finished run cannot be read
LAST_SELECTION = "last"  # --selection=last: the run reports its last step


@dataclasses.dataclass(frozen=True)
class Restored:
  """Which checkpoint `restore_model` restored, and why that one."""

  path: str
  step: int
  kind: str  # SELECTED, LAST, UNFINISHED or FALLBACK
  selection: str  # the run's --selection
  skipped: tuple[str, ...] = ()  # checkpoints tried first that could not be read (warned about)
  run_dir: str = ""  # where `path` and `skipped` are shown from

  def describe(self) -> str:
    """e.g. "the checkpoint selected by --selection=mean_loss", "the newest checkpoint: the run is unfinished"."""
    if self.kind == SELECTED:
      return f"the checkpoint selected by --selection={self.selection}"
    reasons = {
      UNFINISHED: ["the run is unfinished"],
      LAST: ["--selection=last" if self.selection == LAST_SELECTION else "the run selected none"],
    }.get(self.kind, [])
    if self.skipped:
      reasons.append(f"{', '.join(self._short(path) for path in self.skipped)} cannot be read")
      which = "the newest readable checkpoint"
    else:
      which = "the last checkpoint" if self.kind == LAST else "the newest checkpoint"
    return f"{which}: {'; '.join(reasons)}"

  def _short(self, path: str) -> str:
    """`path` from the run directory on: ckpt/best/best-40, ckpt/ckpt-40."""
    return os.path.relpath(path, self.run_dir) if self.run_dir else path

  def record(self) -> dict:
    """As a results file records it: {"step", "kind", "path"} (and "skipped"), paths from the run directory on."""
    record = {"step": self.step, "kind": self.kind, "path": self._short(self.path), "selection": self.selection}
    if self.skipped:
      record["skipped"] = [self._short(path) for path in self.skipped]
    return record


def restore_model(
  model: tf.Module, run_dir: str, warn: Callable[[str], None], selection: str, finished: bool
) -> Restored:
  """Restores the weights of `model` (built) from run directory `run_dir`; says which checkpoint it read.

  As the trainer chooses the model whose metrics metrics.json reports: for a
  `finished` run that selects (`selection` is not "last"), the selected
  checkpoint (ckpt/best/), else, or when it cannot be read, the newest readable
  periodic one in ckpt/ (an unfinished run has selected none yet). The same
  `Checkpoints` calls as the trainer's: candidates are listed from the
  directories, not from TensorFlow's `checkpoint` state file, and each one that
  cannot be read or does not match `model` is reported through `warn` before
  the next is tried. Only the model is read (optimizer and balancer state are
  left in the file). Raises UserError, naming the run and its checkpoint
  directory, if there is no checkpoint or none can be read.
  """
  # A restore that fails part-way leaves TensorFlow's bookkeeping on the Checkpoint object, which
  # logs every value of the file it did not restore when it is deleted (dozens of lines after the
  # one warning that says it all): the object lives and dies here, with TensorFlow's warnings off.
  with _tensorflow_warnings_off():
    try:
      restored, message = _restore_model(model, run_dir, warn, selection, finished), ""
    except UserError as error:  # its traceback holds the object too
      restored, message = None, str(error)
    gc.collect()
  if restored is None:
    raise UserError(message)
  return restored


def _restore_model(
  model: tf.Module, run_dir: str, warn: Callable[[str], None], selection: str, finished: bool
) -> Restored:
  run = RunDir(run_dir)
  checkpoint = tf.train.Checkpoint(model=model)
  saved = Checkpoints(checkpoint, run.checkpoint_dir, run.best_checkpoint_dir, warn)
  selects = finished and selection != LAST_SELECTION
  best = candidates(run.best_checkpoint_dir, BEST_PREFIX) if selects else []
  if best:
    path = saved.restore_best(checkpoint)
    if path is not None:
      step, skipped = _number_and_skipped(best, path)
      return Restored(path, step, SELECTED, selection, skipped, run_dir)
  periodic = candidates(run.checkpoint_dir)
  advice = f"--run_dir={run_dir} cannot be evaluated or exported without one"
  path = saved.restore_latest(checkpoint, advice=advice)
  if path is None:
    readable = " that can be read" if best else ""
    raise UserError(f"--run_dir={run_dir} has no checkpoint{readable} in {run.checkpoint_dir}.")
  step, skipped = _number_and_skipped(periodic, path)
  kind = FALLBACK if best else LAST if finished else UNFINISHED
  return Restored(path, step, kind, selection, tuple(path for _, path in best) + skipped, run_dir)


def _number_and_skipped(found: list[tuple[int, str]], restored: str) -> tuple[int, tuple[str, ...]]:
  """The number of checkpoint `restored` among `found` (newest first), and the paths tried before it."""
  index = [path for _, path in found].index(restored)
  return found[index][0], tuple(path for _, path in found[:index])

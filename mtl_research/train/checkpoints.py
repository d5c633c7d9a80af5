"""A run's checkpoints: periodic ones in ckpt/, the selected one in ckpt/best/.

Restores never trust a single file. The candidates are found by listing the
directory (not only through TensorFlow's `checkpoint` state file, which can be
damaged too), newest first; one that cannot be read (truncated, checksum
mismatch, missing shard, not matching the model) is reported in a warning and
the previous one is tried. Checkpoints are read only through
`tf.train.Checkpoint`.
"""

from __future__ import annotations

from collections.abc import Callable
import os
import re

import tensorflow as tf

from mtl_research.errors import UserError
from mtl_research.files import write_text_atomic
from mtl_research.train.run_dir import RunDir

PREFIX = "ckpt"
BEST_PREFIX = "best"
_KEEP = 3


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
  objects were matched.
  """
  for path in paths:
    try:
      status = checkpoint.restore(path)
      if partial:
        status = status.expect_partial()
      status.assert_existing_objects_matched()
      return path
    # TensorFlow reports damage with many types (OpError, IndexError, ValueError, AssertionError).
    except Exception as error:  # pylint: disable=broad-except
      warn(
        f"warning: checkpoint {path} cannot be read or does not match this run's model and balancer "
        f"({_reason(error)}); trying the previous one."
      )
  return None


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

  A save runs one traced function (`tf.train.Checkpoint.write` inside
  `tf.function`, traced at the first save): written eagerly, a checkpoint of
  the default model took about 25 ms, nearly all of it Python walking the
  object graph, which made checkpoints a large share of a long XLA run. The
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

  def _save(self, directory: str, prefix: str, step: int, keep: int) -> str:
    """Writes `<directory>/<prefix>-<step>`, keeps the newest `keep`, updates the state file."""
    if self._write is None:
      # Created before tracing, so that every checkpoint holds the same objects as TF's own saves.
      _ = self.checkpoint.save_counter
      self._write = tf.function(self.checkpoint.write, autograph=False)
    # Created now, not earlier: the run directory may be cleared (--overwrite) before the first save.
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, f"{prefix}-{step}")
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

  def restore_latest(self, checkpoint: tf.train.Checkpoint | None = None, directory: str | None = None) -> str | None:
    """Restores the newest readable periodic checkpoint into `checkpoint` (default: all).

    Reads `directory` (default: where this run saves). Returns the path, or
    None if there is no checkpoint. Raises UserError if there are some and
    none can be read.
    """
    directory = directory or self.directory
    paths = [path for _, path in candidates(directory)]
    if not paths:
      return None
    restored = restore_first_readable(checkpoint or self.checkpoint, paths, checkpoint is not None, self.warn)
    if restored is None:
      raise UserError(
        f"no checkpoint in {directory} can be read and matches this run (tried {len(paths)}: damaged, "
        "or written by another version of mtl_research); pass --overwrite to start the run again."
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


def restore_model(model: tf.Module, run_dir: str, warn: Callable[[str], None]) -> str:
  """Restores the weights of `model` (built) from run directory `run_dir`; returns the checkpoint read.

  The selected checkpoint (ckpt/best/) first, whose metrics metrics.json
  reports; then the periodic ones in ckpt/, newest first. Candidates are
  listed from the directories, not from TensorFlow's `checkpoint` state file;
  each one that cannot be read or does not match `model` is reported through
  `warn`, and the next is tried. Only the model is read (optimizer and
  balancer state are left in the file). Raises UserError if there is no
  checkpoint or none can be read.
  """
  run = RunDir(run_dir)
  paths = [path for _, path in candidates(run.best_checkpoint_dir, BEST_PREFIX)] + [
    path for _, path in candidates(run.checkpoint_dir)
  ]
  if not paths:
    raise UserError(f"--run_dir={run_dir} has no checkpoint in {run.checkpoint_dir}.")
  restored = restore_first_readable(tf.train.Checkpoint(model=model), paths, True, warn)
  if restored is None:
    raise UserError(
      f"no checkpoint of --run_dir={run_dir} can be read and matches its model (tried {len(paths)} "
      f"in {run.checkpoint_dir} and {run.best_checkpoint_dir}: damaged, or written by another "
      "version of mtl_research)."
    )
  return restored

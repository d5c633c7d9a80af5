"""A run's checkpoints: periodic ones in ckpt/, the selected one in ckpt/best/.

Restores never trust a single file. The candidates are found by listing the
directory (not only through TensorFlow's `checkpoint` state file, which can be
damaged too), newest first; one that cannot be read (truncated, checksum
mismatch, missing shard, not matching the model) is reported in a warning and
the previous one is tried. Checkpoints are read only through
`tf.train.Checkpoint`.
"""

from __future__ import annotations

import os
import re
from typing import Callable

import tensorflow as tf

from mtl_research.errors import UserError

PREFIX = "ckpt"
BEST_PREFIX = "best"
_KEEP = 3


def candidates(directory: str, prefix: str = PREFIX) -> list[tuple[int, str]]:
  """[(number, path prefix)] of the checkpoints in `directory` with an index file, newest first."""
  if not os.path.isdir(directory):
    return []
  pattern = re.compile(rf"{re.escape(prefix)}-(\d+)\.index")
  found = [(int(match.group(1)), os.path.join(directory, name[:-len(".index")]))
           for name in os.listdir(directory) if (match := pattern.fullmatch(name))]
  return sorted(found, reverse=True)


def _reason(error: Exception) -> str:
  lines = [line for line in str(error).splitlines() if line.strip()]
  text = lines[-1] if lines else type(error).__name__
  return text[:200]


def restore_first_readable(checkpoint: tf.train.Checkpoint, paths: list[str], partial: bool,
                           warn: Callable[[str], None]) -> str | None:
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
      warn(f"warning: checkpoint {path} cannot be read or does not match this run's model and balancer "
           f"({_reason(error)}); trying the previous one.")
  return None


class Checkpoints:
  """Saves and restores the periodic and the selected checkpoints of one run."""

  def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, best_directory: str,
               warn: Callable[[str], None]):
    self.checkpoint = checkpoint
    self.directory = directory
    self.best_directory = best_directory
    self.warn = warn
    # Created at the first save: a manager reads the directory's state file when
    # created, and the run directory may still be cleared (--overwrite) before that.
    self._managers: dict[str, tf.train.CheckpointManager] = {}

  def _manager(self, directory: str, prefix: str, keep: int) -> tf.train.CheckpointManager:
    if directory not in self._managers:
      self._managers[directory] = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep,
                                                             checkpoint_name=prefix)
    return self._managers[directory]

  def save(self, step: int) -> str:
    """Saves a periodic checkpoint numbered `step` (the newest 3 are kept); returns its path."""
    return self._manager(self.directory, PREFIX, _KEEP).save(checkpoint_number=step)

  def save_unless_saved(self, step: int) -> str:
    """The path of the periodic checkpoint of `step`, saved now unless it already exists."""
    found = dict(candidates(self.directory))
    return found[step] if step in found else self.save(step)

  def save_best(self, step: int) -> str:
    """Saves the selected checkpoint (replacing the previous one); returns its path."""
    return self._manager(self.best_directory, BEST_PREFIX, 1).save(checkpoint_number=step)

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
      raise UserError(f"no checkpoint in {directory} can be read and matches this run (tried {len(paths)}: damaged, "
                      "or written by another version of mtl_research); pass --overwrite to start the run again.")
    return restored

  def best(self) -> tuple[int, str] | None:
    """(step, path) of the newest selected checkpoint on disk, if any."""
    found = candidates(self.best_directory, BEST_PREFIX)
    return found[0] if found else None

  def restore_best(self, checkpoint: tf.train.Checkpoint) -> str | None:
    """Restores the selected checkpoint into `checkpoint` (partial); None if unreadable or absent."""
    paths = [path for _, path in candidates(self.best_directory, BEST_PREFIX)]
    return restore_first_readable(checkpoint, paths, True, self.warn) if paths else None

"""What a run writes: TensorBoard scalars with an explicit step, and atomic files."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf


class ScalarWriter:
  """TensorBoard scalars under one log directory, always written at a given step."""

  def __init__(self, logdir: str):
    self._writer = tf.summary.create_file_writer(logdir)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    with self._writer.as_default(step=step):
      for tag, value in scalars.items():
        tf.summary.scalar(tag, value)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def per_task(prefix: str, task_names: Sequence[str], values) -> dict[str, float]:
  """{"<prefix>/<task>": value} for a [T] vector."""
  values = np.asarray(values).reshape(-1)
  return {f"{prefix}/{name}": float(v) for name, v in zip(task_names, values)}


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` to a temporary file beside `path`, then renames it over `path`.

  A crash leaves either the old file or the new one, never half of one.
  """
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
      handle.write(text)
      handle.flush()
      os.fsync(handle.fileno())
    # mkstemp creates 0600 files; results must be readable like any other file.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_json_atomic(path: str, obj: Any) -> None:
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")

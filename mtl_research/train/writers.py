"""TensorBoard scalars with an explicit step (atomic result files: mtl_research/files.py)."""

from __future__ import annotations

from typing import Mapping, Sequence

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

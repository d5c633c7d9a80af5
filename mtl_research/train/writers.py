"""TensorBoard scalars with an explicit step (atomic result files: mtl_research/files.py)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf


class ScalarWriter:
  """TensorBoard scalars under one log directory, always written at a given step.

  All scalars of a call are written by one traced function per set of tags:
  eager `tf.summary.scalar` costs about 1 ms a tag, which made the summaries
  of a 20,000-step run take longer than its training steps under XLA.
  """

  def __init__(self, logdir: str):
    self._writer = tf.summary.create_file_writer(logdir)
    self._writes: dict[tuple[str, ...], tf.types.experimental.GenericFunction] = {}

  def _write_function(self, tags: tuple[str, ...]):
    if tags not in self._writes:
      def write_all(step: tf.Tensor, values: tf.Tensor) -> None:
        with self._writer.as_default(step=step):
          for i, tag in enumerate(tags):
            tf.summary.scalar(tag, values[i])

      self._writes[tags] = tf.function(write_all, autograph=False)
    return self._writes[tags]

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    tags = tuple(scalars)
    values = tf.constant([float(value) for value in scalars.values()], tf.float32)
    self._write_function(tags)(tf.constant(step, tf.int64), values)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def per_task(prefix: str, task_names: Sequence[str], values) -> dict[str, float]:
  """{"<prefix>/<task>": value} for a [T] vector."""
  values = np.asarray(values).reshape(-1)
  return {f"{prefix}/{name}": float(v) for name, v in zip(task_names, values)}

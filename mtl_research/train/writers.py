"""TensorBoard scalars with an explicit step (atomic result files: mtl_research/files.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import time
from typing import Protocol

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from mtl_research import tags

# What `tf.summary.scalar` attaches to every value: TensorBoard's scalar plugin reads it.
_SCALAR = scalar_metadata.create_summary_metadata(display_name="", description="")
# Often enough that TensorBoard follows a run live; the trainer also flushes at every checkpoint,
# so a run killed and resumed from it loses no summary.
_FLUSH_SECONDS = 5


def _value(tag: str, value: float) -> summary_pb2.Summary.Value:
  tensor = tensor_pb2.TensorProto(
    dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(), float_val=[value]
  )
  return summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=_SCALAR)


class MetricWriter(Protocol):
  """Where the controller's actions write scalars, each at an explicit step."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None: ...

  def flush(self) -> None: ...

  def close(self) -> None: ...


class ScalarWriter:
  """TensorBoard scalars under one log directory, always written at a given step.

  The events are the ones `tf.summary.scalar` writes (float32 tensors, the
  scalar plugin's metadata), built in Python and appended by TensorBoard's
  own event-file writer, which writes on a thread of its own. TensorFlow's
  summary ops took about 1 ms a call even traced, a large share of a long run
  under XLA, where 100 training steps take 5 ms.
  """

  def __init__(self, logdir: str):
    self._writer = EventFileWriter(logdir, flush_secs=_FLUSH_SECONDS)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    summary = summary_pb2.Summary(value=[_value(tag, float(value)) for tag, value in scalars.items()])
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def flush(self) -> None:
    """Writes every pending event to the file now."""
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def per_task(prefix: str, task_names: Sequence[str], values) -> dict[str, float]:
  """{"<prefix>/<task>": value} for a [T] vector."""
  values = np.asarray(values).reshape(-1)
  return {tags.per_task(prefix, name): float(v) for name, v in zip(task_names, values)}

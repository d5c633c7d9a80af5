"""Readers of a run's TensorBoard event files: scalar series and the logged HParams values.

TensorFlow and TensorBoard are imported inside the functions, not at module
level, so reading a sweep's JSON files (collect.py) stays cheap.
"""

from __future__ import annotations

import os

from mtl_research.reports import records

SESSION_START_INFO_TAG = "_hparams_/session_start_info"
CUSTOM_SCALARS_LAYOUT_TAG = "custom_scalars__config__"


def _event_files(logdir: str) -> list[str]:
  if not os.path.isdir(logdir):
    return []
  return sorted(
    os.path.join(logdir, name)
    for name in os.listdir(logdir)
    if name.startswith("events.out.tfevents.") and os.path.isfile(os.path.join(logdir, name))
  )


def _events(logdir: str):
  for path in _event_files(logdir):
    yield from _file_events(path)


def _file_events(path: str):
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top

  for record in records.read_records(path):  # ends before a partial record (a file still being written)
    yield event_pb2.Event.FromString(record)


def run_metadata_files(logdir: str) -> list[str]:
  """The event files in `logdir` that hold nothing but a run's HParams values and custom-scalars layout.

  Earlier versions of the trainer wrote these into train/; reports/hparams.py
  removes them so that a run is one HParams session (now in eval/).
  """
  found = []
  for path in _event_files(logdir):
    tags = {value.tag for event in _file_events(path) for value in event.summary.value}
    if tags and tags <= {SESSION_START_INFO_TAG, CUSTOM_SCALARS_LAYOUT_TAG}:
      found.append(path)
  return found


def read_scalars(logdir: str, prefixes: tuple[str, ...] = ("",)) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} sorted by step, for the scalar tags of `logdir` starting with a prefix.

  Only the files directly in `logdir` are read (not its subdirectories). A step
  logged twice (a resumed run) keeps its last value.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  found: dict[str, dict[int, float]] = {}
  plugins: dict[str, str] = {}  # a summary names its plugin on its first event at least
  for event in _events(logdir):
    for value in event.summary.value:
      if value.metadata.plugin_data.plugin_name:
        plugins[value.tag] = value.metadata.plugin_data.plugin_name
      if (
        plugins.get(value.tag, "scalars") != "scalars"
        or not value.tag.startswith(prefixes)
        or not value.HasField("tensor")
      ):
        continue
      array = tf.make_ndarray(value.tensor)
      if array.size != 1 or array.dtype.kind not in "fiu":
        continue
      found.setdefault(value.tag, {})[int(event.step)] = float(array.reshape(-1)[0])
  return {tag: sorted(points.items()) for tag, points in found.items()}


def read_session_hparams(logdir: str) -> tuple[dict[str, bool | float | str], str] | None:
  """The HParams values a run logged in `logdir` (hp.hparams) and their group name, or None."""
  from tensorboard.plugins.hparams import metadata  # pylint: disable=g-import-not-at-top

  for event in _events(logdir):
    for value in event.summary.value:
      if value.tag == SESSION_START_INFO_TAG:
        info = metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
        values = {}
        for name, proto in info.hparams.items():
          kind = proto.WhichOneof("kind")
          if kind in ("bool_value", "number_value", "string_value"):
            values[name] = getattr(proto, kind)
        return values, info.group_name
  return None

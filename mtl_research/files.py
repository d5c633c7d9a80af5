"""Atomic writes of result files: a crash leaves the old file or the new one, never half.

No TensorFlow here, so that light tools (mtl-summarize reading a sweep) stay fast.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

_PARTIAL_SUFFIX = ".tmp"
# Read once, at import (single-threaded): reading it means setting it, which
# would race with files other threads create.
_UMASK = os.umask(0)
os.umask(_UMASK)


def partial_name(path: str) -> tuple[str, str]:
  """(prefix, suffix) for a temporary file or directory beside `path` that is_partial_write recognises."""
  return f".{os.path.basename(os.path.abspath(path))}.", _PARTIAL_SUFFIX


def is_partial_write(name: str) -> bool:
  """Whether file `name` is the temporary file of a write that was interrupted."""
  return name.startswith(".") and name.endswith(_PARTIAL_SUFFIX)


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes `data` to a temporary file beside `path`, then renames it over `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  prefix, suffix = partial_name(path)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
  try:
    with os.fdopen(fd, "wb") as handle:
      handle.write(data)
      handle.flush()
      os.fsync(handle.fileno())
    # mkstemp creates 0600 files; results must be readable like any other file.
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_text_atomic(path: str, text: str) -> None:
  write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes `obj` as strict JSON (RFC 8259: no NaN or Infinity; ValueError if it holds one).

  A value that is not a number must be written as null by the caller, with the
  reason beside it (`undefined_numbers` finds them): a bare NaN is rejected by
  strict parsers (browsers, jq, most languages' JSON libraries).
  """
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def undefined_numbers(obj: Any, path: str = "") -> tuple[Any, list[str]]:
  """(`obj` with every NaN or infinite float replaced by None, the dotted paths of those values).

  e.g. ({"test": {"y": {"r2": None}}}, ["test.y.r2"]) for {"test": {"y": {"r2": nan}}}.
  """
  if isinstance(obj, float) and not math.isfinite(obj):
    return None, [path]
  if isinstance(obj, dict):
    result, paths = {}, []
    for key, value in obj.items():
      result[key], found = undefined_numbers(value, f"{path}.{key}" if path else str(key))
      paths += found
    return result, paths
  if isinstance(obj, (list, tuple)):
    items = [undefined_numbers(value, f"{path}[{index}]") for index, value in enumerate(obj)]
    return [item for item, _ in items], [found for _, paths in items for found in paths]
  return obj, []

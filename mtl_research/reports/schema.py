"""The files the reports read back, one reader each, every one checked against its schema when read.

  read_sweep_file    SWEEP_DIR/sweep.json     the sweep's definition (sweep/plan.py: definition())
  read_run_file      runs/<name>/run.json     which run of the sweep this is (plan.py: RunSpec.to_json())
  read_metrics_file  runs/<name>/metrics.json what the run measured (train/loop.py: Loop._finish)
  read_run_flags     runs/<name>/flags.txt    the run's flags (train/run_dir.py: read_flag_file, sealed)

A reader checks the type of every field the reports use (and of the trainer's
other fields, when present), and raises UnreadableFile naming the file and the
field path, e.g. `runs/x/metrics.json: test.y.mse is "abc", not a number`. So
a damaged or hand-edited file is never half read into a table: the run is
skipped as unreadable (collect.py), or, for sweep.json, the sweep is refused.

Numbers: a metric that is not defined is JSON null (the trainer gives the
reason in metrics.json's "undefined"). Versions of the trainer before strict
JSON wrote such a value as a bare NaN or Infinity; it is read as null, what the
trainer now writes for it. Integers (seeds, steps) must be JSON integers: not
true, 1.0 or "1".
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import json
import math
import os
from typing import Any

from mtl_research.errors import UserError
from mtl_research.train.run_dir import read_flag_file


class UnreadableFile(UserError):
  """A file the reports read is missing, damaged or not of its schema: `path`, and what is wrong in it."""

  def __init__(self, path: str, detail: str) -> None:
    self.path = path
    self.detail = detail.rstrip(".")
    super().__init__(f"{path}: {self.detail}.")

  def relative_to(self, directory: str) -> str:
    """The message with the file named relative to `directory` (a run's, in the notes of a table)."""
    return f"{os.path.relpath(self.path, directory)}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """run.json: which run of the sweep a run directory holds."""

  name: str
  balancer: str
  seed: int
  grid: Mapping[str, str]  # swept flag -> value text
  single_task: str | None


class _Bad(Exception):
  """A field that is not of its schema: where it is, and the sentence's end."""

  def __init__(self, where: str, detail: str) -> None:
    super().__init__(where, detail)
    self.where = where
    self.detail = detail


# Reading JSON text.


class _DuplicateKey(ValueError):
  pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
  result: dict[str, Any] = {}
  for key, value in pairs:
    if key in result:
      raise _DuplicateKey(key)
    result[key] = value
  return result


def _load(path: str) -> Any:
  """The JSON document in `path`; UnreadableFile if it cannot be read, is empty, not UTF-8 or not JSON."""
  try:
    with open(path, "rb") as handle:
      data = handle.read()
  except OSError as error:
    raise UnreadableFile(path, f"it cannot be read ({error.strerror})") from None
  if not data.strip():
    raise UnreadableFile(path, "it is empty")
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as error:
    raise UnreadableFile(path, f"it is not UTF-8 text (byte {error.start})") from None
  try:
    return json.loads(text, object_pairs_hook=_unique_keys)
  except _DuplicateKey as error:
    raise UnreadableFile(path, f"one of its objects names {json.dumps(error.args[0])} twice") from None
  except json.JSONDecodeError as error:
    # Cut off (a copy or a write interrupted): the error is at the end, or in a string never closed.
    if error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string"):
      end = text.rstrip().count("\n") + 1
      raise UnreadableFile(path, f"it ends at line {end} before its JSON does (truncated)") from None
    raise UnreadableFile(
      path, f"it is not valid JSON ({error.msg}: line {error.lineno}, column {error.colno})"
    ) from None


def _checked(path: str, check, document: Any):
  try:
    return check(document)
  except _Bad as bad:
    where = bad.where or "the document"
    raise UnreadableFile(path, f"{where} {bad.detail}") from None


# The field checks: each returns the value (normalized) or raises _Bad naming the field.


def _show(value: Any) -> str:
  if isinstance(value, bool) or value is None:
    return json.dumps(value)
  if isinstance(value, float) and not math.isfinite(value):
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
  if isinstance(value, (int, float)):
    return repr(value)
  if isinstance(value, str):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:36] + '…"'
  return "a list" if isinstance(value, list) else "an object"


def _wrong(where: str, value: Any, expected: str) -> _Bad:
  return _Bad(where, f"is {_show(value)}, not {expected}")


def _join(where: str, key: str) -> str:
  return f"{where}.{key}" if where else key


def _object(value: Any, where: str) -> dict[str, Any]:
  if not isinstance(value, dict):
    raise _wrong(where, value, "an object")
  return value


def _field(document: Mapping[str, Any], key: str, where: str = "") -> Any:
  if key not in document:
    raise _Bad(_join(where, key), "is missing")
  return document[key]


def _string(value: Any, where: str, empty: bool = False) -> str:
  if not isinstance(value, str):
    raise _wrong(where, value, "a string")
  if not value and not empty:
    raise _Bad(where, "is empty")
  return value


def _integer(value: Any, where: str, minimum: int | None = None) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise _wrong(where, value, "an integer")
  if minimum is not None and value < minimum:
    raise _wrong(where, value, f"an integer of at least {minimum}")
  return value


def _number_or_null(value: Any, where: str) -> float | None:
  """A metric: a number, or None for null (undefined) and for a bare NaN or Infinity of older versions."""
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise _wrong(where, value, "a number or null")
  return float(value) if math.isfinite(value) else None


def _string_or_null(value: Any, where: str) -> str | None:
  return None if value is None else _string(value, where, empty=True) or None


def _list_of(value: Any, where: str, item) -> list:
  if not isinstance(value, list):
    raise _wrong(where, value, "a list")
  return [item(element, f"{where}[{index}]") for index, element in enumerate(value)]


def _mapping_of(value: Any, where: str, item, nonempty: str | None = None) -> dict:
  result = {key: item(element, _join(where, key)) for key, element in _object(value, where).items()}
  if nonempty and not result:
    raise _Bad(where, f"has no {nonempty}")
  return result


def _grid_value(value: Any, where: str) -> str:
  """A grid value as its flag text: run.json and sweep.json hold text; a plain number is read as its text."""
  if isinstance(value, str):
    return _string(value, where)
  if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
    return str(value)
  raise _wrong(where, value, "a flag value (a string)")


# sweep.json.


def _sweep(document: Any) -> dict[str, Any]:
  document = _object(document, "")
  spec = {
    "balancers": _list_of(_field(document, "balancers"), "balancers", _string),
    "seeds": _list_of(_field(document, "seeds"), "seeds", _integer),
    "grid": _mapping_of(_field(document, "grid"), "grid", lambda values, where: _list_of(values, where, _grid_value)),
    "with_single_task": False,
  }
  if "with_single_task" in document:
    value = document["with_single_task"]
    if not isinstance(value, bool):
      raise _wrong("with_single_task", value, "true or false")
    spec["with_single_task"] = value
  if "flags" in document:
    spec["flags"] = _list_of(document["flags"], "flags", _string)
  return spec


def read_sweep_file(path: str) -> dict[str, Any]:
  """sweep.json as {"balancers": [str], "seeds": [int], "grid": {flag: [value text]}, "with_single_task": bool,
  "flags": [str] if present}; UnreadableFile naming the file and the field."""
  return _checked(path, _sweep, _load(path))


# run.json.


def read_run_file(path: str, directory_name: str) -> RunInfo:
  """run.json of run directory `directory_name`; UnreadableFile naming the file and the field.

  Its name must be the directory's: a run.json copied from another run would
  describe that run (its seed, its grid point), not this one.
  """

  def check(document: Any) -> RunInfo:
    document = _object(document, "")
    name = _string(_field(document, "name"), "name")
    if name != directory_name:
      raise _Bad("name", f"is {_show(name)}, not the name of its directory ({json.dumps(directory_name)})")
    return RunInfo(
      name=name,
      balancer=_string(_field(document, "balancer"), "balancer"),
      seed=_integer(_field(document, "seed"), "seed"),
      grid=_mapping_of(_field(document, "grid"), "grid", _grid_value),
      single_task=_string_or_null(_field(document, "single_task"), "single_task"),
    )

  return _checked(path, check, _load(path))


# metrics.json.


def _split(value: Any, where: str) -> dict[str, dict[str, float | None]]:
  """{task: {metric: number or None}}, at least one task, each with at least one metric."""
  return _mapping_of(
    value, where, lambda metrics, at: _mapping_of(metrics, at, _number_or_null, nonempty="metric"), nonempty="task"
  )


def _task_info(value: Any, where: str) -> dict[str, Any]:
  info = dict(_object(value, where))
  if "kind" in info:
    _string(info["kind"], _join(where, "kind"))
  if "num_classes" in info:
    _integer(info["num_classes"], _join(where, "num_classes"), minimum=0)
  if "classes" in info:
    _list_of(info["classes"], _join(where, "classes"), lambda item, at: item)
  return info


def _selection(value: Any, where: str) -> dict[str, Any]:
  selection = dict(_object(value, where))
  if "criterion" in selection:
    _string(selection["criterion"], _join(where, "criterion"))
  if "step" in selection:
    _integer(selection["step"], _join(where, "step"), minimum=0)
  if "val_score" in selection:
    selection["val_score"] = _number_or_null(selection["val_score"], _join(where, "val_score"))
  if "note" in selection:
    _string(selection["note"], _join(where, "note"), empty=True)
  return selection


def _metrics(document: Any) -> dict[str, Any]:
  document = _object(document, "")
  metrics = dict(document)
  metrics["test"] = _split(_field(document, "test"), "test")
  optional = {
    "val": _split,
    "weights": lambda value, where: _mapping_of(value, where, _number_or_null),
    "selected_weights": lambda value, where: _mapping_of(value, where, _number_or_null),
    "selection": _selection,
    "single_task": _string_or_null,
    "steps": lambda value, where: _integer(value, where, minimum=0),
    "balancer": _string,
    "dataset": _string,
    "tasks": lambda value, where: _mapping_of(value, where, _task_info),
    "undefined": lambda value, where: _mapping_of(value, where, lambda item, at: _string(item, at, empty=True)),
  }
  for key, check in optional.items():
    if key in document:
      metrics[key] = check(document[key], key)
  if "tasks" in metrics and set(metrics["tasks"]) != set(metrics["test"]):
    raise _Bad("test", f"has the tasks {_names(metrics['test'])}, not those of its tasks ({_names(metrics['tasks'])})")
  single_task = metrics.get("single_task")
  if single_task and set(metrics["test"]) != {single_task}:
    raise _Bad("test", f"has the tasks {_names(metrics['test'])}, not only its single_task ({single_task})")
  return metrics


def _names(mapping: Mapping[str, Any]) -> str:
  return ", ".join(sorted(mapping)) or "none"


def read_metrics_file(path: str) -> dict[str, Any]:
  """metrics.json, its numbers checked ("test" required, the trainer's other fields checked when present).

  Returns the document with every metric a float or None (undefined);
  UnreadableFile naming the file and the field.
  """
  return _checked(path, _metrics, _load(path))


# flags.txt.


def read_run_flags(path: str) -> tuple[dict[str, str], int]:
  """(the flags a run recorded in its flags.txt, its --seed); UnreadableFile if damaged or without a seed."""
  try:
    values = read_flag_file(path)
  except UnreadableFile:
    raise
  except UserError as error:  # "PATH is damaged: ...; restore it, or pass --overwrite ...", "PATH cannot be read: ..."
    detail = str(error).removeprefix(f"{path} ").split("; restore it")[0]  # the trainer's advice is not for reports
    raise UnreadableFile(path, f"it {detail}") from None
  text = values.get("seed")
  if text is None:
    raise UnreadableFile(path, "it records no --seed")
  try:
    return values, int(text)
  except ValueError:
    raise UnreadableFile(path, f"--seed={text} is not an integer") from None

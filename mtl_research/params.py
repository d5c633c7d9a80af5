"""Declared hyperparameters of pluggable components.

A balancer or dataset lists its hyperparameters as `Param`s; `mtl_research.flags`
turns each into an absl flag, and `config` hands the parsed values back to the
component by name. Adding a component therefore never touches the flag module.

Every number is finite, in float32 too: no hyperparameter here gives NaN or an
infinity a meaning (NaN would even pass every bound, as no comparison with it
is true), and one beyond float32's range becomes an infinity where training
computes. `finite` refuses them when a value is parsed; mtl_research.flags
applies the same rule to the trainer's own float flags.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from mtl_research.errors import UserError

FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max

# Kinds of values a Param can hold, and how they appear on the command line.
FLOAT = "float"
INT = "int"
BOOL = "bool"
ENUM = "enum"
FLOATS = "floats"  # "1.0,2.5"
INTS = "ints"  # "128,64"
TASK_FLOATS = "task_floats"  # "name:1.0,other:2.5"
STRING = "string"
STRINGS = "strings"  # "a,b,c" (may be empty)
NAMED_CHOICES = "named_choices"  # "name:choice,other:choice", choices from `choices`


@dataclasses.dataclass(frozen=True)
class Param:
  """One hyperparameter of a component, exposed as the flag `--<name>`."""

  name: str
  kind: str
  default: Any
  help: str
  lower: float | None = None  # inclusive lower bound for numbers
  below: float | None = None  # exclusive upper bound for numbers
  above: float | None = None  # exclusive lower bound for numbers (a temperature, a smoothing μ: > 0)
  upper: float | None = None  # inclusive upper bound for numbers
  choices: tuple[str, ...] = ()  # for ENUM

  def parse(self, raw: Any) -> Any:
    """Converts a raw flag value into its typed value, raising UserError."""
    if self.kind == FLOATS:
      return tuple(_bounded(self, _number(self, item)) for item in _items(self, raw))
    if self.kind == INTS:
      return tuple(int(_bounded(self, _integer(self, item))) for item in _items(self, raw))
    if self.kind == TASK_FLOATS:
      return parse_task_floats(self.name, raw, self.lower)
    if self.kind == STRINGS:
      return tuple(_items(self, raw)) if str(raw).strip() else ()
    if self.kind == NAMED_CHOICES:
      return _named_choices(self, raw) if str(raw).strip() else ()
    if self.kind in (FLOAT, INT):
      return _bounded(self, raw)
    return raw


def _items(param: Param, raw: str) -> list[str]:
  if not str(raw).strip():
    raise UserError(f"--{param.name} is empty; give a comma-separated list of values.")
  items = [item.strip() for item in str(raw).split(",")]
  if any(not item for item in items):
    raise UserError(f"--{param.name}={raw} has an empty item; use a comma-separated list.")
  return items


def _number(param: Param, text: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise UserError(f"--{param.name} item {text!r} is not a number.") from None


def _named_choices(param: Param, raw: str) -> tuple[tuple[str, str], ...]:
  pairs: list[tuple[str, str]] = []
  for item in _items(param, raw):
    name, sep, choice = (part.strip() for part in item.partition(":"))
    if not sep or not name or choice not in param.choices:
      raise UserError(f"--{param.name} item {item!r} is not of the form name:{'|'.join(param.choices)}.")
    if name in dict(pairs):
      raise UserError(f"--{param.name} names {name!r} twice.")
    pairs.append((name, choice))
  return tuple(pairs)


def _integer(param: Param, text: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise UserError(f"--{param.name} item {text!r} is not an integer.") from None


def is_finite(value: float) -> bool:
  """Whether `value` is a number and stays one in float32 (where models, data and optimizers compute)."""
  return math.isfinite(value) and abs(value) <= FLOAT32_MAX


def finite(flag: str, value: Any) -> Any:
  """`value`, unless it is a float that `is_finite` refuses: then UserError naming --`flag`."""
  if isinstance(value, float) and not is_finite(value):
    if math.isfinite(value):
      raise UserError(
        f"--{flag} value {value} is beyond float32's range (±{FLOAT32_MAX:.4g}), where training computes."
      )
    raise UserError(f"--{flag} value {value} is not a finite number.")
  return value


def _bounded(param: Param, value: float) -> float:
  finite(param.name, value)
  if param.lower is not None and not value >= param.lower:
    raise UserError(f"--{param.name} value {value} is below its minimum {param.lower}.")
  if param.below is not None and not value < param.below:
    raise UserError(f"--{param.name} value {value} must be below {param.below}.")
  if param.above is not None and not value > param.above:
    raise UserError(f"--{param.name} value {value} must be above {param.above}.")
  if param.upper is not None and not value <= param.upper:
    raise UserError(f"--{param.name} value {value} is above its maximum {param.upper}.")
  return value


def parse_task_floats(flag: str, raw: str, lower: float | None = 0.0) -> dict[str, float]:
  """Parses `name:value,name:value` into a dict, naming the flag on any error."""
  result: dict[str, float] = {}
  raw = str(raw).strip()
  if not raw:
    return result
  for item in raw.split(","):
    name, sep, value = item.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
      raise UserError(f"--{flag} item {item!r} is not of the form task_name:number.")
    try:
      number = float(value)
    except ValueError:
      raise UserError(f"--{flag} value {value!r} for task {name!r} is not a number.") from None
    if not is_finite(number):  # finite()'s rule, with the task named
      raise UserError(f"--{flag} value for task {name!r} must be finite.")
    if lower is not None and number < lower:
      raise UserError(f"--{flag} value {number} for task {name!r} is negative.")
    if name in result:
      raise UserError(f"--{flag} names task {name!r} twice.")
    result[name] = number
  return result


def check_task_names(flag: str, given: dict[str, Any], task_names: list[str]) -> None:
  """Raises UserError if a per-task flag names a task the dataset does not have."""
  for name in given:
    if name not in task_names:
      raise UserError(
        f"--{flag} names task {name!r}, which the dataset does not have (its tasks: {', '.join(task_names)})."
      )

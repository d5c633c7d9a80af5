"""The fitted preprocessing of tabular data, and its file `preprocessing.json`.

`Preprocessing` is the one typed form of what `tabular.fit` learns from the
train split (per feature: mean and std, or vocabulary and encoding; per
target: mean and std, or class names), in the order of the model's heads.
`read` and `write` are the file's reader and writer (the trainer reads and
writes a run's file through them, in `run_dir`), and everything else reads
attributes. `coerce` checks a JSON document a caller already holds with the
rules of `read`.

The file is JSON, written with sorted keys:

  {"version": 1,
   "features": [{"name", "type": "numeric", "mean", "std", "indicator"} |
                {"name", "type": "categorical", "vocabulary": [...], "encoding": "one_hot" | "embedding"}],
   "targets": {task: {"kind": "regression", "mean", "std"} | {"kind": "classification", "classes": [...]}},
   "task_order": [task, ...]}

Versions. `VERSION` is the schema this code writes; an in-memory
`Preprocessing` is always of that schema (a reader of a later version would
upgrade older files as it reads them). A file with an unknown version, a
newer one, or any field missing, misspelled, of the wrong type or out of
range is refused with one sentence naming the file and the field (its path,
e.g. `features[2].vocabulary[0]`), never half-read; so is a file that no
run could have written (no features, no targets, a column both a feature
and a target). Every field is checked for its JSON type before it is used,
so no document, whatever its shape, gets past `read` with a TypeError.

A file without "version" is read as version 1. Every release of this package
wrote "version": 1 from the first, so such a file is hand-made or older than
any release; it is checked field by field against the version 1 schema like
any other file, so reading it guesses nothing, and a later schema will
always write its version. Likewise a file without "task_order" (written
before the order of --tasks was kept) takes its task order from "targets",
as it always did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import dataclasses
import json
import math
from typing import Any, ClassVar

from mtl_research import tasks as tasks_lib
from mtl_research.errors import UserError
from mtl_research.files import write_json_atomic

VERSION = 1
NUMERIC = "numeric"  # Feature types as the file spells them.
CATEGORICAL = "categorical"
ONE_HOT = "one_hot"  # Encodings of a categorical feature.
EMBEDDING = "embedding"


@dataclasses.dataclass(frozen=True)
class NumericFeature:
  """A number, standardized with the train split's statistics."""

  name: str
  mean: float  # of the train values present; also what a missing value becomes
  std: float  # > 0 (a constant column gets 1)
  indicator: bool  # a 0/1 missing-indicator column follows (the train split had missing values)


@dataclasses.dataclass(frozen=True)
class CategoricalFeature:
  """A category: index 1 + its position in `vocabulary`, 0 for one never seen in training."""

  name: str
  vocabulary: tuple[str, ...]  # sorted train values, the missing token included if it occurred
  encoding: str  # ONE_HOT (numeric columns) or EMBEDDING (an embedded column)


Feature = NumericFeature | CategoricalFeature


@dataclasses.dataclass(frozen=True)
class RegressionTarget:
  """The model is trained on (y - mean) / std; metrics undo it."""

  name: str
  mean: float
  std: float  # > 0
  kind: ClassVar[str] = tasks_lib.REGRESSION


@dataclasses.dataclass(frozen=True)
class ClassificationTarget:
  """Class i of the model's head is `classes[i]`."""

  name: str
  classes: tuple[str, ...]  # at least 2
  kind: ClassVar[str] = tasks_lib.CLASSIFICATION


Target = RegressionTarget | ClassificationTarget


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """The fitted encoding of a tabular dataset: features in input order, targets in head order."""

  features: tuple[Feature, ...]
  targets: tuple[Target, ...]
  version: int = VERSION

  @property
  def task_names(self) -> list[str]:
    return [target.name for target in self.targets]

  def feature(self, name: str) -> Feature:
    return next(feature for feature in self.features if feature.name == name)

  def target(self, name: str) -> Target:
    return next(target for target in self.targets if target.name == name)

  def with_tasks(self, names: Iterable[str]) -> Preprocessing:
    """The same encoding with only the targets `names` (kept in head order)."""
    keep = set(names)
    return dataclasses.replace(self, targets=tuple(t for t in self.targets if t.name in keep))

  def to_json(self) -> dict[str, Any]:
    """The document `write` stores (JSON types only)."""
    return {
      "version": self.version,
      "features": [_feature_json(f) for f in self.features],
      "targets": {t.name: _target_json(t) for t in self.targets},
      # The file is written with sorted keys, so the head order is kept explicitly.
      "task_order": self.task_names,
    }

  @classmethod
  def from_json(cls, document: Any, origin: str) -> Preprocessing:
    """Checks and converts a document read from `origin` (named in the error); raises UserError."""
    try:
      return _parse(document)
    except _Malformed as problem:
      raise UserError(
        f"{origin} is not a preprocessing file this version of mtl_research can read ({problem})."
      ) from None


def read(path: str) -> Preprocessing:
  """The preprocessing stored in file `path`; UserError (one sentence naming it) if unreadable."""
  try:
    with open(path, encoding="utf-8") as handle:
      document = json.load(handle)
  except OSError as error:
    raise UserError(f"{path} cannot be read ({error.strerror}).") from None
  except ValueError as error:  # not UTF-8, or not JSON
    raise UserError(
      f"{path} is not a preprocessing file this version of mtl_research can read (not JSON: {error})."
    ) from None
  return Preprocessing.from_json(document, path)


def write(path: str, preprocessing: Preprocessing) -> None:
  """Stores `preprocessing` in file `path` atomically (a crash leaves the old file or the new one)."""
  write_json_atomic(path, preprocessing.to_json())


def coerce(fitted: Preprocessing | Mapping | None, origin: str) -> Preprocessing | None:
  """A dataset source's `fitted` argument as a Preprocessing (None stays None).

  The trainer passes what `read` returned; a caller holding the JSON document
  instead (`DatasetBundle.preprocessing`) has it checked with the rules of
  `read`, `origin` naming it in the error.
  """
  if fitted is None or isinstance(fitted, Preprocessing):
    return fitted
  return Preprocessing.from_json(fitted, origin)


def _feature_json(feature: Feature) -> dict[str, Any]:
  if isinstance(feature, NumericFeature):
    return {
      "name": feature.name,
      "type": NUMERIC,
      "mean": feature.mean,
      "std": feature.std,
      "indicator": feature.indicator,
    }
  return {
    "name": feature.name,
    "type": CATEGORICAL,
    "vocabulary": list(feature.vocabulary),
    "encoding": feature.encoding,
  }


def _target_json(target: Target) -> dict[str, Any]:
  if isinstance(target, RegressionTarget):
    return {"kind": target.kind, "mean": target.mean, "std": target.std}
  return {"kind": target.kind, "classes": list(target.classes)}


# Parsing. Every check raises _Malformed with the place and the problem, which
# from_json turns into one sentence naming the file.

_FEATURE_KEYS = {
  NUMERIC: {"name", "type", "mean", "std", "indicator"},
  CATEGORICAL: {"name", "type", "vocabulary", "encoding"},
}
_TARGET_KEYS = {tasks_lib.REGRESSION: {"kind", "mean", "std"}, tasks_lib.CLASSIFICATION: {"kind", "classes"}}


class _Malformed(Exception):
  pass


def _parse(document: Any) -> Preprocessing:
  _keys(document, "the document", {"features", "targets"}, optional={"version", "task_order"})
  version = document.get("version", 1)  # none means 1: see the module docstring
  if not _is_int(version) or version < 1:
    raise _Malformed(f"unknown version {_show(version)}")
  if version > VERSION:
    raise _Malformed(f"version {version}, newer than the version {VERSION} this code reads")
  features = tuple(
    _parse_feature(entry, f"features[{i}]") for i, entry in enumerate(_list(document["features"], "features"))
  )
  if not features:
    raise _Malformed("features is empty")  # the trainer refuses a table without features
  _unique([feature.name for feature in features], "features", "feature")
  targets = document["targets"]
  _keys(targets, "targets", set())
  if not targets:
    raise _Malformed("targets is empty")
  order = _strings(document.get("task_order", list(targets)), "task_order")
  _unique(order, "task_order", "task")
  if set(order) != set(targets):
    raise _Malformed(f"task_order names {sorted(order)} but targets holds {sorted(targets)}")
  both = [feature.name for feature in features if feature.name in targets]
  if both:
    raise _Malformed(f"{both[0]!r} is both a feature and a target")
  # Upgraded to the current schema as read (with one version there is nothing to convert).
  return Preprocessing(
    features, tuple(_parse_target(name, targets[name], f"targets.{name}") for name in order), VERSION
  )


def _parse_feature(entry: Any, where: str) -> Feature:
  kind = _tag(entry, where, "type", _FEATURE_KEYS)
  _keys(entry, where, _FEATURE_KEYS[kind])
  name = _string(entry["name"], f"{where}.name")
  if kind == NUMERIC:
    if not isinstance(entry["indicator"], bool):
      raise _Malformed(f"{where}.indicator is {_show(entry['indicator'])}, not true or false")
    return NumericFeature(
      name, _number(entry["mean"], f"{where}.mean"), _scale(entry["std"], f"{where}.std"), entry["indicator"]
    )
  vocabulary = _strings(entry["vocabulary"], f"{where}.vocabulary")
  _unique(vocabulary, f"{where}.vocabulary", "category")
  if entry["encoding"] not in (ONE_HOT, EMBEDDING):
    raise _Malformed(f"{where}.encoding is {_show(entry['encoding'])}, not {ONE_HOT} or {EMBEDDING}")
  return CategoricalFeature(name, tuple(vocabulary), entry["encoding"])


def _parse_target(name: str, entry: Any, where: str) -> Target:
  kind = _tag(entry, where, "kind", _TARGET_KEYS)
  _keys(entry, where, _TARGET_KEYS[kind])
  if kind == tasks_lib.REGRESSION:
    return RegressionTarget(name, _number(entry["mean"], f"{where}.mean"), _scale(entry["std"], f"{where}.std"))
  classes = _strings(entry["classes"], f"{where}.classes")
  _unique(classes, f"{where}.classes", "class")
  if len(classes) < 2:
    raise _Malformed(f"{where}.classes holds {len(classes)} class(es), fewer than 2")
  return ClassificationTarget(name, tuple(classes))


def _tag(entry: Any, where: str, key: str, schemas: Mapping[str, set[str]]) -> str:
  """The value of `entry[key]`, which says which of `schemas` the entry follows."""
  _keys(entry, where, {key}, optional=set().union(*schemas.values()))
  if not isinstance(entry[key], str) or entry[key] not in schemas:
    raise _Malformed(f"{where}.{key} is {_show(entry[key])}, not {' or '.join(schemas)}")
  return entry[key]


def _keys(value: Any, where: str, required: set[str], optional: set[str] | None = None) -> None:
  """`value` is a JSON object with every key of `required` and no key beyond `required | optional`.

  Strict: a later schema bumps "version", so a key this one does not know is a
  mistake (a typo, a hand edit), not a newer field to skip. `required` empty
  with `optional` None: any keys.
  """
  if not isinstance(value, dict):
    raise _Malformed(f"{where} is not a JSON object")
  missing = sorted(required - set(value))
  if missing:
    raise _Malformed(f"{where} has no {missing[0]!r}")
  if required or optional is not None:
    extra = sorted(set(value) - required - (optional or set()))
    if extra:
      raise _Malformed(f"{where} has an unknown key {extra[0]!r}")


def _list(value: Any, where: str) -> list:
  if not isinstance(value, list):
    raise _Malformed(f"{where} is not a JSON list")
  return value


def _string(value: Any, where: str) -> str:
  if not isinstance(value, str):
    raise _Malformed(f"{where} is {_show(value)}, not a string")
  return value


def _strings(value: Any, where: str) -> list[str]:
  return [_string(item, f"{where}[{i}]") for i, item in enumerate(_list(value, where))]


def _unique(names: list[str], where: str, what: str) -> None:
  seen = set()
  for name in names:
    if name in seen:
      raise _Malformed(f"{where} names {what} {name!r} twice")
    seen.add(name)


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, where: str) -> float:
  # Python's json reads NaN and Infinity, which JSON itself does not have: refused here.
  if not ((_is_int(value) or isinstance(value, float)) and math.isfinite(value)):
    raise _Malformed(f"{where} is {_show(value)}, not a finite number")
  return float(value)


def _scale(value: Any, where: str) -> float:
  number = _number(value, where)
  if number <= 0:
    raise _Malformed(f"{where} is {_show(value)}, not a positive number")
  return number


def _show(value: Any) -> str:
  """`value` as JSON, shortened: it goes into a one-line message."""
  text = json.dumps(value)
  return text if len(text) <= 40 else text[:37] + "..."

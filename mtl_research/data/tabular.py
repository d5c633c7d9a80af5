"""Preprocessing of tabular data: fitted on the train split only, stored as JSON.

Features:
  numeric      missing → training mean, plus a 0/1 missing indicator if the
               training split has missing values; standardized with the
               training mean and std. Numbers must lie within ±3.4e38 (the
               float32 range the model computes in), and so must a value
               once standardized (a value of another split far outside
               the training range): else refused, naming the value's line.
  categorical  vocabulary of the training split (missing is a category of its
               own, "<missing>"); index 0 is kept for values never seen in
               training. One-hot encoded, or embedded when the vocabulary has
               more than --embedding_threshold entries.
Targets:
  regression      standardized with the training mean and std unless
                  --nostandardize_targets (metrics are always reported in the
                  original units).
  classification  class names (strings or integers) → indices, sorted; the
                  names are kept for reporting.
Rows with a missing target are dropped.

The fitted state is a `preprocessing.Preprocessing`, stored as
`preprocessing.json` in the run dir, so a resumed, evaluated or exported run
encodes data exactly as training did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from mtl_research import tasks as tasks_lib
from mtl_research.data.csv_reader import MISSING_TOKENS, Table, first_non_number
from mtl_research.data.preprocessing import (
  EMBEDDING,
  ONE_HOT,
  CategoricalFeature,
  ClassificationTarget,
  Feature,
  NumericFeature,
  Preprocessing,
  RegressionTarget,
  Target,
)
from mtl_research.errors import UserError
from mtl_research.features import EMBEDDED, NUMERIC, FeatureSpec

MISSING = "<missing>"
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model computes in float32
_MISSING_BYTES = tuple(token.encode() for token in MISSING_TOKENS)


def missing_mask(column: np.ndarray) -> np.ndarray:
  if column.dtype == np.float64:
    return np.isnan(column)
  return np.isin(column, _MISSING_BYTES)


def _texts(column: np.ndarray) -> np.ndarray:
  """Values as str, with every missing token replaced by MISSING; integers without '.0'."""
  if column.dtype == np.float64:
    return number_texts(column).astype(object)
  texts = np.char.decode(column, "utf-8", "replace").astype(object)
  texts[missing_mask(column)] = MISSING
  return texts


def class_texts(column: np.ndarray) -> np.ndarray:
  """The class name of each value of a classification target column, as str (MISSING for a missing value)."""
  return _texts(column).astype(str)


def number_texts(column: np.ndarray) -> np.ndarray:
  """Each number spelled on its own: whole numbers without ".0", MISSING for NaN.

  Per value, not per column, so that a value is spelled the same in every split.
  """
  texts = column.astype(str)
  with np.errstate(invalid="ignore"):
    whole = np.isfinite(column) & (column == np.round(column)) & (np.abs(column) < 2**53)
    texts[whole] = column[whole].astype(np.int64).astype(str)
  texts[np.isnan(column)] = MISSING
  return texts


def _sorted_names(values: np.ndarray) -> list[str]:
  names = sorted(set(values.tolist()) - {MISSING})
  try:
    return sorted(names, key=float)
  except ValueError:
    return names


def _index(texts: np.ndarray, vocabulary: Sequence[str], offset: int) -> np.ndarray:
  """Position in `vocabulary` + offset for each value; -1 for values not in it."""
  unique, inverse = np.unique(texts.astype(str), return_inverse=True)
  lookup = {name: i + offset for i, name in enumerate(vocabulary)}
  return np.array([lookup.get(name, -1) for name in unique.tolist()], np.int64)[inverse]


def fit(
  table: Table,
  task_kinds: Mapping[str, str],
  feature_columns: Sequence[str],
  train_rows: np.ndarray,
  embedding_threshold: int,
  standardize_targets: bool,
) -> Preprocessing:
  """Fits the preprocessing on the rows `train_rows` of `table`; targets in the order of `task_kinds`."""
  features = tuple(_fit_feature(table, name, train_rows, embedding_threshold) for name in feature_columns)
  targets = tuple(_fit_target(table, name, kind, train_rows, standardize_targets) for name, kind in task_kinds.items())
  return Preprocessing(features, targets)


def _fit_feature(table: Table, name: str, rows: np.ndarray, embedding_threshold: int) -> Feature:
  column = table.columns[name]
  if table.is_numeric(name):
    check_numbers(table, name)
    values = column[rows]
    present = values[~np.isnan(values)]
    mean, std = mean_and_std(present) if present.size else (0.0, 0.0)
    return NumericFeature(name, mean, std if std > 0 else 1.0, bool(np.isnan(values).any()))
  texts = _texts(column[rows])
  vocabulary = tuple(sorted(set(texts.tolist())))
  return CategoricalFeature(name, vocabulary, EMBEDDING if len(vocabulary) + 1 > embedding_threshold else ONE_HOT)


def check_targets(table: Table, task_kinds: Mapping[str, str]) -> None:
  """Regression targets must be numeric and finite (checked on whole files, before any split)."""
  for name, kind in task_kinds.items():
    if kind != tasks_lib.REGRESSION:
      continue
    column = table.columns[name]
    if not table.is_numeric(name):
      row = first_non_number(column)
      where = (
        f"{table.where(name, row)} holds {column[row].decode('utf-8', 'replace')!r}" if row >= 0 else "read as text"
      )
      raise UserError(f"Regression target {name!r} of {table.path} is not numeric: {where}.")
    check_numbers(table, name)


def check_numbers(table: Table, name: str) -> None:
  """Numeric column `name` holds no infinity and no number beyond the float32 range (NaN is missing)."""
  values = table.columns[name]
  with np.errstate(invalid="ignore"):
    bad = np.abs(values) > FLOAT32_MAX  # infinities included; NaN compares False
  if not bad.any():
    return
  row = int(np.argmax(bad))
  value = float(values[row])
  if np.isinf(value):
    raise UserError(f"{table.label(name)} has a non-finite value ({value}) at {table.where(name, row)}.")
  raise UserError(
    f"{table.label(name)} holds {value:g} at {table.where(name, row)}, beyond ±3.4e+38, "
    "the float32 range the model computes in."
  )


def mean_and_std(values: np.ndarray) -> tuple[float, float]:
  """The mean and the population std of `values` (float64, none missing), without overflow or underflow.

  Deviations far from 1 (beyond 1e±150, where their squares leave float64)
  are scaled by the largest one before they are squared; others are not, so
  the std of ordinary data is exactly what NumPy gives, as it always was.
  """
  mean = float(values.mean())
  scale = float(np.abs(values - mean).max())
  if scale == 0 or 1e-150 < scale < 1e150:
    return mean, float(values.std())
  return mean, scale * float(np.std((values - mean) / scale))


def _standardized(table: Table, name: str, values: np.ndarray, mean: float, std: float) -> np.ndarray:
  """(values - mean) / std as float32; refused, naming the value, where that leaves the float32 range.

  Computed in float64, so only the result can overflow: a value of another
  split (or file) many more standard deviations from the training mean than
  float32 holds, which the model would read as infinity.
  """
  result = (values - mean) / std
  with np.errstate(invalid="ignore"):
    bad = np.abs(result) > FLOAT32_MAX
  if bad.any():
    row = int(np.argmax(bad))
    raise UserError(
      f"{table.label(name)} holds {float(values[row]):g} at {table.where(name, row)}, "
      f"{abs(float(result[row])):.3g} standard deviations from the training mean ({mean:g}), "
      "too far to standardize in float32."
    )
  return result.astype(np.float32)


def _fit_target(table: Table, name: str, kind: str, rows: np.ndarray, standardize: bool) -> Target:
  column = table.columns[name]
  if kind == tasks_lib.REGRESSION:
    check_targets(table, {name: kind})
    values = column[rows]
    values = values[~np.isnan(values)]
    mean, std = mean_and_std(values) if standardize and values.size else (0.0, 1.0)
    return RegressionTarget(name, mean, std if std > 0 else 1.0)
  classes = _sorted_names(_texts(column))
  if len(classes) < 2:
    raise UserError(
      f"Classification target {name!r} of {table.path} has {len(classes)} class(es) "
      f"({', '.join(classes) or 'none'}); it needs at least 2."
    )
  return ClassificationTarget(name, tuple(classes))


def task_specs(state: Preprocessing) -> tuple[tasks_lib.TaskSpec, ...]:
  """The model's heads, in the order of --tasks."""
  return tuple(
    tasks_lib.TaskSpec(t.name, t.kind, len(t.classes) if isinstance(t, ClassificationTarget) else 0)
    for t in state.targets
  )


def feature_spec(state: Preprocessing) -> FeatureSpec:
  numeric = 0
  embedded = []
  for feature in state.features:
    if isinstance(feature, NumericFeature):
      numeric += 2 if feature.indicator else 1
    elif feature.encoding == ONE_HOT:
      numeric += len(feature.vocabulary) + 1
    else:
      embedded.append(len(feature.vocabulary) + 1)
  return FeatureSpec(numeric, tuple(embedded))


def encode_features(table: Table, state: Preprocessing) -> dict[str, np.ndarray]:
  """The model's input for every row of `table`."""
  return encode_features_and_unseen(table, state)[0]


def encode_features_and_unseen(table: Table, state: Preprocessing) -> tuple[dict[str, np.ndarray], dict[str, int]]:
  """The model's input for every row of `table`, and the unseen categories per column.

  The counts (categorical column -> values never seen in training, each encoded
  as index 0; columns without any left out) come from the encoding itself, so
  reporting them costs no second pass over the column.
  """
  numeric, embedded = [], []
  unseen = {}
  for feature in state.features:
    name = feature.name
    if name not in table.columns:
      raise UserError(f"{table.path} has no column {name!r}, which the model was trained with.")
    column = table.columns[name]
    if isinstance(feature, NumericFeature):
      numeric += _encode_numeric(table, feature)
      continue
    index = _index(_texts(column), feature.vocabulary, offset=1)
    never_seen = index < 0
    index[never_seen] = 0
    if never_seen.any():
      unseen[name] = int(never_seen.sum())
    if feature.encoding == EMBEDDING:
      embedded.append(index.astype(np.int32))
    else:
      numeric.append(np.eye(len(feature.vocabulary) + 1, dtype=np.float32)[index])
  rows = table.num_rows
  result = {
    NUMERIC: np.concatenate([c.reshape(rows, -1) for c in numeric], axis=1).astype(np.float32)
    if numeric
    else np.zeros([rows, 0], np.float32)
  }
  if embedded:
    result[EMBEDDED] = np.stack(embedded, axis=1)
  return result, unseen


def _encode_numeric(table: Table, feature: NumericFeature) -> list[np.ndarray]:
  name = feature.name
  if not table.is_numeric(name):
    row = first_non_number(table.columns[name])
    where = (
      f"{table.where(name, row)} holds {table.columns[name][row].decode('utf-8', 'replace')!r}"
      if row >= 0
      else "it was read as text"
    )
    raise UserError(f"{table.label(name)} must be numeric, but {where}.")
  check_numbers(table, name)
  values = table.columns[name]
  missing = np.isnan(values)
  parts = [_standardized(table, name, np.where(missing, feature.mean, values), feature.mean, feature.std)]
  if feature.indicator:
    parts.append(missing.astype(np.float32))
  return parts


def target_rows(table: Table, names: Iterable[str]) -> np.ndarray:
  """Boolean mask of the rows whose every target column of `names` is present."""
  keep = np.ones(table.num_rows, bool)
  for name in names:
    keep &= ~missing_mask(table.columns[name])
  return keep


def encode_targets(table: Table, state: Preprocessing) -> dict[str, np.ndarray]:
  """Training labels: standardized regression targets, class indices."""
  labels = {}
  for target in state.targets:
    name = target.name
    column = table.columns[name]
    if isinstance(target, RegressionTarget):
      check_targets(table, {name: target.kind})
      labels[name] = _standardized(table, name, column, target.mean, target.std)
      continue
    index = _index(_texts(column), target.classes, offset=0)
    unknown = (index < 0) & ~missing_mask(column)
    if unknown.any():
      row = int(np.argmax(unknown))
      raise UserError(
        f"Classification target {name!r} of {table.path} has class {_texts(column)[row]!r} at "
        f"{table.where(name, row)}, which the model does not know ({', '.join(target.classes)})."
      )
    labels[name] = index.astype(np.int32)
  return labels


def target_scale(state: Preprocessing) -> dict[str, tuple[float, float]]:
  return {t.name: (t.mean, t.std) for t in state.targets if isinstance(t, RegressionTarget)}


def class_names(state: Preprocessing) -> dict[str, tuple[str, ...]]:
  return {t.name: t.classes for t in state.targets if isinstance(t, ClassificationTarget)}

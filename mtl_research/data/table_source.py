"""From tables (CSV or NumPy files) to a DatasetBundle: tasks, split, preprocessing.

Shared by the `csv` and `npz` sources, which only differ in how they read files.

Degenerate targets are caught here, where the whole data is in view, each in
one sentence naming the column: refused when nothing can be learned (a
target column empty in every row, a regression target with one value in
every row, a classification target with a different class in every row, as
an identifier has), warned about on stderr ("warning: ...") when the run can
go on but part of it cannot be learned (a regression target constant in the
train split, val or test rows whose class the train split never shows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import sys
from typing import Any

import numpy as np

from mtl_research import tasks as tasks_lib
from mtl_research.data import preprocessing, tabular
from mtl_research.data import summary as summary_lib
from mtl_research.data.bundle import DatasetBundle, Split
from mtl_research.data.csv_reader import Table
from mtl_research.errors import UserError
from mtl_research.params import BOOL, FLOATS, INT, NAMED_CHOICES, Param

TASKS = Param(
  "tasks",
  NAMED_CHOICES,
  "",
  "Target columns and their kinds for --dataset=csv|npz: col:regression,col:classification,...",
  choices=tasks_lib.KINDS,
)
SPLIT = Param(
  "split", FLOATS, "0.6,0.2,0.2", "Train/val/test fractions of a single file, shuffled with --seed.", lower=0.0
)
STANDARDIZE_TARGETS = Param(
  "standardize_targets", BOOL, True, "Train on standardized regression targets (metrics stay in original units)."
)
# Read by the sources whose tables hold categorical columns (csv, census_income).
EMBEDDING_THRESHOLD = Param(
  "embedding_threshold",
  INT,
  32,
  "Categorical columns with more categories than this are embedded instead of one-hot encoded.",
  lower=2,
)
PARAMS = (TASKS, SPLIT, STANDARDIZE_TARGETS)


def task_kinds(params: Mapping[str, Any], source: str) -> dict[str, str]:
  kinds = dict(params["tasks"])
  if not kinds:
    raise UserError(f"--dataset={source} needs --tasks=col:regression,col:classification,... naming the targets.")
  return kinds


def check_columns(table: Table, kinds: Mapping[str, str], features: Sequence[str]) -> None:
  """Every named column exists and no column is both a feature and a target."""
  available = list(table.columns)
  for flag, names in (("tasks", list(kinds)), ("feature_columns", list(features))):
    missing = [name for name in names if name not in table.columns]
    if missing:
      raise UserError(
        f"--{flag} names column {missing[0]!r}, which {table.path} does not have (its columns: {', '.join(available)})."
      )
  both = [name for name in features if name in kinds]
  if both:
    raise UserError(f"Column {both[0]!r} is named both as a feature (--feature_columns) and as a target (--tasks).")
  if not features:
    raise UserError(f"{table.path} has no feature columns besides the targets.")


def _split_rows(num_rows: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
  if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6:
    raise UserError(f"--split={','.join(map(str, fractions))} must be three fractions that sum to 1.")
  order = np.random.default_rng(seed).permutation(num_rows)
  bounds = np.round(np.cumsum([0.0] + list(fractions)) * num_rows).astype(int)
  parts = [np.sort(order[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
  for name, rows in zip(("train", "val", "test"), parts):
    if rows.size == 0:
      raise UserError(
        f"--split={','.join(map(str, fractions))} leaves the {name} split empty ({num_rows} rows with targets)."
      )
  return parts


def _drop_missing_targets(table: Table, kinds: Mapping[str, str], log: Callable[[str], None]) -> Table:
  for name in kinds:
    if tabular.missing_mask(table.columns[name]).all():
      raise UserError(
        f"{table.label(name)} has no value in any of its {table.num_rows} rows, "
        f"so task {name!r} (--tasks) has nothing to learn from."
      )
  keep = tabular.target_rows(table, kinds)
  if not keep.any():
    raise UserError(
      f"No row of {table.path} has a value in every target column ({', '.join(kinds)}), "
      "and a row is kept only with all of them."
    )
  if not keep.all():
    log(f"Dropped {int((~keep).sum())} of {table.num_rows} rows of {table.path} with a missing target.")
    table = table.take(np.flatnonzero(keep))
  return table


def _files(tables: Sequence[Table]) -> str:
  return tables[0].path if len(tables) == 1 else ", ".join(t.path for t in tables)


def _check_learnable(tables: Sequence[Table], kinds: Mapping[str, str]) -> None:
  """Refuses a target that leaves nothing to learn, over every row of every table (module docstring)."""
  for name, kind in kinds.items():
    columns = [t.columns[name] for t in tables]
    if kind == tasks_lib.REGRESSION:
      values = np.concatenate(columns)
      if values.size and values.min() == values.max():
        raise UserError(
          f"Regression target {name!r} of {_files(tables)} has the same value ({values[0]:g}) in every row, "
          "so there is nothing to learn (and R² is undefined)."
        )
      continue
    texts = np.concatenate([tabular.class_texts(c) for c in columns])
    if texts.size > 1 and len(np.unique(texts)) == texts.size:
      raise UserError(
        f"Classification target {name!r} of {_files(tables)} has a different class in each of its {texts.size} "
        "rows, so no val or test row has a class the model trained on (an identifier, or a regression target?)."
      )


def _warn_degenerate(splits: Sequence[Table], kinds: Mapping[str, str], warn: Callable[[str], None]) -> None:
  """Warns about targets the run can train on though part of them cannot be learned (module docstring)."""
  train = splits[0]
  for name, kind in kinds.items():
    if kind == tasks_lib.REGRESSION:
      values = train.columns[name]
      if values.min() == values.max():
        warn(
          f"warning: regression target {name!r} is constant ({values[0]:g}) in the train split "
          f"({train.num_rows} rows of {train.path}), so the model can learn nothing but that value."
        )
      continue
    seen = np.unique(tabular.class_texts(train.columns[name]))
    unseen = []
    for split_name, split in zip(summary_lib.SPLITS[1:], splits[1:]):
      count = int((~np.isin(tabular.class_texts(split.columns[name]), seen)).sum())
      if count:
        unseen.append(f"{count} of the {split.num_rows} {split_name} rows")
    if unseen:
      warn(
        f"warning: classification target {name!r}: {' and '.join(unseen)} have a class that the train split "
        "does not have, which the model cannot learn to predict."
      )


def _check_fitted(fitted: preprocessing.Preprocessing, kinds: Mapping[str, str]) -> None:
  """The resumed run's preprocessing has the targets of --tasks (the same names and kinds)."""
  have = {target.name: target.kind for target in fitted.targets}
  if have != dict(kinds):
    spell = lambda tasks: ",".join(f"{n}:{k}" for n, k in tasks.items())  # noqa: E731
    raise UserError(
      f"The resumed run's preprocessing.json has the tasks {spell(have)}, but --tasks={spell(kinds)}; "
      "resume with the run's --tasks, or train anew with --overwrite."
    )


def build_bundle(
  tables: Sequence[Table],
  kinds: Mapping[str, str],
  features: Sequence[str],
  params: Mapping[str, Any],
  seed: int,
  fitted: preprocessing.Preprocessing | Mapping | None,
  embedding_threshold: int,
  log: Callable[[str], None] = print,
  warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> DatasetBundle:
  """A bundle from one table (split by --split) or three (train, val, test).

  `fitted`: the preprocessing of the run being resumed, used instead of
  fitting anew (a Preprocessing, or its JSON document as the trainer reads it).
  """
  # Checked first: a file this code cannot read refuses the resume, whatever the tables hold.
  fitted = preprocessing.coerce(fitted, "The resumed run's preprocessing.json")
  if fitted is not None:
    _check_fitted(fitted, kinds)
  for table in tables:  # whole files, before any split: a message names the file's first culprit
    check_columns(table, kinds, features)
    tabular.check_targets(table, kinds)
    for name in features:
      if table.is_numeric(name):
        tabular.check_numbers(table, name)
  read = [table.num_rows for table in tables]
  tables = [_drop_missing_targets(table, kinds, log) for table in tables]
  sources = tuple(summary_lib.SourceRows(t.path, n, n - t.num_rows) for t, n in zip(tables, read))
  _check_learnable(tables, kinds)
  if len(tables) == 1:
    splits = [tables[0].take(rows) for rows in _split_rows(tables[0].num_rows, params["split"], seed)]
  else:
    splits = list(tables)
  _warn_degenerate(splits, kinds, warn)
  state = fitted or _fit(splits, kinds, features, embedding_threshold, params["standardize_targets"])
  # Three splits: --split has three fractions (checked by _split_rows), or the tables are train, val and test.
  encoded = [tabular.encode_features_and_unseen(t, state) for t in splits]
  train, val, test = (Split(features, tabular.encode_targets(t, state)) for t, (features, _) in zip(splits, encoded))
  summary = summary_lib.DataSummary(
    sources,
    tuple(params["split"]) if len(tables) == 1 else None,
    {name: t.num_rows for name, t in zip(summary_lib.SPLITS, splits)},
    {name: unseen for name, (_, unseen) in zip(summary_lib.SPLITS, encoded) if unseen},
    state,
    reused=fitted is not None,
  )
  return DatasetBundle(
    tabular.task_specs(state),
    train,
    val,
    test,
    feature_spec=tabular.feature_spec(state),
    target_scale=tabular.target_scale(state),
    class_names=tabular.class_names(state),
    fitted=state,
    summary=summary,
  )


def _fit(
  splits: Sequence[Table], kinds, features, embedding_threshold: int, standardize: bool
) -> preprocessing.Preprocessing:
  # Class lists come from every split (a class absent from train is still a class);
  # every statistic comes from the train split only.
  train = splits[0]
  merged = Table(
    train.path,
    {name: np.concatenate([t.columns[name] for t in splits]) for name in kinds},
    np.concatenate([t.positions() for t in splits]),
    train.arrays,
  )
  state = tabular.fit(train, kinds, features, np.arange(train.num_rows), embedding_threshold, standardize)
  classes = tabular.fit(
    merged,
    {name: kind for name, kind in kinds.items() if kind == tasks_lib.CLASSIFICATION},
    [],
    np.arange(merged.num_rows),
    0,
    False,
  )
  return dataclasses.replace(
    state, targets=tuple(classes.target(t.name) if t.kind == tasks_lib.CLASSIFICATION else t for t in state.targets)
  )

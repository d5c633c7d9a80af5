"""`--dataset=csv`: the user's own table, from a CSV file (plain or .gz).

`--tasks` names the target columns and their kinds; every other column is a
feature unless `--feature_columns` lists them. Column types are inferred (a
column with any non-numeric value is categorical) unless `--categorical_columns`
says so. Preprocessing is described in `tabular.py`; splits in `table_source.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtl_research import tasks as tasks_lib
from mtl_research.data import csv_reader, table_source
from mtl_research.data.preprocessing import Preprocessing
from mtl_research.data.registry import DATASETS
from mtl_research.errors import UserError
from mtl_research.params import STRING, STRINGS, Param

PARAMS = table_source.PARAMS + (
  Param("csv_path", STRING, "", "CSV file (plain or .gz) for --dataset=csv; the first line names the columns."),
  Param("val_csv_path", STRING, "", "Validation CSV (with --test_csv_path; then --split is not used)."),
  Param("test_csv_path", STRING, "", "Test CSV (with --val_csv_path)."),
  Param("feature_columns", STRINGS, "", "Feature columns (default: every column that is not a target)."),
  Param("categorical_columns", STRINGS, "", "Columns to treat as categorical even if they look numeric."),
  table_source.EMBEDDING_THRESHOLD,
)


def read(params: Mapping[str, Any]) -> list[csv_reader.Table]:
  """The train table, or train, val and test tables."""
  path, val_path, test_path = params["csv_path"], params["val_csv_path"], params["test_csv_path"]
  if not path:
    raise UserError("--dataset=csv needs --csv_path=FILE.")
  if bool(val_path) != bool(test_path):
    raise UserError("Give both --val_csv_path and --test_csv_path, or neither (then --split divides --csv_path).")
  train = csv_reader.read_table(path, string_columns=params["categorical_columns"])
  if not val_path:
    return [train]
  numeric = [name for name in train.columns if train.is_numeric(name)]
  strings = [name for name in train.columns if not train.is_numeric(name)]
  return [train] + [
    csv_reader.read_table(p, string_columns=strings, numeric_columns=numeric) for p in (val_path, test_path)
  ]


@DATASETS.register("csv", params=PARAMS)
def load(params: Mapping[str, Any], seed: int, fitted: Preprocessing | Mapping | None = None):
  """Your own table from a CSV file: --csv_path, --tasks, optional splits and column lists."""
  kinds = table_source.task_kinds(params, "csv")
  regression = [c for c in params["categorical_columns"] if kinds.get(c) == tasks_lib.REGRESSION]
  if regression:
    raise UserError(
      f"--categorical_columns names column {regression[0]!r}, which --tasks makes a regression target "
      "(a number, not a category)."
    )
  tables = read(params)
  missing = [c for c in params["categorical_columns"] if c not in tables[0].columns]
  if missing:
    raise UserError(f"--categorical_columns names column {missing[0]!r}, which {tables[0].path} does not have.")
  features = list(params["feature_columns"]) or [c for c in tables[0].columns if c not in kinds]
  return table_source.build_bundle(tables, kinds, features, params, seed, fitted, params["embedding_threshold"])

"""`census_income`: the UCI Census-Income (KDD) data used by the MMoE paper
(Ma et al., "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018, §5.2), read from local files.

Put `census-income.data` and `census-income.test` (or their `.gz`) from the
UCI repository's census-income-mld folder in --data_dir. Nothing is downloaded.

Tasks: `income` (above 50K: binary), `marital` (marital status: 7 classes, or
with --census_marital=never_married the paper's binary "never married" task),
and `age` (regression). Features are the other 38 columns (the instance weight
is a sampling weight, not a feature); the recode columns are codes, so they are
categorical. As in the paper, the 99,762 test rows are split in half (seeded)
into validation and test; the 199,523 training rows are the train split.
"""

from __future__ import annotations

from collections.abc import Mapping
import os
from typing import Any

import numpy as np

from mtl_research.data import csv_reader, table_source
from mtl_research.data.preprocessing import Preprocessing
from mtl_research.data.registry import DATASETS
from mtl_research.errors import UserError
from mtl_research.params import ENUM, STRING, Param

COLUMNS = (
  "age",
  "class_of_worker",
  "industry_code",
  "occupation_code",
  "education",
  "wage_per_hour",
  "enrolled_in_edu_last_wk",
  "marital_status",
  "major_industry",
  "major_occupation",
  "race",
  "hispanic_origin",
  "sex",
  "labor_union_member",
  "unemployment_reason",
  "employment_status",
  "capital_gains",
  "capital_losses",
  "dividends",
  "tax_filer_status",
  "previous_region",
  "previous_state",
  "household_family_status",
  "household_summary",
  "instance_weight",
  "migration_msa",
  "migration_region",
  "migration_within_region",
  "same_house_1_year_ago",
  "previous_residence_sunbelt",
  "num_persons_worked_for_employer",
  "family_members_under_18",
  "father_birth_country",
  "mother_birth_country",
  "birth_country",
  "citizenship",
  "own_business_or_self_employed",
  "veterans_questionnaire",
  "veterans_benefits",
  "weeks_worked",
  "year",
  "income_label",
)
CATEGORICAL_CODES = ("industry_code", "occupation_code", "own_business_or_self_employed", "veterans_benefits", "year")
FILES = ("census-income.data", "census-income.test")
TASKS = {"income": "classification", "marital": "classification", "age": "regression"}

PARAMS = (
  Param("data_dir", STRING, "", "Directory with census-income.data and census-income.test (or .gz)."),
  Param(
    "census_marital",
    ENUM,
    "all",
    "census_income marital task: all 7 statuses, or the MMoE paper's binary never_married.",
    choices=("all", "never_married"),
  ),
  table_source.STANDARDIZE_TARGETS,
  table_source.EMBEDDING_THRESHOLD,
)


def _find(data_dir: str, name: str) -> str | None:
  for candidate in (name, name + ".gz"):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  return None


def _read(data_dir: str) -> list[csv_reader.Table]:
  found = [_find(data_dir, name) for name in FILES]
  paths = [path for path in found if path is not None]
  if not data_dir or len(paths) < len(FILES):
    raise UserError(
      f"--dataset=census_income needs {FILES[0]} and {FILES[1]} (from the UCI census-income (KDD) "
      f"data, plain or .gz) in --data_dir={data_dir or '<unset>'}; nothing is downloaded."
    )
  return [csv_reader.read_table(path, string_columns=CATEGORICAL_CODES, names=COLUMNS) for path in paths]


def _with_tasks(table: csv_reader.Table, marital: str) -> csv_reader.Table:
  """Adds the task columns: income (two classes), marital, age."""
  columns = dict(table.columns)
  label = np.char.strip(columns.pop("income_label"))
  columns["income"] = np.where(np.char.startswith(label, b"50000+"), b"above_50k", b"up_to_50k")
  status = columns.pop("marital_status")
  columns["marital"] = (
    np.where(status == b"Never married", b"never_married", b"other") if marital == "never_married" else status
  )
  return csv_reader.Table(table.path, columns, table.lines)


@DATASETS.register("census_income", params=PARAMS)
def load(params: Mapping[str, Any], seed: int, fitted: Preprocessing | Mapping | None = None):
  """UCI census-income (KDD) from --data_dir: income, marital status, age (MMoE paper)."""
  train, test = (_with_tasks(t, params["census_marital"]) for t in _read(params["data_dir"]))
  halves = np.array_split(np.random.default_rng(seed).permutation(test.num_rows), 2)
  val, test = (test.take(np.sort(rows)) for rows in halves)
  features = [c for c in train.columns if c not in TASKS and c != "instance_weight"]
  return table_source.build_bundle(
    [train, val, test], TASKS, features, params, seed, fitted, params["embedding_threshold"]
  )

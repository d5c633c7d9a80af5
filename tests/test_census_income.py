"""The `census_income` source on a tiny census-income.data/.test pair written
here in the UCI format: 42 comma-separated columns in census_income.COLUMNS
order, no header, values after the first with a leading space, '?' for
missing, labels ' - 50000.' and ' 50000+.'.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

try:
  from tests import table_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import table_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.data import census_income
from mtl_research.data.bundle import SPLITS
from mtl_research.data.preprocessing import CategoricalFeature, NumericFeature
from mtl_research.errors import UserError

NUM_TRAIN, NUM_TEST = 300, 200
TEST_ID_OFFSET = 1000  # wage_per_hour holds a row id: 0.. in .data, 1000.. in .test
MARITAL = (
  "Never married",
  "Married-civilian spouse present",
  "Divorced",
  "Widowed",
  "Separated",
  "Married-spouse absent",
  "Married-A F spouse present",
)
NUMERIC = (
  "wage_per_hour",
  "capital_gains",
  "capital_losses",
  "dividends",
  "num_persons_worked_for_employer",
  "weeks_worked",
)
WITH_MISSING = (
  "hispanic_origin",
  "previous_state",
  "migration_msa",
  "migration_region",
  "migration_within_region",
  "previous_residence_sunbelt",
  "father_birth_country",
)
TEXT_VALUES = ("Not in universe", "Alpha", "Beta gamma", "Delta")


def census_rows(num_rows: int, first_id: int, seed: int) -> list[list[str]]:
  """Rows as lists of field strings (without the leading spaces)."""
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(num_rows):
    row = []
    for name in census_income.COLUMNS:
      if name == "age":
        value = str(int(rng.integers(0, 91)))
      elif name == "wage_per_hour":
        value = str(first_id + i)
      elif name == "marital_status":
        value = MARITAL[i % len(MARITAL)]
      elif name == "income_label":
        value = "50000+." if i % 5 == 0 else "- 50000."
      elif name == "instance_weight":
        value = f"{rng.uniform(100, 5000):.2f}"
      elif name == "industry_code":
        value = str(i % 40)
      elif name == "occupation_code":
        value = str(i % 12)
      elif name in ("own_business_or_self_employed", "veterans_benefits"):
        value = str(i % 3)
      elif name == "year":
        value = "94" if i % 2 else "95"
      elif name in NUMERIC:
        value = str(int(rng.integers(0, 53)))
      elif name in WITH_MISSING and i % 7 == 3:
        value = "?"
      else:
        value = TEXT_VALUES[int(rng.integers(0, len(TEXT_VALUES)))]
      row.append(value)
    rows.append(row)
  return rows


def uci_text(rows) -> str:
  return "".join(", ".join(row) + "\n" for row in rows)


TRAIN_ROWS = census_rows(NUM_TRAIN, 0, seed=1)
TEST_ROWS = census_rows(NUM_TEST, TEST_ID_OFFSET, seed=2)
ALL_ROWS = {int(row[census_income.COLUMNS.index("wage_per_hour")]): row for row in TRAIN_ROWS + TEST_ROWS}


def write_pair(directory, data_suffix: str = "", test_suffix: str = "") -> str:
  os.makedirs(directory, exist_ok=True)
  helpers.write_text(os.path.join(directory, "census-income.data" + data_suffix), uci_text(TRAIN_ROWS))
  helpers.write_text(os.path.join(directory, "census-income.test" + test_suffix), uci_text(TEST_ROWS))
  return str(directory)


def load(data_dir: str, seed: int = 0, **overrides):
  return helpers.load("census_income", seed, data_dir=data_dir, **overrides)


@pytest.fixture(name="data_dir", scope="module")
def fixture_data_dir(tmp_path_factory):
  return write_pair(tmp_path_factory.mktemp("census"))


@pytest.fixture(name="bundle", scope="module")
def fixture_bundle(data_dir):
  return load(data_dir)


def ids(bundle, split: str) -> np.ndarray:
  return helpers.row_ids(bundle.split(split), bundle.preprocessing, "wage_per_hour")


def column(name: str, row_ids) -> list[str]:
  index = census_income.COLUMNS.index(name)
  return [ALL_ROWS[int(i)][index] for i in row_ids]


def test_uci_format_of_the_written_files(data_dir):
  with open(os.path.join(data_dir, "census-income.data"), encoding="utf-8") as handle:
    first = handle.readline()
  fields = first.rstrip("\n").split(",")
  assert len(fields) == len(census_income.COLUMNS) == 42
  assert all(field.startswith(" ") for field in fields[1:])
  assert fields[-1] in (" - 50000.", " 50000+.")


def test_tasks(bundle):
  assert bundle.tasks == (
    tasks_lib.TaskSpec("income", tasks_lib.CLASSIFICATION, 2),
    tasks_lib.TaskSpec("marital", tasks_lib.CLASSIFICATION, 7),
    tasks_lib.TaskSpec("age", tasks_lib.REGRESSION),
  )
  assert bundle.class_names["income"] == ("above_50k", "up_to_50k")
  assert bundle.class_names["marital"] == tuple(sorted(MARITAL))
  age = np.array([float(a) for a in column("age", range(NUM_TRAIN))])
  assert bundle.target_scale["age"] == (pytest.approx(age.mean()), pytest.approx(age.std()))
  bundle.validate(batch_size=32)


def test_features(bundle):
  state = bundle.fitted
  names = [feature.name for feature in state.features]
  expected = [c for c in census_income.COLUMNS if c not in ("age", "marital_status", "income_label", "instance_weight")]
  assert names == expected and len(names) == 38
  assert "instance_weight" not in names  # a sampling weight, not a feature
  types = {feature.name: type(feature) for feature in state.features}
  for name in census_income.CATEGORICAL_CODES:
    assert types[name] is CategoricalFeature, name
  assert state.feature("year").vocabulary == ("94", "95")
  assert state.feature("veterans_benefits").vocabulary == ("0", "1", "2")
  for name in NUMERIC:
    assert types[name] is NumericFeature, name
  assert sum(t is NumericFeature for t in types.values()) == len(NUMERIC)
  # Values are stripped of their leading space; '?' is a category of its own.
  assert state.feature("class_of_worker").vocabulary == tuple(sorted(TEXT_VALUES))
  assert state.feature("migration_msa").vocabulary == tuple(sorted(TEXT_VALUES + ("<missing>",)))
  industry = state.feature("industry_code")
  assert len(industry.vocabulary) == 40 and industry.encoding == "embedding"
  assert bundle.features.embedded_vocab_sizes == (41,)


def test_val_and_test_are_the_halves_of_the_test_file(bundle):
  assert len(bundle.train) == NUM_TRAIN
  assert len(bundle.val) == len(bundle.test) == NUM_TEST // 2
  assert sorted(ids(bundle, "train").tolist()) == list(range(NUM_TRAIN))
  val, test = set(ids(bundle, "val").tolist()), set(ids(bundle, "test").tolist())
  assert not val & test
  assert val | test == set(range(TEST_ID_OFFSET, TEST_ID_OFFSET + NUM_TEST))


def test_halves_follow_the_seed(data_dir, bundle):
  again = load(data_dir, seed=0)
  np.testing.assert_array_equal(ids(again, "val"), ids(bundle, "val"))
  other = load(data_dir, seed=1)
  assert set(ids(other, "val").tolist()) != set(ids(bundle, "val").tolist())
  assert sorted(ids(other, "train").tolist()) == list(range(NUM_TRAIN))


def test_labels_round_trip(bundle):
  for split in SPLITS:
    row_ids = ids(bundle, split)
    labels = bundle.split(split).labels
    income = [bundle.class_names["income"][i] for i in labels["income"]]
    assert income == ["above_50k" if label == "50000+." else "up_to_50k" for label in column("income_label", row_ids)]
    assert [bundle.class_names["marital"][i] for i in labels["marital"]] == column("marital_status", row_ids)
    mean, std = bundle.target_scale["age"]
    np.testing.assert_allclose(labels["age"] * std + mean, [float(a) for a in column("age", row_ids)], atol=1e-3)


def test_never_married_variant(data_dir):
  bundle = load(data_dir, census_marital="never_married")
  assert bundle.class_names["marital"] == ("never_married", "other")
  assert bundle.tasks[1] == tasks_lib.TaskSpec("marital", tasks_lib.CLASSIFICATION, 2)
  row_ids = ids(bundle, "train")
  expected = ["never_married" if status == "Never married" else "other" for status in column("marital_status", row_ids)]
  assert [bundle.class_names["marital"][i] for i in bundle.train.labels["marital"]] == expected


@pytest.mark.parametrize("suffixes", [(".gz", ".gz"), ("", ".gz")])
def test_gzip_files(tmp_path, bundle, suffixes):
  packed = load(write_pair(tmp_path / "gz", *suffixes))
  assert packed.fitted == bundle.fitted
  for split in SPLITS:
    for key, value in bundle.split(split).features.items():
      np.testing.assert_array_equal(packed.split(split).features[key], value)
    for key, value in bundle.split(split).labels.items():
      np.testing.assert_array_equal(packed.split(split).labels[key], value)


@pytest.mark.parametrize("present", [(), ("census-income.data",), ("census-income.test.gz",)])
def test_absent_files_name_both_files_and_the_flag(tmp_path, present):
  for name in present:
    helpers.write_text(tmp_path / name, uci_text(TRAIN_ROWS[:5]))
  with pytest.raises(UserError) as error:
    load(str(tmp_path))
  message = str(error.value)
  for part in ("census-income.data", "census-income.test", f"--data_dir={tmp_path}"):
    assert part in message, message


def test_unset_data_dir():
  with pytest.raises(UserError, match="--data_dir"):
    load("")

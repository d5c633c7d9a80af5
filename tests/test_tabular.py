"""tabular: preprocessing fitted on the train rows only, against hand-built tables.

Expected values are computed by hand (or with NumPy from the train rows alone),
never by calling the code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

try:
  from tests import table_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import table_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.data import tabular
from mtl_research.data.bundle import EMBEDDED, NUMERIC, FeatureSpec
from mtl_research.data.csv_reader import Table
from mtl_research.data.preprocessing import CategoricalFeature, NumericFeature, Preprocessing, RegressionTarget
from mtl_research.errors import UserError

NAN = np.nan
REG, CLS = tasks_lib.REGRESSION, tasks_lib.CLASSIFICATION


def table(lines=None, **columns) -> Table:
  converted = {}
  for name, values in columns.items():
    if all(isinstance(v, (bytes, str)) for v in values):
      converted[name] = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype="S")
    else:
      converted[name] = np.array(values, np.float64)
  return Table("hand.csv", converted, None if lines is None else np.asarray(lines))


def fit(tab: Table, features, train_rows=None, tasks=None, threshold: int = 32, standardize: bool = True):
  rows = np.arange(tab.num_rows) if train_rows is None else np.asarray(train_rows)
  return tabular.fit(tab, dict(tasks or {}), list(features), rows, threshold, standardize)


# Numeric features.


def test_standardization_uses_train_rows_only():
  tab = table(x=[1.0, 2.0, 3.0, 6.0, 1000.0, -500.0])
  state = fit(tab, ["x"], train_rows=[0, 1, 2, 3])
  feature = state.feature("x")
  assert isinstance(feature, NumericFeature)
  assert feature.mean == pytest.approx(3.0)
  assert feature.std == pytest.approx(np.sqrt((4 + 1 + 0 + 9) / 4))  # population std of 1, 2, 3, 6
  assert feature.indicator is False
  encoded = tabular.encode_features(tab, state)
  assert set(encoded) == {NUMERIC}
  assert encoded[NUMERIC].dtype == np.float32 and encoded[NUMERIC].shape == (6, 1)
  np.testing.assert_allclose(encoded[NUMERIC][:, 0], (tab.columns["x"] - 3.0) / np.sqrt(3.5), rtol=1e-6)


def test_statistics_do_not_leak_from_val_and_test_rows():
  # Train rows: 10, 20, 30, 40 (mean 25, std sqrt(125)); val/test rows are huge.
  # Any statistic computed over all rows would be far off.
  rng = np.random.default_rng(0)
  train = [10.0, 20.0, 30.0, 40.0]
  held_out = list(1e6 + rng.normal(size=6) * 1e5)
  order = np.array([4, 0, 5, 1, 6, 7, 2, 8, 3, 9])  # train rows interleaved with the others
  x = np.array(train + held_out)[np.argsort(order)]
  labels = np.array(["a", "b", "a", "b", "z", "z", "z", "z", "z", "z"])[np.argsort(order)]
  y = np.array([1.0, 2.0, 3.0, 4.0] + [5e6] * 6)[np.argsort(order)]
  tab = table(x=x, y=y, cat=list(labels))
  train_rows = np.flatnonzero(np.argsort(order) < 4)
  state = fit(tab, ["x", "cat"], train_rows=train_rows, tasks={"y": REG})
  feature = state.feature("x")
  assert feature.mean == pytest.approx(25.0)
  assert feature.std == pytest.approx(np.sqrt(125.0))
  assert state.feature("cat").vocabulary == ("a", "b")  # no "z": seen only outside train
  assert state.target("y").mean == pytest.approx(2.5)
  assert state.target("y").std == pytest.approx(np.sqrt(1.25))
  # Encoded train rows have mean 0 and std 1; held-out rows are far out.
  encoded = tabular.encode_features(tab, state)[NUMERIC]
  np.testing.assert_allclose(encoded[train_rows, 0].mean(), 0.0, atol=1e-6)
  np.testing.assert_allclose(encoded[train_rows, 0].std(), 1.0, rtol=1e-5)


def test_missing_numbers_get_the_train_mean_and_an_indicator():
  tab = table(x=[2.0, NAN, 4.0, 9.0, NAN, 100.0])
  state = fit(tab, ["x"], train_rows=[0, 1, 2, 3])
  feature = state.feature("x")
  assert feature.mean == pytest.approx(5.0)  # of the present train values 2, 4, 9
  std = np.std([2.0, 4.0, 9.0])
  assert feature.std == pytest.approx(std)
  assert feature.indicator is True
  encoded = tabular.encode_features(tab, state)[NUMERIC]
  assert encoded.shape == (6, 2)
  np.testing.assert_allclose(
    encoded[:, 0], [(2 - 5) / std, 0.0, (4 - 5) / std, (9 - 5) / std, 0.0, (100 - 5) / std], rtol=1e-6
  )
  np.testing.assert_array_equal(encoded[:, 1], [0, 1, 0, 0, 1, 0])
  assert tabular.feature_spec(state) == FeatureSpec(2, ())


def test_no_indicator_when_train_has_no_missing_values():
  tab = table(x=[1.0, 3.0, NAN])  # missing only in a held-out row
  state = fit(tab, ["x"], train_rows=[0, 1])
  assert state.feature("x").indicator is False
  encoded = tabular.encode_features(tab, state)[NUMERIC]
  assert encoded.shape == (3, 1)
  np.testing.assert_allclose(encoded[:, 0], [-1.0, 1.0, 0.0])  # imputed with the train mean 2


def test_constant_column_is_not_divided_by_zero():
  tab = table(x=[7.0, 7.0, 7.0, 8.0])
  state = fit(tab, ["x"], train_rows=[0, 1, 2])
  feature = state.feature("x")
  assert feature.mean == 7.0 and feature.std == 1.0
  np.testing.assert_allclose(tabular.encode_features(tab, state)[NUMERIC][:, 0], [0, 0, 0, 1])


def test_non_finite_numbers_name_the_column_and_line():
  tab = table(x=[1.0, 2.0, np.inf, 4.0], lines=[2, 3, 9, 10])
  with pytest.raises(UserError, match=r"Column 'x' of hand\.csv has a non-finite value \(inf\) at line 9"):
    fit(tab, ["x"])
  state = fit(table(x=[1.0, 2.0]), ["x"])
  with pytest.raises(UserError, match=r"'x'.*line 10"):
    tabular.encode_features(table(x=[1.0, 2.0, 3.0, -np.inf], lines=[2, 3, 9, 10]), state)


def test_numbers_beyond_float32_are_refused_naming_the_line():
  tab = table(x=[1.0, 2.0, -3.5e38, 4.0], lines=[2, 3, 9, 10])
  with pytest.raises(UserError, match=r"Column 'x' of hand\.csv holds -3\.5e\+38 at line 9, beyond .*float32"):
    fit(tab, ["x"])
  with pytest.raises(UserError, match=r"Column 'y' of hand\.csv holds 1e\+308 at line 3"):
    tabular.check_targets(table(y=[0.0, 1e308], lines=[2, 3]), {"y": REG})


def test_the_largest_float32_numbers_are_standardized_without_overflow():
  top = float(np.finfo(np.float32).max)
  tab = table(x=[top, -top, top, 0.0], y=[top, -top, 0.0, top])
  state = fit(tab, ["x"], tasks={"y": REG})
  feature, target = state.feature("x"), state.target("y")
  assert np.isfinite([feature.mean, feature.std, target.mean, target.std]).all()  # squares of 3.4e38 fit in float64
  assert feature.std == pytest.approx(np.std(np.array([1.0, -1.0, 1.0, 0.0])) * top)
  encoded = tabular.encode_features(tab, state)[NUMERIC][:, 0]
  np.testing.assert_allclose(encoded, (tab.columns["x"] - feature.mean) / feature.std, rtol=1e-6)
  assert np.isfinite(tabular.encode_targets(tab, state)["y"]).all()


def test_a_value_too_many_stds_from_the_train_mean_is_refused_naming_it():
  # The train rows differ by 1e-300: a value of 1 in another split is 1e300 standard deviations away.
  tab = table(x=[0.0, 1e-300, 1.0], y=[0.0, 1e-300, 1.0], lines=[2, 3, 7])
  state = fit(tab, ["x"], train_rows=[0, 1], tasks={"y": REG})
  with pytest.raises(UserError, match=r"Column 'x' of hand\.csv holds 1 at line 7, 2e\+300 standard deviations"):
    tabular.encode_features(tab, state)
  with pytest.raises(UserError, match=r"Column 'y' of hand\.csv holds 1 at line 7, .*float32"):
    tabular.encode_targets(tab, state)


def test_an_array_table_names_the_array_and_its_index():
  columns = {"x0": np.array([1.0, 2.0, 3.0]), "x1": np.array([1.0, np.inf, 3.0]), "y": np.array([b"a", b"b", b"c"])}
  tab = Table("d.npz", columns, arrays={"x0": ("x", 0), "x1": ("x", 1), "y": ("y", None)})
  taken = tab.take(np.array([2, 1]))  # rows keep their index in the arrays
  with pytest.raises(UserError, match=r"^Array 'x' of d\.npz has a non-finite value \(inf\) at x\[1, 1\]\.$"):
    tabular.check_numbers(taken, "x1")
  with pytest.raises(UserError, match=r"Regression target 'y' of d\.npz is not numeric: y\[2\] holds 'c'"):
    tabular.check_targets(taken, {"y": REG})
  assert [taken.where("x0", row) for row in range(2)] == ["x[2, 0]", "x[1, 0]"]


def test_a_regression_target_read_as_text_is_not_blamed_on_a_line():
  with pytest.raises(UserError, match=r"Regression target 'y' of hand\.csv is not numeric: read as text\.$"):
    tabular.check_targets(table(y=["1", "2.5"]), {"y": REG})


# Categorical features.


def test_one_hot_layout_with_an_unseen_slot():
  tab = table(color=["red", "blue", "green", "blue", "purple"])
  state = fit(tab, ["color"], train_rows=[0, 1, 2, 3])
  feature = state.feature("color")
  assert isinstance(feature, CategoricalFeature) and feature.encoding == "one_hot"
  assert feature.vocabulary == ("blue", "green", "red")  # sorted, train rows only
  encoded = tabular.encode_features(tab, state)[NUMERIC]
  expected = np.array(
    [
      [0, 0, 0, 1],  # red
      [0, 1, 0, 0],  # blue
      [0, 0, 1, 0],  # green
      [0, 1, 0, 0],  # blue
      [1, 0, 0, 0],
    ],  # purple: never seen in training -> slot 0
    np.float32,
  )
  np.testing.assert_array_equal(encoded, expected)
  assert tabular.feature_spec(state) == FeatureSpec(4, ())


def test_missing_is_a_category_of_its_own():
  tab = table(c=["a", "", "?", "NA", "NaN", "b", "a"])
  state = fit(tab, ["c"])
  vocabulary = state.feature("c").vocabulary
  assert vocabulary == tuple(sorted(["a", "b", tabular.MISSING]))
  encoded = tabular.encode_features(tab, state)[NUMERIC]
  index = encoded.argmax(axis=1)
  missing_slot = 1 + vocabulary.index(tabular.MISSING)
  np.testing.assert_array_equal(
    index,
    [
      1 + vocabulary.index("a"),
      missing_slot,
      missing_slot,
      missing_slot,
      missing_slot,
      1 + vocabulary.index("b"),
      1 + vocabulary.index("a"),
    ],
  )


def test_missing_seen_only_outside_train_is_unseen():
  tab = table(c=["a", "b", "?"])
  state = fit(tab, ["c"], train_rows=[0, 1])
  assert state.feature("c").vocabulary == ("a", "b")
  np.testing.assert_array_equal(tabular.encode_features(tab, state)[NUMERIC].argmax(axis=1), [1, 2, 0])


def test_unseen_categories_are_counted_per_column_one_hot_and_embedded():
  # Train rows 0-3. Unseen: c "z" twice and a missing value (never missing in train); e "w".
  tab = table(n=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], c=["x", "y", "x", "y", "z", "?", "z"], e=list("abcdwab"))
  state = fit(tab, ["n", "c", "e"], train_rows=[0, 1, 2, 3], threshold=4)
  assert (state.feature("c").encoding, state.feature("e").encoding) == ("one_hot", "embedding")
  encoded, unseen = tabular.encode_features_and_unseen(tab, state)
  assert unseen == {"c": 3, "e": 1}
  np.testing.assert_array_equal(encoded[EMBEDDED][:, 0], [1, 2, 3, 4, 0, 1, 2])
  for key, values in tabular.encode_features(tab, state).items():
    np.testing.assert_array_equal(encoded[key], values)
  # Nothing unseen, no entry: the train rows alone.
  assert tabular.encode_features_and_unseen(tab.take(np.arange(4)), state)[1] == {}


@pytest.mark.parametrize("threshold, encoding", [(5, "one_hot"), (4, "one_hot"), (3, "embedding"), (2, "embedding")])
def test_embedding_switch_at_the_threshold(threshold, encoding):
  # Vocabulary of 3 -> cardinality 4 (with the unseen slot): embedded when 4 > threshold.
  tab = table(n=[1.0, 2.0, 3.0, 4.0], c=["x", "y", "z", "q"])
  state = fit(tab, ["n", "c"], train_rows=[0, 1, 2], threshold=threshold)
  assert state.feature("c").encoding == encoding
  encoded = tabular.encode_features(tab, state)
  if encoding == "one_hot":
    assert tabular.feature_spec(state) == FeatureSpec(1 + 4, ())
    assert set(encoded) == {NUMERIC} and encoded[NUMERIC].shape == (4, 5)
  else:
    assert tabular.feature_spec(state) == FeatureSpec(1, (4,))
    assert encoded[NUMERIC].shape == (4, 1)
    assert encoded[EMBEDDED].dtype == np.int32 and encoded[EMBEDDED].shape == (4, 1)
    np.testing.assert_array_equal(encoded[EMBEDDED][:, 0], [1, 2, 3, 0])  # q: unseen


def test_feature_spec_of_every_kind_together():
  tab = table(a=[1.0, NAN, 3.0], b=[1.0, 2.0, 3.0], c=["x", "y", "x"], d=["p", "q", "r"], e=["1", "2", "3"])
  state = fit(tab, ["a", "b", "c", "d", "e"], threshold=3)
  # a: value + indicator, b: value, c: one-hot 2 + 1, d and e: embedded with 3 + 1 each.
  assert tabular.feature_spec(state) == FeatureSpec(2 + 1 + 3, (4, 4))
  encoded = tabular.encode_features(tab, state)
  assert encoded[NUMERIC].shape == (3, 6) and encoded[EMBEDDED].shape == (3, 2)
  where = helpers.feature_columns(state.to_json())  # the helper reads the file's layout
  np.testing.assert_array_equal(encoded[NUMERIC][:, where["c"][1]], [[0, 1, 0], [0, 0, 1], [0, 1, 0]])
  np.testing.assert_array_equal(encoded[EMBEDDED][:, where["e"][1]], [1, 2, 3])


def test_state_is_json_and_encodes_the_same_after_a_round_trip():
  tab = table(a=[1.0, NAN, 3.0, 5.0], c=["x", "?", "y", "x"], y=[1.0, 2.0, 4.0, 8.0], k=["u", "v", "u", "v"])
  state = fit(tab, ["a", "c"], tasks={"y": REG, "k": CLS})
  loaded = Preprocessing.from_json(json.loads(json.dumps(state.to_json(), sort_keys=True)), "hand.json")
  assert loaded == state
  assert loaded.task_names == ["y", "k"]  # the order of the tasks, not the file's sorted keys
  for key, value in tabular.encode_features(tab, state).items():
    np.testing.assert_array_equal(tabular.encode_features(tab, loaded)[key], value)
  for key, value in tabular.encode_targets(tab, state).items():
    np.testing.assert_array_equal(tabular.encode_targets(tab, loaded)[key], value)


def test_a_column_the_model_was_trained_with_must_exist():
  state = fit(table(x=[1.0, 2.0]), ["x"])
  with pytest.raises(UserError, match=r"hand\.csv has no column 'x'"):
    tabular.encode_features(table(z=[1.0]), state)


# Targets.


def test_string_classes_are_sorted_and_round_trip():
  labels = ["dog", "cat", "emu", "cat", "dog", "ant"]
  tab = table(x=[0.0] * 6, animal=labels)
  state = fit(tab, ["x"], tasks={"animal": CLS})
  assert tabular.class_names(state) == {"animal": ("ant", "cat", "dog", "emu")}
  assert tabular.task_specs(state) == (tasks_lib.TaskSpec("animal", CLS, 4),)
  index = tabular.encode_targets(tab, state)["animal"]
  assert index.dtype == np.int32
  names = tabular.class_names(state)["animal"]
  assert [names[i] for i in index] == labels


def test_integer_classes_are_sorted_numerically_and_round_trip():
  labels = [10.0, 2.0, 2.0, 10.0, 33.0, 2.0]
  tab = table(x=[0.0] * 6, k=labels)
  state = fit(tab, ["x"], tasks={"k": CLS})
  assert tabular.class_names(state) == {"k": ("2", "10", "33")}
  index = tabular.encode_targets(tab, state)["k"]
  np.testing.assert_array_equal(index, [1, 0, 0, 1, 2, 0])
  names = tabular.class_names(state)["k"]
  assert [int(names[i]) for i in index] == [int(v) for v in labels]


def test_integer_classes_read_as_text_are_sorted_numerically():
  tab = table(x=[0.0] * 4, k=["10", "2", "9", "2"])
  state = fit(tab, ["x"], tasks={"k": CLS})
  assert tabular.class_names(state)["k"] == ("2", "9", "10")
  np.testing.assert_array_equal(tabular.encode_targets(tab, state)["k"], [2, 0, 1, 0])


def test_missing_labels_are_not_a_class():
  tab = table(x=[0.0] * 5, k=["b", "?", "a", "", "NA"], n=[1.0, NAN, 2.0, 1.0, 1.0])
  state = fit(tab, ["x"], tasks={"k": CLS, "n": CLS})
  assert tabular.class_names(state) == {"k": ("a", "b"), "n": ("1", "2")}


def test_single_class_is_refused():
  tab = table(x=[0.0] * 3, k=["a", "a", "?"])
  with pytest.raises(UserError, match=r"Classification target 'k' of hand\.csv has 1 class\(es\) \(a\)"):
    fit(tab, ["x"], tasks={"k": CLS})


def test_unknown_class_names_the_line():
  state = fit(table(x=[0.0] * 2, k=["a", "b"]), ["x"], tasks={"k": CLS})
  other = table(x=[0.0] * 3, k=["a", "c", "b"], lines=[5, 6, 7])
  with pytest.raises(UserError, match=r"'k'.*class 'c' at line 6"):
    tabular.encode_targets(other, state)


def test_regression_targets_standardized_with_train_statistics():
  y = [10.0, 20.0, 30.0, 40.0, 1e9]
  tab = table(x=[0.0] * 5, y=y)
  state = fit(tab, ["x"], train_rows=[0, 1, 2, 3], tasks={"y": REG})
  mean, std = 25.0, np.sqrt(125.0)
  target = state.target("y")
  assert isinstance(target, RegressionTarget) and target.kind == REG
  assert (target.mean, target.std) == (pytest.approx(mean), pytest.approx(std))
  assert tabular.target_scale(state) == {"y": (pytest.approx(mean), pytest.approx(std))}
  labels = tabular.encode_targets(tab, state)["y"]
  assert labels.dtype == np.float32
  np.testing.assert_allclose(labels, (np.array(y) - mean) / std, rtol=1e-6)
  # The scale undoes the standardization exactly (metrics are in original units).
  scale_mean, scale_std = tabular.target_scale(state)["y"]
  np.testing.assert_allclose(labels[:4] * scale_std + scale_mean, y[:4], rtol=1e-6)


def test_regression_targets_kept_raw_without_standardization():
  y = [10.0, 20.0, 30.0, 40.0]
  tab = table(x=[0.0] * 4, y=y)
  state = fit(tab, ["x"], tasks={"y": REG}, standardize=False)
  assert tabular.target_scale(state) == {"y": (0.0, 1.0)}
  np.testing.assert_array_equal(tabular.encode_targets(tab, state)["y"], np.array(y, np.float32))


def test_regression_target_ignores_missing_values_in_statistics():
  tab = table(x=[0.0] * 4, y=[1.0, NAN, 3.0, 5.0])
  state = fit(tab, ["x"], tasks={"y": REG})
  assert state.target("y").mean == pytest.approx(3.0)
  assert state.target("y").std == pytest.approx(np.std([1.0, 3.0, 5.0]))


def test_regression_target_must_be_numeric_naming_the_line():
  tab = table(x=[0.0] * 4, y=["1", "2", "lots", "4"], lines=[2, 3, 4, 5])
  with pytest.raises(UserError, match=r"Regression target 'y' of hand\.csv is not numeric: line 4 holds 'lots'"):
    fit(tab, ["x"], tasks={"y": REG})


def test_target_rows_drops_rows_with_any_missing_target():
  tab = table(x=[0.0] * 6, y=[1.0, NAN, 3.0, 4.0, 5.0, 6.0], k=["a", "b", "?", "", "b", "NA"])
  np.testing.assert_array_equal(tabular.target_rows(tab, ["y", "k"]), [True, False, False, False, True, False])
  np.testing.assert_array_equal(tabular.target_rows(tab, ["y"]), [True, False, True, True, True, True])


def test_missing_mask():
  np.testing.assert_array_equal(tabular.missing_mask(np.array([1.0, NAN])), [False, True])
  np.testing.assert_array_equal(
    tabular.missing_mask(np.array([b"a", b"", b"?", b"NA", b"NaN"])), [False, True, True, True, True]
  )

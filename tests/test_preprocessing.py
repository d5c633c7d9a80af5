"""preprocessing: the typed fitted encoding, its one reader and one writer of preprocessing.json."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mtl_research import tasks as tasks_lib
from mtl_research.data import preprocessing, tabular
from mtl_research.data.bundle import DatasetBundle, Split
from mtl_research.data.csv_reader import Table
from mtl_research.data.preprocessing import (
  CategoricalFeature,
  ClassificationTarget,
  NumericFeature,
  Preprocessing,
  RegressionTarget,
)
from mtl_research.errors import UserError

# What the trainer wrote before the typed reader existed (tabular.fit's dict,
# json.dumps with indent=2 and sorted keys): the bytes must not change.
LEGACY_TEXT = """{
  "features": [
    {
      "indicator": true,
      "mean": 2.5,
      "name": "x",
      "std": 1.25,
      "type": "numeric"
    },
    {
      "encoding": "one_hot",
      "name": "color",
      "type": "categorical",
      "vocabulary": [
        "<missing>",
        "blue",
        "red"
      ]
    },
    {
      "encoding": "embedding",
      "name": "city",
      "type": "categorical",
      "vocabulary": [
        "a",
        "b",
        "c"
      ]
    }
  ],
  "targets": {
    "kind": {
      "classes": [
        "2",
        "7",
        "10"
      ],
      "kind": "classification"
    },
    "price": {
      "kind": "regression",
      "mean": 100.0,
      "std": 35.5
    }
  },
  "task_order": [
    "price",
    "kind"
  ],
  "version": 1
}
"""

EXPECTED = Preprocessing(
  features=(
    NumericFeature("x", 2.5, 1.25, True),
    CategoricalFeature("color", ("<missing>", "blue", "red"), "one_hot"),
    CategoricalFeature("city", ("a", "b", "c"), "embedding"),
  ),
  targets=(RegressionTarget("price", 100.0, 35.5), ClassificationTarget("kind", ("2", "7", "10"))),
)


def write_text(path, text: str) -> str:
  with open(path, "w", encoding="utf-8") as handle:
    handle.write(text)
  return str(path)


def legacy() -> dict:
  return json.loads(LEGACY_TEXT)


# Round trip.


def test_reads_what_the_trainer_wrote_and_writes_the_same_bytes(tmp_path):
  path = write_text(tmp_path / "preprocessing.json", LEGACY_TEXT)
  state = preprocessing.read(path)
  assert state == EXPECTED
  assert state.version == preprocessing.VERSION == 1
  assert state.task_names == ["price", "kind"]  # the heads' order, not the file's sorted keys
  copy = str(tmp_path / "copy.json")
  preprocessing.write(copy, state)
  with open(copy, encoding="utf-8") as handle:
    assert handle.read() == LEGACY_TEXT


def test_round_trip_of_a_fitted_state(tmp_path):
  nan = np.nan
  table = Table(
    "hand.csv",
    {
      "a": np.array([1.0, nan, 3.0, 5.0]),
      "c": np.array([b"x", b"?", b"y", b"x"]),
      "y": np.array([1.0, 2.0, 4.0, 8.0]),
      "k": np.array([b"u", b"v", b"u", b"v"]),
    },
    None,
  )
  state = tabular.fit(
    table,
    {"y": tasks_lib.REGRESSION, "k": tasks_lib.CLASSIFICATION},
    ["a", "c"],
    np.arange(4),
    embedding_threshold=32,
    standardize_targets=True,
  )
  path = str(tmp_path / "preprocessing.json")
  preprocessing.write(path, state)
  assert preprocessing.read(path) == state
  assert not [name for name in os.listdir(tmp_path) if name != "preprocessing.json"]  # no temporary file left
  with open(path, encoding="utf-8") as handle:
    assert json.load(handle)["version"] == 1


def test_a_file_without_version_is_read_as_version_1(tmp_path):
  document = legacy()
  del document["version"]
  assert preprocessing.read(write_text(tmp_path / "p.json", json.dumps(document))) == EXPECTED


def test_a_file_without_task_order_takes_the_order_of_its_targets(tmp_path):
  document = legacy()
  del document["task_order"]  # written before the order of --tasks was kept: the keys' order, as before
  state = preprocessing.read(write_text(tmp_path / "p.json", json.dumps(document, sort_keys=True)))
  assert state.task_names == ["kind", "price"]


def test_with_tasks_keeps_the_head_order():
  assert EXPECTED.with_tasks(["kind"]).task_names == ["kind"]
  assert EXPECTED.with_tasks(["kind", "price"]).task_names == ["price", "kind"]
  assert EXPECTED.with_tasks([]).features == EXPECTED.features


def test_a_single_task_bundle_keeps_its_target_only():
  split = Split(
    {"numeric": np.zeros([2, 1], np.float32)}, {"price": np.zeros(2, np.float32), "kind": np.zeros(2, np.int32)}
  )
  bundle = DatasetBundle(tabular.task_specs(EXPECTED), split, split, split, fitted=EXPECTED)
  only = bundle.only("kind")
  assert only.fitted.task_names == ["kind"] and only.fitted.features == EXPECTED.features
  assert only.preprocessing["task_order"] == ["kind"] and list(only.preprocessing["targets"]) == ["kind"]


def test_a_document_passed_as_fitted_is_checked_naming_its_origin():
  assert preprocessing.coerce(legacy(), "resumed") == EXPECTED
  assert preprocessing.coerce(EXPECTED, "resumed") is EXPECTED and preprocessing.coerce(None, "resumed") is None
  document = legacy()
  document["version"] = 2
  with pytest.raises(UserError, match="^The resumed run's preprocessing.json is not"):
    preprocessing.coerce(document, "The resumed run's preprocessing.json")


# Refusals: one sentence naming the file.


def _set(path: list, value):
  def change(document):
    target = document
    for key in path[:-1]:
      target = target[key]
    target[path[-1]] = value
    return document

  return change


def _delete(path: list):
  def change(document):
    target = document
    for key in path[:-1]:
      target = target[key]
    del target[path[-1]]
    return document

  return change


REFUSED = {
  # name: (change to the legacy document, or the file's text; words the message holds)
  "newer-version": (_set(["version"], 2), ["version 2", "newer"]),
  "version-zero": (_set(["version"], 0), ["unknown version 0"]),
  "version-as-text": (_set(["version"], "1"), ['unknown version "1"']),
  "version-null": (_set(["version"], None), ["unknown version null"]),
  "not-json": ('{"features": [', ["not JSON"]),
  "empty-file": ("", ["not JSON"]),
  "a-list": ("[]", ["not a JSON object"]),
  "features-missing": (_delete(["features"]), ["has no 'features'"]),
  "targets-missing": (_delete(["targets"]), ["has no 'targets'"]),
  "unknown-top-level-key": (_set(["vocabularies"], []), ["unknown key 'vocabularies'"]),
  "features-not-a-list": (_set(["features"], {}), ["features is not a JSON list"]),
  "numeric-without-std": (_delete(["features", 0, "std"]), ["features[0] has no 'std'"]),
  "zero-std": (_set(["features", 0, "std"], 0.0), ["features[0].std", "positive"]),
  "nan-mean": (_set(["features", 0, "mean"], float("nan")), ["features[0].mean is NaN"]),
  "mean-as-text": (_set(["features", 0, "mean"], "2.5"), ["features[0].mean", "finite number"]),
  "indicator-not-bool": (_set(["features", 0, "indicator"], 1), ["features[0].indicator", "true or false"]),
  "unknown-feature-type": (_set(["features", 1, "type"], "text"), ['features[1].type is "text"']),
  "misspelt-key": (_set(["features", 1, "vocab"], []), ["features[1] has an unknown key 'vocab'"]),
  "unknown-encoding": (_set(["features", 2, "encoding"], "hash"), ["features[2].encoding"]),
  "vocabulary-of-numbers": (_set(["features", 2, "vocabulary"], [1, 2]), ["features[2].vocabulary[0]"]),
  "duplicate-category": (_set(["features", 2, "vocabulary"], ["a", "a"]), ["category 'a' twice"]),
  "duplicate-feature": (_set(["features", 2, "name"], "x"), ["feature 'x' twice"]),
  "unknown-target-kind": (_set(["targets", "price", "kind"], "ranking"), ["targets.price.kind"]),
  "one-class": (_set(["targets", "kind", "classes"], ["2"]), ["targets.kind.classes", "fewer than 2"]),
  "task-order-without-a-target": (_set(["task_order"], ["price"]), ["task_order"]),
  "task-order-twice": (_set(["task_order"], ["price", "kind", "kind"]), ["task 'kind' twice"]),
  # Valid JSON of the wrong shape, and documents no run could have written.
  "feature-type-a-list": (_set(["features", 0, "type"], ["numeric"]), ['features[0].type is ["numeric"]']),
  "target-kind-an-object": (_set(["targets", "price", "kind"], {}), ["targets.price.kind is {}"]),
  "feature-a-string": (_set(["features", 1], "color"), ["features[1] is not a JSON object"]),
  "targets-a-list": (_set(["targets"], []), ["targets is not a JSON object"]),
  "no-features": (_set(["features"], []), ["features is empty"]),
  "no-targets": (lambda d: {**d, "targets": {}, "task_order": []}, ["targets is empty"]),
  "feature-named-like-a-target": (_set(["features", 0, "name"], "price"), ["'price' is both a feature and a target"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unreadable_files_are_refused_in_one_sentence_naming_them(tmp_path, case):
  change, words = REFUSED[case]
  text = change if isinstance(change, str) else json.dumps(change(legacy()), indent=2, sort_keys=True)
  path = write_text(tmp_path / "preprocessing.json", text)
  with pytest.raises(UserError) as error:
    preprocessing.read(path)
  message = str(error.value)
  assert message.startswith(f"{path} is not a preprocessing file this version of mtl_research can read ("), message
  assert "\n" not in message and message.endswith(").") and message.count(". ") == 0, message
  for word in words:
    assert word in message, (word, message)


def test_a_missing_file_is_refused_naming_it(tmp_path):
  path = str(tmp_path / "absent.json")
  with pytest.raises(UserError, match=f"^{path} cannot be read"):
    preprocessing.read(path)


JSON_VALUES = (None, True, 0, -1, 2.5, 1e309, "numeric", "", [], ["a"], [1], {}, {"a": 1})


def _nodes(value, path=()):
  """The path of every value inside a JSON document (lists by index, objects by key)."""
  yield path
  children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
  for key, child in children:
    yield from _nodes(child, path + (key,))


def test_no_document_of_any_shape_gets_past_the_reader_with_another_exception():
  # Every value of the file replaced by every kind of JSON value: read or refused (UserError), nothing else.
  refused = 0
  for path in list(_nodes(legacy()))[1:]:
    for value in JSON_VALUES:
      try:
        preprocessing.coerce(_set(list(path), value)(legacy()), "F")
      except UserError as error:
        assert str(error).startswith("F is not a preprocessing file"), str(error)
        refused += 1
  assert refused > 300

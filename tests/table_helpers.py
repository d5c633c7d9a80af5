"""Helpers of the tabular-data tests: writing CSV files, loading a source,
finding a feature's columns in the encoded matrix, a mixed-type table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import gzip
from typing import Any

import numpy as np

from mtl_research.data import DATASETS


def write_text(path: str, text: str) -> str:
  """Writes `text` to `path` (gzip-compressed when it ends in .gz); returns the path."""
  path = str(path)
  if path.endswith(".gz"):
    with gzip.open(path, "wt", encoding="utf-8") as handle:
      handle.write(text)
  else:
    with open(path, "w", encoding="utf-8") as handle:
      handle.write(text)
  return path


def csv_text(header: Sequence[str] | None, rows: Sequence[Sequence[Any]]) -> str:
  lines = [",".join(header)] if header is not None else []
  lines += [",".join(str(value) for value in row) for row in rows]
  return "\n".join(lines) + "\n"


def write_csv(path: str, header: Sequence[str] | None, rows: Sequence[Sequence[Any]]) -> str:
  return write_text(path, csv_text(header, rows))


def source_params(name: str, **overrides) -> dict[str, Any]:
  """Every Param of dataset source `name` at its parsed default, then `overrides`."""
  params = {param.name: param.parse(param.default) for param in DATASETS.get(name).params}
  unknown = set(overrides) - set(params)
  assert not unknown, f"{name} has no params {sorted(unknown)}"
  params.update(overrides)
  return params


def load(name: str, seed: int = 0, fitted: Mapping | None = None, **overrides):
  """The bundle of source `name`, called the way the trainer calls it."""
  return DATASETS.get(name).component(source_params(name, **overrides), seed, fitted)


def feature_columns(state: Mapping[str, Any]) -> dict[str, tuple[str, slice | int]]:
  """Where each feature lands: name -> ("numeric", column slice) or ("embedded", column index).

  Follows the documented layout: features in order; a numeric feature takes one
  column (two with a missing indicator), a one-hot feature vocabulary + 1
  columns (column 0 = unseen); embedded features are columns of "embedded".
  """
  where, offset, embedded = {}, 0, 0
  for feature in state["features"]:
    if feature["type"] == "numeric":
      width = 2 if feature["indicator"] else 1
    elif feature["encoding"] == "one_hot":
      width = len(feature["vocabulary"]) + 1
    else:
      where[feature["name"]] = ("embedded", embedded)
      embedded += 1
      continue
    where[feature["name"]] = ("numeric", slice(offset, offset + width))
    offset += width
  return where


def feature_state(state: Mapping[str, Any], name: str) -> Mapping[str, Any]:
  return next(feature for feature in state["features"] if feature["name"] == name)


def numeric_values(split, state: Mapping[str, Any], name: str) -> np.ndarray:
  """A numeric feature of an encoded split, back in its original units (float64)."""
  group, columns = feature_columns(state)[name]
  assert group == "numeric"
  feature = feature_state(state, name)
  return split.features["numeric"][:, columns][:, 0].astype(np.float64) * feature["std"] + feature["mean"]


def row_ids(split, state: Mapping[str, Any], name: str = "rid") -> np.ndarray:
  """Integer row ids stored in numeric feature `name`, decoded from an encoded split."""
  return np.round(numeric_values(split, state, name)).astype(np.int64)


# A mixed-type table: every kind of column the csv source handles.
MIXED_HEADER = ("rid", "num", "color", "zip", "city", "y", "b", "c")
MIXED_TASKS = (("y", "regression"), ("b", "classification"), ("c", "classification"))
MIXED_COLORS = ("red", "green", "blue")
MIXED_C_LABELS = (2, 10, 7)  # integer class labels: sorted numerically as 2, 7, 10


def mixed_rows(num_rows: int = 200, seed: int = 0) -> list[list[str]]:
  """Rows of MIXED_HEADER as strings.

  rid: unique row id (numeric feature, lets tests find rows after the split);
  num: numeric with missing values; color: 3 categories with '?' missing;
  zip: numeric-looking codes; city: 40 categories (embedded at threshold 32);
  y: regression target, mean ~1000, std ~100; b: yes/no; c: integer labels.
  Rows 3, 50, 101 miss y; rows 7 and 150 miss b ("?" and "NA"): 5 rows dropped.
  """
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(num_rows):
    num = rng.normal(5.0, 2.0)
    y = 1000.0 + 60.0 * (num - 5.0) / 2.0 + 80.0 * rng.normal()
    color = MIXED_COLORS[i % 3]
    rows.append(
      [
        str(i),
        "" if i % 17 == 5 else ("NA" if i % 23 == 4 else f"{num:.4f}"),
        "?" if i % 19 == 2 else color,
        f"{100 + i % 5:05d}",
        f"city{i % 40}",
        f"{y:.3f}",
        "yes" if (num > 5.0) != (i % 11 == 0) else "no",
        str(MIXED_C_LABELS[(i // 2) % 3]),
      ]
    )
  for i in (3, 50, 101, 7, 150):
    if i < num_rows:
      rows[i][5 if i in (3, 50, 101) else 6] = {7: "?", 150: "NA"}.get(i, "")
  return rows


MIXED_DROPPED = 5


def write_mixed(path: str, num_rows: int = 200, seed: int = 0) -> tuple[str, list[list[str]]]:
  rows = mixed_rows(num_rows, seed)
  return write_csv(path, MIXED_HEADER, rows), rows


def by_id(rows: Sequence[Sequence[str]]) -> dict[int, Sequence[str]]:
  return {int(row[0]): row for row in rows}


# A fake sweep directory for the reports (mtl-summarize): written by hand, nothing trained.

FAKE_TASKS = {"y": {"kind": "regression", "num_classes": 0}, "c": {"kind": "classification", "num_classes": 3}}
FAKE_BALANCERS = ("fixed", "uncertainty")
FAKE_SEEDS = (0, 1)


def fake_metrics(balancer: str, seed: int, single_task: str | None = None) -> dict[str, Any]:
  """metrics.json as the trainer writes it (train/loop.py), with values that depend on the balancer and seed."""
  tasks = {name: info for name, info in FAKE_TASKS.items() if single_task in (None, name)}
  shift = seed / 10 + (0.05 if balancer == "uncertainty" else 0.0)
  every = {
    "y": {"mse": 1.0 + shift, "mae": 0.8 + shift, "r2": 0.5},
    "c": {"accuracy": 0.7 + shift / 10, "cross_entropy": 0.6},
  }
  test = {name: every[name] for name in tasks}
  return {
    "val": test,
    "test": test,
    "weights": {name: 1.0 for name in tasks},
    "selected_weights": {name: 1.0 for name in tasks},
    "selection": {"criterion": "mean_loss", "step": 40, "val_score": 0.5},
    "single_task": single_task,
    "steps": 40,
    "balancer": balancer,
    "dataset": "csv",
    "tasks": tasks,
  }


def write_fake_sweep(root, balancers=FAKE_BALANCERS, seeds=FAKE_SEEDS, with_single_task: bool = True) -> str:
  """root/sweep: sweep.json and every run of it finished (flags.txt, run.json, metrics.json), as
  mtl-ablate and the trainer write them; returns the sweep directory."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top

  from mtl_research.sweep import plan  # pylint: disable=g-import-not-at-top
  from mtl_research.train import run_dir  # pylint: disable=g-import-not-at-top

  sweep_dir = os.path.join(str(root), "sweep")
  os.makedirs(os.path.join(sweep_dir, plan.RUNS_DIR))
  with open(os.path.join(sweep_dir, plan.SWEEP_FILE), "w", encoding="utf-8") as handle:
    json.dump(plan.definition(balancers, seeds, {}, ["--train_steps=40"], with_single_task), handle, indent=2)
  tasks = list(FAKE_TASKS) if with_single_task else []
  for spec in plan.expand(balancers, seeds, {}, tasks):
    path = os.path.join(sweep_dir, plan.RUNS_DIR, spec.name)
    os.makedirs(path)
    flag_values = {"balancer": spec.balancer, "seed": str(spec.seed), "single_task": spec.single_task or ""}
    with open(os.path.join(path, run_dir.FLAGS_FILE), "w", encoding="utf-8") as handle:
      handle.write(run_dir.flag_file_text({**flag_values, "train_steps": "40"}))
    with open(os.path.join(path, run_dir.RUN_FILE), "w", encoding="utf-8") as handle:
      json.dump(spec.to_json(), handle, indent=2)
    with open(os.path.join(path, run_dir.METRICS_FILE), "w", encoding="utf-8") as handle:
      json.dump(fake_metrics(spec.balancer, spec.seed, spec.single_task), handle, indent=2, allow_nan=False)
  return sweep_dir

"""What a tabular source inferred from its files, as a short text for the user.

`build_bundle` (table_source.py) fills a `DataSummary` (rows read, dropped
and kept, the fitted preprocessing, the categories never seen in training);
`render` turns it into the lines that `mtl-train` prints before training and
writes to `<run_dir>/data_summary.txt`, and `unseen_line` is the one line per
split or file that names the unseen categories (evaluate prints it too).
Pure: no TensorFlow, no files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import os

from mtl_research.data import preprocessing
from mtl_research.data.preprocessing import CategoricalFeature, ClassificationTarget, NumericFeature, Preprocessing

SUMMARY_FILE = "data_summary.txt"  # in the run directory
SPLITS = ("train", "val", "test")
WIDTH = 120  # longer lists wrap: a table of many columns stays a few lines per feature type
MAX_CLASSES_SHOWN = 10
MAX_COLUMNS_SHOWN = 40  # per feature type: a table of hundreds of columns still gives a few lines


@dataclasses.dataclass(frozen=True)
class SourceRows:
  """The data rows of one file as read, and how many of them were dropped."""

  path: str
  read: int
  dropped: int  # rows with a missing target: a row is kept only if every task has its label


@dataclasses.dataclass(frozen=True)
class DataSummary:
  """What a tabular source read and inferred, for `render`."""

  # One file divided by --split (`split` holds its fractions), or one file per split in SPLITS order.
  sources: tuple[SourceRows, ...]
  split: tuple[float, ...] | None
  rows: Mapping[str, int]  # split -> rows kept
  unseen: Mapping[str, Mapping[str, int]]  # split -> column -> values never seen in training (non-zero only)
  preprocessing: Preprocessing
  reused: bool  # the resumed run's preprocessing.json, not fitted on this data

  def with_tasks(self, names: Iterable[str]) -> DataSummary:
    """The same summary for the tasks `names` only (a single-task run)."""
    return dataclasses.replace(self, preprocessing=self.preprocessing.with_tasks(names))


def unseen_line(where: str, counts: Mapping[str, int]) -> str | None:
  """`unseen categories in WHERE: city 3, job 1`, or None when there are none."""
  if not counts:
    return None
  return f"unseen categories in {where}: " + ", ".join(f"{name} {count:,}" for name, count in counts.items())


def render(summary: DataSummary) -> str:
  """The summary as a few lines of text (ending with a newline)."""
  state = summary.preprocessing
  origin = "reused from the run's preprocessing.json" if summary.reused else "fitted on the train split"
  lines = [f"Data summary (preprocessing {origin}):", "  " + _rows(summary)]
  lines += _features(state)
  lines += [_target(target) for target in state.targets]
  lines += ["  " + line for split in SPLITS if (line := unseen_line(split, summary.unseen.get(split, {})))]
  return "\n".join(lines) + "\n"


def _rows(summary: DataSummary) -> str:
  if summary.split is not None:
    (source,) = summary.sources
    kept = ", ".join(f"{name} {summary.rows[name]:,}" for name in SPLITS)
    fractions = ",".join(f"{fraction:g}" for fraction in summary.split)
    return f"rows: {kept} (--split={fractions} of {_source(source)})"
  parts = [f"{name} {summary.rows[name]:,} ({_source(source)})" for name, source in zip(SPLITS, summary.sources)]
  return "rows: " + ", ".join(parts)


def _source(source: SourceRows) -> str:
  # The file's name only: the full paths are in flags.txt, and a line per split must stay short.
  name = os.path.basename(source.path)
  if not source.dropped:
    return name
  return f"{name}: {source.read:,} read, {source.dropped:,} dropped for a missing target"


def _features(state: Preprocessing) -> list[str]:
  numeric = [f for f in state.features if isinstance(f, NumericFeature)]
  categorical = [f for f in state.features if isinstance(f, CategoricalFeature)]
  groups = (
    ("numeric", [f.name for f in numeric]),
    ("missing indicators added", [f.name for f in numeric if f.indicator]),
    ("one-hot, categories seen in training", _cardinalities(categorical, preprocessing.ONE_HOT)),
    ("embedded, categories seen in training", _cardinalities(categorical, preprocessing.EMBEDDING)),
  )
  lines = [f"  features: {len(state.features)} columns"]
  for label, items in groups:
    if items:
      lines.append(_wrapped(f"    {label} ({len(items)}): ", _elided(items, MAX_COLUMNS_SHOWN)))
  return lines


def _elided(items: Sequence[str], limit: int) -> list[str]:
  """The first `limit` items, then `... N more` if there are more."""
  return list(items[:limit]) + ([f"... {len(items) - limit} more"] if len(items) > limit else [])


def _cardinalities(features: Sequence[CategoricalFeature], encoding: str) -> list[str]:
  return [f"{f.name} {len(f.vocabulary):,}" for f in features if f.encoding == encoding]


def _wrapped(head: str, items: Sequence[str]) -> str:
  """`head` and the items, comma-separated, wrapped before WIDTH between items (never inside one)."""
  lines, line = [], head.rstrip()
  for i, item in enumerate(items):
    piece = item + ("," if i < len(items) - 1 else "")
    if len(line) + 1 + len(piece) > WIDTH and line.strip() and not line.endswith(":"):
      lines.append(line)
      line = " " * 5
    line += " " + piece
  return "\n".join(lines + [line])


def _target(target: preprocessing.Target) -> str:
  if not isinstance(target, ClassificationTarget):
    return f"  task {target.name}: regression"
  shown = _elided(target.classes, MAX_CLASSES_SHOWN)
  return _wrapped(f"  task {target.name}: classification, {len(target.classes)} classes:", shown)

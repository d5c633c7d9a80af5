"""`--dataset=npz`: a NumPy .npz file with an `x` array [N, D] and one array [N] per task.

The arrays become a table with feature columns x0..x{D-1} and one column per
task, then follow the same path as a CSV file (tabular.py): standardized
features, classification labels mapped to classes, --split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
import zipfile

import numpy as np

from mtl_research.data import table_source
from mtl_research.data.csv_reader import Table, check_file
from mtl_research.data.preprocessing import Preprocessing
from mtl_research.data.registry import DATASETS
from mtl_research.errors import UserError
from mtl_research.params import STRING, Param

PARAMS = table_source.PARAMS + (
  Param("npz_path", STRING, "", "NumPy .npz file for --dataset=npz: an array x [N, D] and one array per task."),
)


def read(path: str, task_names: list[str]) -> Table:
  """The arrays of `path` as a table whose messages name an array and an index (Table.where)."""
  if not path:
    raise UserError("--dataset=npz needs --npz_path=FILE.")
  check_file(path, "NumPy file")
  if not zipfile.is_zipfile(path):  # np.load would return a .npy array, or fail without naming the file
    raise UserError(f"NumPy file {path} is not a .npz archive of named arrays (np.savez writes one).")
  try:
    with np.load(path, allow_pickle=False) as archive:  # never unpickle user files
      data = {name: archive[name] for name in archive.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
    raise UserError(f"NumPy file {path} cannot be read as .npz ({error}).") from None
  if "x" not in data:
    raise UserError(f"NumPy file {path} has no array 'x' (its arrays: {', '.join(data) or 'none'}).")
  x = data["x"]
  if x.ndim != 2 or not _is_real(x):
    raise UserError(f"Array 'x' of {path} must be a real-valued matrix [rows, features], not {x.dtype} {x.shape}.")
  if len(x) == 0:
    raise UserError(f"Array 'x' of {path} has no rows.")
  columns = {f"x{i}": x[:, i].astype(np.float64) for i in range(x.shape[1])}
  arrays: dict[str, tuple[str, int | None]] = {f"x{i}": ("x", i) for i in range(x.shape[1])}
  for name in task_names:
    if name not in data:
      raise UserError(f"--tasks names {name!r}, which {path} does not have (its arrays: {', '.join(data)}).")
    if name in columns:
      raise UserError(f"--tasks names {name!r}, which is also the name of column {name[1:]} of array 'x' of {path}.")
    column = data[name]
    if column.shape != (len(x),):
      raise UserError(f"Array {name!r} of {path} has shape {column.shape}; expected ({len(x)},) like 'x'.")
    if np.iscomplexobj(column):
      raise UserError(f"Array {name!r} of {path} holds complex numbers ({column.dtype}); a target is real or text.")
    columns[name] = column.astype(np.float64) if _is_real(column) else column.astype(bytes)
    arrays[name] = (name, None)
  return Table(path, columns, arrays=arrays)


def _is_real(array: np.ndarray) -> bool:
  """Integers or floats: numbers a column holds as float64 (complex ones are not; booleans are classes)."""
  return np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)


@DATASETS.register("npz", params=PARAMS)
def load(params: Mapping[str, Any], seed: int, fitted: Preprocessing | Mapping | None = None):
  """Arrays from a NumPy .npz file: --npz_path, --tasks, --split."""
  kinds = table_source.task_kinds(params, "npz")
  table = read(params["npz_path"], list(kinds))
  features = [name for name in table.columns if name not in kinds]
  return table_source.build_bundle([table], kinds, features, params, seed, fitted, embedding_threshold=2**31)

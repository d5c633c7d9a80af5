"""Fast reading of CSV files (plain or .gz) into typed columns.

Two parsers, one table. TensorFlow's C++ CSV decoder parses lines in chunks,
one pass over the file: 1 million rows × 50 columns in about 12 s on 2 cores
(the figure comes from `python -m mtl_research.data.csv_reader FILE`;
tests/test_csv_reader.py checks the reader on small files and times nothing).
It takes strict CSV only, so a file it refuses is read again with Python's
csv module (about half as fast: 200,000 rows × 50 columns in 6.4 s against
2.9 s), which also takes what spreadsheets and pandas write: line breaks
inside quoted fields, a space before an opening quote (`1, "New York"`), a
quote inside an unquoted value (`5'11"`), old Mac line ends (a lone carriage
return). What that one refuses (a quote never closed, text after a closing
quote, a row whose number of fields is not the header's) is reported with
its line.

A column is numeric until one of its non-missing values fails to parse, then
it is kept as strings (categorical). The first line is the header (unless
`names` is given). Blank lines are skipped. Line numbers are physical lines of
the file, the header and blank lines counted; a row that spans lines is named
by its first line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
import csv
import dataclasses
import gzip
import io
import os
import sys
import time
import zlib

import numpy as np
import tensorflow as tf

from mtl_research.errors import UserError

MISSING_TOKENS = ("", "?", "NA", "NaN")
CHUNK_LINES = 65536


@dataclasses.dataclass
class Table:
  """Columns of a file: float64 (NaN = missing) or bytes arrays (dtype S, stripped).

  Messages name a value where its file has it: a CSV file's line, or an
  array file's array and index (`arrays` maps each column to its array and,
  for a column of a matrix, its column in it).
  """

  path: str
  columns: dict[str, np.ndarray]
  # Where each row is in its file: its line (CSV, 1-based) or its index (arrays, 0-based).
  # None: row + 2 for a CSV file (header on line 1), row for arrays.
  lines: np.ndarray | None = None
  arrays: Mapping[str, tuple[str, int | None]] | None = None

  @property
  def num_rows(self) -> int:
    return len(next(iter(self.columns.values()))) if self.columns else 0

  def is_numeric(self, name: str) -> bool:
    return self.columns[name].dtype == np.float64

  def positions(self) -> np.ndarray:
    """Where each row is in the file (see `lines`), as an int64 array."""
    if self.lines is not None:
      return np.asarray(self.lines, np.int64)
    return np.arange(self.num_rows, dtype=np.int64) + (0 if self.arrays is not None else 2)

  def line_of(self, row: int) -> int:
    """Where data row `row` is in the file: its 1-based line (the header is line 1), or its array index."""
    if self.lines is not None:
      return int(self.lines[row])
    return row if self.arrays is not None else row + 2

  def where(self, name: str, row: int) -> str:
    """The place of column `name`'s value in row `row`, as a message names it: "line 14", "x[23, 1]", "y[17]"."""
    if self.arrays is None:
      return f"line {self.line_of(row)}"
    array, column = self.arrays[name]
    return f"{array}[{self.line_of(row)}]" if column is None else f"{array}[{self.line_of(row)}, {column}]"

  def label(self, name: str) -> str:
    """Column `name` as a message names it: "Column 'num' of FILE", or "Array 'x' of FILE" for arrays."""
    if self.arrays is None:
      return f"Column {name!r} of {self.path}"
    return f"Array {self.arrays[name][0]!r} of {self.path}"

  def take(self, rows: np.ndarray) -> Table:
    """The rows `rows` (indices) as a new table that still knows where they are in the file."""
    columns = {name: column[rows] for name, column in self.columns.items()}
    return Table(self.path, columns, self.positions()[rows], self.arrays)


def _open_text(path: str, newline: str | None = None) -> io.TextIOBase:
  # A spreadsheet's byte-order mark is not part of a name; bytes that are not UTF-8 pass through
  # (surrogateescape) as TensorFlow's decoder passes them.
  if path.endswith(".gz"):
    return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="surrogateescape", newline=newline)
  return open(path, encoding="utf-8-sig", errors="surrogateescape", newline=newline)


def check_file(path: str, what: str = "CSV file") -> None:
  """Raises UserError unless `path` is a regular file (`what` names it in the message)."""
  if os.path.isdir(path):
    raise UserError(f"{what} {path} is a directory, not a file.")
  if not os.path.exists(path):
    raise UserError(f"{what} {path} does not exist.")
  if not os.path.isfile(path):
    raise UserError(f"{what} {path} is not a regular file.")


def read_header(path: str) -> list[str]:
  """Column names from the first line; raises UserError for a missing or empty file."""
  check_file(path)
  try:
    with _open_text(path) as handle:
      first = handle.readline()
  except (OSError, EOFError) as error:
    raise UserError(f"CSV file {path} cannot be read ({error}).") from None
  names = next(csv.reader([first], skipinitialspace=True), [])
  names = [name.strip() for name in names]
  if not first.strip() or not any(names):
    raise UserError(f"CSV file {path} is empty; its first line must name the columns.")
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates or "" in names:
    culprit = f"repeats column {duplicates[0]!r}" if duplicates else "has a column without a name"
    raise UserError(f"CSV file {path} {culprit} in its header.")
  return names


def _missing(column: tf.Tensor) -> tf.Tensor:
  mask = tf.equal(column, MISSING_TOKENS[0])
  for token in MISSING_TOKENS[1:]:
    mask = tf.logical_or(mask, tf.equal(column, token))
  return mask


@tf.function
def _to_number(column: tf.Tensor) -> tf.Tensor:
  missing = _missing(column)
  values = tf.strings.to_number(tf.where(missing, "0", column), tf.float64)
  return tf.where(missing, tf.constant(np.nan, tf.float64), values)


def check_gzip(path: str) -> None:
  """Raises UserError unless `path` is a complete gzip stream (its CRC and length check out).

  TensorFlow's reader stops quietly at the end of a cut .gz file, so a file
  cut at a line end would otherwise train on the rows before the cut. One
  streaming decompression (a few ms per MB) reads to the trailer.
  """
  try:
    with gzip.open(path, "rb") as handle:
      while handle.read(1 << 22):
        pass
  except (EOFError, OSError, zlib.error):
    raise UserError(f"CSV file {path} is truncated or not valid gzip.") from None


# A chunk of rows: the line of each row and its columns (stripped strings).
Chunk = tuple[np.ndarray, list[tf.Tensor]]
Parser = Callable[[str, int, bool], Iterator[Chunk]]


class _Refused(Exception):
  """TensorFlow's decoder refused a line: the file is read again with Python's csv module."""


def _tensorflow_chunks(path: str, num_fields: int, header: bool) -> Iterator[Chunk]:
  """The fast parser: TensorFlow's decoder, one physical line per row."""
  defaults = [[""]] * num_fields

  @tf.function
  def decode(lines):
    # Blank lines are skipped (vectorized: a per-line tf.data filter is 4x slower).
    kept = tf.where(tf.strings.length(tf.strings.strip(lines)) > 0)[:, 0]
    return kept, [tf.strings.strip(c) for c in tf.io.decode_csv(tf.gather(lines, kept), defaults)]

  lines = tf.data.TextLineDataset(path, compression_type="GZIP" if path.endswith(".gz") else "").skip(int(header))
  first = 1 + int(header)  # the line of the chunk's first line
  for chunk in lines.batch(CHUNK_LINES).prefetch(1):
    try:
      kept, columns = decode(chunk)
    except tf.errors.InvalidArgumentError:
      raise _Refused() from None
    yield first + kept.numpy(), columns
    first += int(chunk.shape[0])


def _python_chunks(path: str, num_fields: int, header: bool) -> Iterator[Chunk]:
  """The lenient parser: Python's csv module, rows that span lines included."""
  with _open_text(path, newline="") as handle:
    reader = csv.reader(handle, strict=True, skipinitialspace=True)
    lines: list[int] = []
    rows: list[list[str]] = []
    first = 1  # the line the next row starts on
    while True:
      try:
        row = next(reader, None)
      except csv.Error as error:
        raise UserError(_csv_error(path, first, reader.line_num, str(error))) from None
      if row is None:
        break
      start, first = first, reader.line_num + 1
      if (header and start == 1) or (len(row) <= 1 and not any(field.strip() for field in row)):
        continue  # the header, or a blank line
      if len(row) != num_fields:
        runs_on = f" (a quoted field runs on to line {reader.line_num}: is a quote not closed?)"
        raise UserError(
          f"CSV file {path} line {start} has {len(row)} fields; its header has {num_fields}"
          f"{runs_on if reader.line_num > start else ''}."
        )
      lines.append(start)
      rows.append(row)
      if len(rows) == CHUNK_LINES:
        yield _chunk(lines, rows, num_fields)
        lines, rows = [], []
    if rows:
      yield _chunk(lines, rows, num_fields)


def _chunk(lines: list[int], rows: list[list[str]], num_fields: int) -> Chunk:
  columns = [
    tf.strings.strip(tf.constant([row[i].encode("utf-8", "surrogateescape") for row in rows], tf.string))
    for i in range(num_fields)
  ]
  return np.asarray(lines, np.int64), columns


def _csv_error(path: str, first: int, last: int, error: str) -> str:
  """The sentence for Python's csv error `error` in the row from line `first` to line `last`."""
  if "expected after" in error:
    return (
      f"CSV file {path} line {last} has text after the closing quote of a field "
      '(a quote inside a quoted value is written twice: "").'
    )
  if "unexpected end of data" in error or ("field larger than" in error and last > first):
    return f"CSV file {path} line {first} opens a quoted field that is never closed."
  return f"CSV file {path} line {last} cannot be parsed ({error})."


def _starts_with_lone_carriage_returns(path: str) -> bool:
  """Whether the header line holds a carriage return not followed by a line feed (old Mac line ends).

  TensorFlow splits lines at line feeds only, so it would see one line.
  """
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as handle:
      first = handle.readline(1 << 20)
  except (OSError, EOFError, zlib.error):
    return False  # check_gzip and the parser name the problem
  return b"\r" in first.rstrip(b"\n").rstrip(b"\r")


def read_table(
  path: str, string_columns: Iterable[str] = (), numeric_columns: Iterable[str] = (), names: Sequence[str] | None = None
) -> Table:
  """Reads `path` into typed columns.

  Args:
    path: a CSV file with a header line, plain or gzip-compressed (`.gz`).
    names: column names of a file without a header line.
    string_columns: columns to keep as strings even if every value is a number.
    numeric_columns: columns that must parse as numbers (UserError naming the
      first line that does not).
  """
  header = names is None
  if names is None:
    names = read_header(path)
  else:
    check_file(path, "Data file")
    names = list(names)
  if path.endswith(".gz"):
    check_gzip(path)
  strings, numbers = set(string_columns), set(numeric_columns)
  if not _starts_with_lone_carriage_returns(path):
    try:
      return _read(path, names, header, strings, numbers, _tensorflow_chunks)
    except _Refused:
      pass  # a line the strict decoder does not take: the lenient parser reads the file (module docstring)
  return _read(path, names, header, strings, numbers, _python_chunks)


def _read(path: str, names: list[str], header: bool, keep_strings: set[str], need_numbers: set[str], parser: Parser):
  numeric = [name not in keep_strings for name in names]
  parts: list[list[np.ndarray]] = [[] for _ in names]
  line_parts: list[np.ndarray] = []
  late: set[str] = set()  # columns found to hold text after earlier chunks were read as numbers
  try:
    for lines, columns in parser(path, len(names), header):
      line_parts.append(lines)
      for i, column in enumerate(columns):
        if numeric[i]:
          try:
            parts[i].append(_to_number(column).numpy())
            continue
          except tf.errors.InvalidArgumentError:
            _demote(names[i], path, need_numbers, lines, column)
            numeric[i] = False
            if parts[i]:
              late.add(names[i])
        parts[i].append(column.numpy().astype(bytes))
  except tf.errors.DataLossError:
    raise UserError(f"CSV file {path} is truncated or not valid gzip.") from None
  except (EOFError, OSError, zlib.error) as error:  # Python's gzip reader of a damaged file
    raise UserError(f"CSV file {path} cannot be read ({error}).") from None
  lines = _concat(line_parts, np.int64)
  if lines.size == 0:
    raise UserError(f"CSV file {path} has no data rows.")
  if late:
    # Read once more with those columns as text from the start, so that every
    # value keeps its exact spelling (rare: a code column with an occasional word).
    return _read(path, names, header, keep_strings | late, need_numbers, parser)
  types = [np.float64 if is_numeric else bytes for is_numeric in numeric]
  return Table(path, {name: _concat(part, types[i]) for i, (name, part) in enumerate(zip(names, parts))}, lines)


def _demote(name: str, path: str, need_numbers: set[str], lines: np.ndarray, column: tf.Tensor) -> None:
  """Checks that column `name` may hold text; `lines` are the chunk's lines."""
  if name in need_numbers:
    row = first_non_number(column.numpy())
    text = column.numpy()[row].decode("utf-8", "replace")
    raise UserError(f"Column {name!r} of {path} must be numeric, but line {lines[row]} holds {text!r}.")


def first_non_number(values: np.ndarray) -> int:
  """Index of the first value (bytes) that is neither missing nor a number; -1 if none.

  A number is what the reader reads as one (TensorFlow's parser, which takes
  `0x10` and refuses `1_000`, unlike Python's float): the first value it
  refuses is found by bisecting on prefixes, a few vectorized parses.
  """
  texts = tf.constant(np.asarray(values).astype(bytes))
  missing = _missing(texts)
  filled = tf.where(missing, tf.constant(b"0"), texts)

  def parses(count: int) -> bool:
    try:
      tf.strings.to_number(filled[:count], tf.float64)
    except tf.errors.InvalidArgumentError:
      return False
    return True

  if parses(len(values)):
    return -1
  good, bad = 0, len(values)  # the first `good` values parse, the first `bad` do not
  while bad - good > 1:
    middle = (good + bad) // 2
    good, bad = (middle, bad) if parses(middle) else (good, middle)
  return bad - 1


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
  if not parts:
    return np.zeros([0], dtype)
  return np.concatenate(parts)


def main(argv: list[str]) -> None:
  """Times reading a CSV file: python -m mtl_research.data.csv_reader FILE."""
  began = time.perf_counter()
  table = read_table(argv[1])
  numeric = sum(table.is_numeric(name) for name in table.columns)
  print(
    f"{table.num_rows} rows × {len(table.columns)} columns ({numeric} numeric) read in "
    f"{time.perf_counter() - began:.1f} s"
  )


if __name__ == "__main__":
  main(sys.argv)

"""csv_reader: CSV files (plain or .gz) into typed columns, and its errors.

Each error is a UserError of one sentence naming the file and the culprit
(line, column).
"""

from __future__ import annotations

import numpy as np
import pytest

try:
  from tests import table_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import table_helpers as helpers

from mtl_research.data import csv_reader
from mtl_research.errors import UserError

SMALL = " num , cat ,code,gaps,word\n1.5, a ,007,NA,x\n 2 ,b,12,?,y\n-3e2,,3,,z\n4,NaN,4,NaN,w\n"


def read(tmp_path, text: str, name: str = "t.csv", **kwargs) -> csv_reader.Table:
  return csv_reader.read_table(helpers.write_text(tmp_path / name, text), **kwargs)


def test_types_are_inferred_and_values_stripped(tmp_path):
  table = read(tmp_path, SMALL, string_columns=["code"])
  assert list(table.columns) == ["num", "cat", "code", "gaps", "word"]  # header names stripped
  assert table.num_rows == 4
  assert table.is_numeric("num")
  np.testing.assert_array_equal(table.columns["num"], [1.5, 2.0, -300.0, 4.0])
  assert table.columns["num"].dtype == np.float64
  # A column with a non-numeric value is categorical: stripped bytes, missing tokens kept.
  assert not table.is_numeric("cat")
  assert table.columns["cat"].dtype.kind == "S"
  assert table.columns["cat"].tolist() == [b"a", b"b", b"", b"NaN"]
  # A numeric-looking column forced categorical keeps its exact spelling.
  assert not table.is_numeric("code")
  assert table.columns["code"].tolist() == [b"007", b"12", b"3", b"4"]
  # Every missing token (NA, ?, empty, NaN) of a numeric column is NaN.
  assert table.is_numeric("gaps")
  assert np.isnan(table.columns["gaps"]).all()
  assert table.columns["word"].tolist() == [b"x", b"y", b"z", b"w"]


def test_without_string_columns_a_code_column_is_numeric(tmp_path):
  table = read(tmp_path, SMALL)
  assert table.is_numeric("code")
  np.testing.assert_array_equal(table.columns["code"], [7, 12, 3, 4])


def test_gzip_file_gives_the_same_table(tmp_path):
  plain = read(tmp_path, SMALL, "t.csv", string_columns=["code"])
  packed = read(tmp_path, SMALL, "t.csv.gz", string_columns=["code"])
  assert list(plain.columns) == list(packed.columns)
  for name in plain.columns:
    assert plain.columns[name].dtype == packed.columns[name].dtype
    np.testing.assert_array_equal(plain.columns[name], packed.columns[name])


def test_quoted_fields_and_blank_lines(tmp_path):
  table = read(tmp_path, 'a,b\n"x, y",1\n\n"z",2\n\n')
  assert table.columns["a"].tolist() == [b"x, y", b"z"]
  np.testing.assert_array_equal(table.columns["b"], [1, 2])


def test_line_numbers_follow_the_header(tmp_path):
  table = read(tmp_path, "a,b\n1,2\n3,4\n5,6\n")
  assert [table.line_of(row) for row in range(3)] == [2, 3, 4]
  taken = table.take(np.array([2, 0]))
  np.testing.assert_array_equal(taken.columns["a"], [5, 1])
  assert [taken.line_of(row) for row in range(2)] == [4, 2]
  assert taken.take(np.array([0])).line_of(0) == 4  # survives a second take


@pytest.mark.parametrize(
  "text, line, fields",
  [
    ("a,b,c\n1,2,3\n4,5\n6,7,8\n", 3, 2),
    ("a,b,c\n1,2,3\n4,5,6\n7,8,9\n1,2,3,4\n", 5, 4),
  ],
)
def test_ragged_line_is_named(tmp_path, text, line, fields):
  path = str(tmp_path / "ragged.csv")
  with pytest.raises(UserError) as error:
    csv_reader.read_table(helpers.write_text(path, text))
  message = str(error.value)
  assert path in message
  assert f"line {line} has {fields} fields" in message
  assert "header has 3" in message


def test_ragged_line_in_a_later_chunk_is_named(tmp_path, monkeypatch):
  monkeypatch.setattr(csv_reader, "CHUNK_LINES", 4)
  rows = [f"{i},{i}" for i in range(12)]
  rows[9] = "9,9,9"  # line 11
  with pytest.raises(UserError, match=r"line 11 has 3 fields; its header has 2"):
    read(tmp_path, "a,b\n" + "\n".join(rows) + "\n")


def test_gzip_ragged_line_is_named(tmp_path):
  with pytest.raises(UserError, match=r"line 4 has 1 fields"):
    read(tmp_path, "a,b\n1,2\n3,4\n5\n", "t.csv.gz")


@pytest.mark.parametrize(
  "name, text, expected",
  [
    ("empty.csv", "", "is empty"),
    ("blank.csv", "\n\n", "is empty"),
    ("empty.csv.gz", "", "is empty"),
    ("header.csv", "a,b,c\n", "has no data rows"),
    ("header_blank.csv", "a,b,c\n\n\n", "has no data rows"),
    ("dupes.csv", "a,b,a\n1,2,3\n", "repeats column 'a'"),
    ("dupes_spaced.csv", "a, b ,b\n1,2,3\n", "repeats column 'b'"),
    ("unnamed.csv", "a,,c\n1,2,3\n", "column without a name"),
  ],
)
def test_bad_files(tmp_path, name, text, expected):
  path = helpers.write_text(tmp_path / name, text)
  with pytest.raises(UserError) as error:
    csv_reader.read_table(path)
  assert expected in str(error.value)
  assert path in str(error.value)


def test_missing_file(tmp_path):
  path = str(tmp_path / "absent.csv")
  with pytest.raises(UserError, match="does not exist") as error:
    csv_reader.read_table(path)
  assert path in str(error.value)
  with pytest.raises(UserError, match="does not exist"):
    csv_reader.read_table(path, names=["a", "b"])


def test_not_gzip_despite_the_name(tmp_path):
  path = helpers.write_text(tmp_path / "plain.csv", "a,b\n1,2\n")
  fake = tmp_path / "fake.csv.gz"
  fake.write_bytes(open(path, "rb").read())
  with pytest.raises(UserError) as error:
    csv_reader.read_table(str(fake))
  assert str(fake) in str(error.value)


def test_headerless_file_with_names(tmp_path):
  path = helpers.write_text(tmp_path / "raw.data", " 1, a\n 2, b\n 3, c\n")
  table = csv_reader.read_table(path, names=["n", "s"])
  np.testing.assert_array_equal(table.columns["n"], [1, 2, 3])
  assert table.columns["s"].tolist() == [b"a", b"b", b"c"]
  assert [table.line_of(row) for row in range(3)] == [1, 2, 3]  # no header line


def test_headerless_ragged_line_counts_from_one(tmp_path):
  path = helpers.write_text(tmp_path / "raw.data", "1,a\n2\n3,c\n")
  with pytest.raises(UserError, match=r"line 2 has 1 fields; its header has 2"):
    csv_reader.read_table(path, names=["n", "s"])


def test_numeric_columns_must_parse(tmp_path):
  path = helpers.write_text(tmp_path / "n.csv", "a,b\n1,x\n2,y\nNA,z\n4,w\n")
  table = csv_reader.read_table(path, numeric_columns=["a"])  # no culprit: fine
  assert table.is_numeric("a")
  with pytest.raises(UserError) as error:
    csv_reader.read_table(
      helpers.write_text(tmp_path / "bad.csv", "a,b\n1,x\n2,y\nNA,q\noops,z\n4,w\n"), numeric_columns=["a"]
    )
  message = str(error.value)
  assert "'a'" in message and "line 5" in message and "'oops'" in message and "bad.csv" in message


def test_numeric_columns_culprit_in_a_later_chunk(tmp_path, monkeypatch):
  monkeypatch.setattr(csv_reader, "CHUNK_LINES", 4)
  rows = [f"{i},{i}" for i in range(12)]
  rows[9] = "9,nine"  # line 11
  path = helpers.write_text(tmp_path / "n.csv", "a,b\n" + "\n".join(rows) + "\n")
  with pytest.raises(UserError, match=r"Column 'b' of .*n\.csv must be numeric, but line 11 holds 'nine'"):
    csv_reader.read_table(path, numeric_columns=["b"])


def test_column_demoted_after_the_first_chunk_keeps_earlier_values(tmp_path, monkeypatch):
  monkeypatch.setattr(csv_reader, "CHUNK_LINES", 4)
  values = [f"{0.5 + i}" for i in range(12)]  # 0.5, 1.5, ... read back as the same text
  values[3] = ""  # missing in the first chunk
  values[9] = "word"  # row 10, third chunk
  other = [str(i) for i in range(12)]
  path = helpers.write_text(tmp_path / "late.csv", "v,w\n" + "".join(f"{v},{o}\n" for v, o in zip(values, other)))
  table = csv_reader.read_table(path)
  assert not table.is_numeric("v")
  assert table.columns["v"].dtype.kind == "S"
  assert table.num_rows == 12
  assert table.columns["v"][3] in (b"", b"?", b"NA", b"NaN")  # still missing
  expected = [value.encode() for i, value in enumerate(values) if i != 3]
  assert [v for i, v in enumerate(table.columns["v"].tolist()) if i != 3] == expected
  # The other column is untouched by the demotion.
  assert table.is_numeric("w")
  np.testing.assert_array_equal(table.columns["w"], np.arange(12))


def test_chunked_read_equals_single_chunk_read(tmp_path, monkeypatch):
  path, _ = helpers.write_mixed(tmp_path / "mixed.csv", num_rows=50)
  whole = csv_reader.read_table(path)
  monkeypatch.setattr(csv_reader, "CHUNK_LINES", 7)
  chunked = csv_reader.read_table(path)
  for name in whole.columns:
    assert whole.columns[name].dtype.kind == chunked.columns[name].dtype.kind
    np.testing.assert_array_equal(whole.columns[name], chunked.columns[name])


def test_first_non_number():
  assert csv_reader.first_non_number(np.array([b"1", b"", b"NA", b"x", b"y"])) == 3
  assert csv_reader.first_non_number(np.array([b"1", b"?", b"2.5e3"])) == -1

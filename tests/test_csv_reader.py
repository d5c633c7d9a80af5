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


# Two parsers, one table: TensorFlow's strict decoder, and Python's csv module for the files it refuses.


def _refuse(path, num_fields, header):
  """In place of the fast parser: refuses every file, so the lenient parser reads it."""
  raise csv_reader._Refused()  # pylint: disable=protected-access
  yield  # a generator, as the parser it replaces


def _not_called(path, num_fields, header):
  raise AssertionError(f"{path} went to the lenient parser")


@pytest.fixture(name="parser", params=["default", "python"])
def fixture_parser(request, monkeypatch):
  """Each test runs as files are read (the fast parser first) and with the lenient parser only."""
  if request.param == "python":
    monkeypatch.setattr(csv_reader, "_tensorflow_chunks", _refuse)
  return request.param


BLANKS = "a,b\n\n1,x\n   \n2,y\n\n\n3,z\n"  # data on lines 3, 5 and 8


@pytest.mark.parametrize(
  "name, newline", [("t.csv", "\n"), ("t.csv.gz", "\n"), ("crlf.csv", "\r\n"), ("crlf.csv.gz", "\r\n")]
)
def test_line_numbers_count_blank_lines(tmp_path, parser, name, newline, monkeypatch):
  if parser == "default":
    monkeypatch.setattr(csv_reader, "_python_chunks", _not_called)  # the fast parser reads such files
  table = read(tmp_path, BLANKS.replace("\n", newline), name)
  np.testing.assert_array_equal(table.columns["a"], [1, 2, 3])
  assert table.columns["b"].tolist() == [b"x", b"y", b"z"]
  assert [table.line_of(row) for row in range(3)] == [3, 5, 8]
  assert table.take(np.array([2])).line_of(0) == 8


def test_culprits_after_blank_lines_are_named_by_their_line(tmp_path, parser):
  with pytest.raises(UserError, match=r"line 10 has 3 fields; its header has 2"):
    read(tmp_path, BLANKS + "\n4,w,extra\n")
  with pytest.raises(UserError, match=r"Column 'a' of .* must be numeric, but line 8 holds 'three'"):
    read(tmp_path, BLANKS.replace("3,z", "three,z"), numeric_columns=["a"])


def test_chunks_keep_their_line_numbers(tmp_path, parser, monkeypatch):
  monkeypatch.setattr(csv_reader, "CHUNK_LINES", 3)
  text = "a\n" + "".join(f"{i}\n" + ("\n" if i % 4 == 0 else "") for i in range(10))
  table = read(tmp_path, text)
  expected, line = [], 2
  for i in range(10):
    expected.append(line)
    line += 2 if i % 4 == 0 else 1
  assert [table.line_of(row) for row in range(10)] == expected


def test_both_parsers_read_the_same_table(tmp_path, monkeypatch):
  text = '\ufeffa,b,c\n1,"x, y",007\n\n 2 ,"say ""hi""",\n-3e2,\xe9t\xe9,NA\n'
  path = helpers.write_text(tmp_path / "t.csv", text)
  with open(path, "ab") as handle:
    handle.write(b"4,\xff\xfe,5\n")  # not UTF-8: both parsers keep the bytes
  python_chunks = csv_reader._python_chunks  # pylint: disable=protected-access
  monkeypatch.setattr(csv_reader, "_python_chunks", _not_called)
  fast = csv_reader.read_table(path, string_columns=["c"])
  monkeypatch.setattr(csv_reader, "_python_chunks", python_chunks)
  monkeypatch.setattr(csv_reader, "_tensorflow_chunks", _refuse)
  lenient = csv_reader.read_table(path, string_columns=["c"])
  assert list(fast.columns) == list(lenient.columns) == ["a", "b", "c"]
  for name in fast.columns:
    assert fast.columns[name].dtype == lenient.columns[name].dtype
    np.testing.assert_array_equal(fast.columns[name], lenient.columns[name])
  assert fast.columns["b"].tolist() == [b"x, y", b'say "hi"', "\xe9t\xe9".encode(), b"\xff\xfe"]
  np.testing.assert_array_equal(fast.lines, lenient.lines)
  np.testing.assert_array_equal(fast.lines, [2, 4, 5, 6])


@pytest.mark.parametrize(
  "text, column, values, lines",
  [
    ('a,b\n1,"two\nlines"\n2,one\n', "b", [b"two\nlines", b"one"], [2, 4]),  # a line break inside quotes
    ('a,b\n1, "New York"\n2, Paris\n', "b", [b"New York", b"Paris"], [2, 3]),  # a space before the quote
    ("a,b\n1,5'11\"\n2,6'\n", "b", [b"5'11\"", b"6'"], [2, 3]),  # a quote inside an unquoted value
    ("a,b\r1,x\r\r2,y\r", "b", [b"x", b"y"], [2, 4]),  # old Mac line ends
  ],
)
def test_what_strict_csv_refuses_is_read_by_the_lenient_parser(tmp_path, text, column, values, lines):
  table = read(tmp_path, text)
  assert table.columns[column].tolist() == values
  np.testing.assert_array_equal(table.columns["a"], [1, 2])
  assert [table.line_of(row) for row in range(2)] == lines


@pytest.mark.parametrize(
  "text, expected",
  [
    ('a,b\n1,x\n2,"y\n3,z\n', r"line 3 opens a quoted field that is never closed"),
    ('a,b\n1,x\n\n2,"y"z\n', r"line 4 has text after the closing quote of a field"),
    ('a,b\n1,"x\n2,y\n3,z",q\n4,w\n', r"line 2 has 3 fields; its header has 2 \(a quoted field runs on to line 4"),
  ],
)
def test_quote_errors_name_the_line_and_the_reason(tmp_path, text, expected):
  path = str(tmp_path / "q.csv")
  with pytest.raises(UserError, match=expected) as error:
    csv_reader.read_table(helpers.write_text(path, text))
  assert str(error.value).startswith(f"CSV file {path} ")


def test_a_directory_is_not_a_file(tmp_path):
  (tmp_path / "data.csv").mkdir()
  with pytest.raises(UserError, match=r"data\.csv is a directory, not a file"):
    csv_reader.read_table(str(tmp_path / "data.csv"))
  with pytest.raises(UserError, match=r"Data file .*data\.csv is a directory"):
    csv_reader.read_table(str(tmp_path / "data.csv"), names=["a"])


def test_first_non_number_follows_the_reader_not_python():
  # Python's float takes "1_000" and refuses "0x10"; the reader (TensorFlow) does the opposite.
  assert csv_reader.first_non_number(np.array([b"0x10", b"2", b"1_000", b"x"])) == 2
  assert csv_reader.first_non_number(np.array([b"\xd9\xa1"])) == 0  # an Arabic-Indic digit
  assert csv_reader.first_non_number(np.array([b"0x10", b"NA"])) == -1

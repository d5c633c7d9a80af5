"""The plain-Python TFRecord reader (reports/records.py) against TensorFlow's writer and reader."""

from __future__ import annotations

import pytest
import tensorflow as tf

from mtl_research.reports import records

PAYLOADS = [b"", b"a", bytes(range(256)) * 3, b"\x00\xff" * 1000, b"event"]


@pytest.fixture(name="record_file")
def fixture_record_file(tmp_path) -> str:
  path = str(tmp_path / "file.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    for payload in PAYLOADS:
      writer.write(payload)
  return path


def test_crc32c_check_values():
  # The CRC-32C check value (RFC 3720, B.4) and the all-zero / all-one 32-byte vectors of its appendix.
  assert records.crc32c(b"123456789") == 0xE3069283
  assert records.crc32c(bytes(32)) == 0x8A9136AA
  assert records.crc32c(b"\xff" * 32) == 0x62A8AB43
  assert records.crc32c(b"") == 0


def test_reads_what_tensorflow_wrote_as_tensorflow_reads_it(record_file):
  assert list(records.read_records(record_file)) == PAYLOADS
  assert [r.numpy() for r in tf.data.TFRecordDataset(record_file)] == PAYLOADS


def test_a_file_cut_inside_its_last_record_yields_the_records_before_it(record_file, tmp_path):
  with open(record_file, "rb") as handle:
    contents = handle.read()
  last = 12 + len(PAYLOADS[-1]) + 4
  for cut in range(1, last):
    path = str(tmp_path / f"cut{cut}")
    with open(path, "wb") as handle:
      handle.write(contents[:-cut])
    assert list(records.read_records(path)) == PAYLOADS[:-1], cut


@pytest.mark.parametrize("where", ["length", "data"])
def test_a_corrupted_record_ends_the_reading(record_file, tmp_path, where):
  with open(record_file, "rb") as handle:
    contents = bytearray(handle.read())
  second = 12 + len(PAYLOADS[0]) + 4  # the second record starts here
  contents[second + (0 if where == "length" else 12)] ^= 0x01  # its length, or its one data byte
  path = str(tmp_path / "corrupt")
  with open(path, "wb") as handle:
    handle.write(bytes(contents))
  assert list(records.read_records(path)) == PAYLOADS[:1]

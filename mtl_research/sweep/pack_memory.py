"""How many runs of a sweep one process can hold: a pack's memory is the sum of its runs'.

Measured on 2 cores (`/usr/bin/time -f %M`, `mtl-train --seeds` with 200 steps):

  data                                          1 run     8 runs    per further run
  synthetic, 200,000 train rows, 10 features    0.81 GB   1.14 GB   42 MB
  census-sized CSV: 250,000 rows, 7 numeric
  and 33 categorical columns (273 numeric
  features after one-hot, 19 embedded)          1.60 GB   5.26 GB   523 MB

A run holds its DatasetBundle (train, validation and test arrays: 294 MB for
the CSV), a second copy of the train split on the device (176 MB) and its model,
optimizer and program (tens of MB): `run_bytes` estimates exactly that, 534 MB
for the CSV above. A process adds TensorFlow itself and the transient memory
of reading the data (`PROCESS_BYTES`).
"""

from __future__ import annotations

import math

from mtl_research.data.bundle import DatasetBundle, Split

PROCESS_BYTES = 1_200_000_000  # TensorFlow, Python and the peak of reading one run's data
RUN_OVERHEAD_BYTES = 64_000_000  # a run's model, optimizer, balancer and its part of the program
MEMORY_SHARE = 0.8  # of the memory available when the sweep starts: the rest stays for the system


def _split_bytes(split: Split) -> int:
  return sum(a.nbytes for a in split.features.values()) + sum(a.nbytes for a in split.labels.values())


def run_bytes(bundle: DatasetBundle) -> int:
  """Estimated memory of one run of a pack on `bundle`: its arrays, the device copy of train, its model."""
  return _split_bytes(bundle.train) * 2 + _split_bytes(bundle.val) + _split_bytes(bundle.test) + RUN_OVERHEAD_BYTES


def available_bytes() -> int | None:
  """MemAvailable of /proc/meminfo (None where there is none: then packs are not limited by memory)."""
  try:
    with open("/proc/meminfo", encoding="ascii") as handle:
      for line in handle:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    return None
  return None


def fitting_pack_size(pack_size: int, parallel: int, per_run: int, available: int | None) -> int:
  """The largest pack size ≤ `pack_size` whose `parallel` processes fit in MEMORY_SHARE of `available` (≥ 1)."""
  if available is None:
    return pack_size
  per_process = available * MEMORY_SHARE / parallel - PROCESS_BYTES
  return max(1, min(pack_size, math.floor(per_process / per_run)))

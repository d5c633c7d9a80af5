"""TensorFlow imported without its harmless C++ start-up lines on stderr.

On a machine without a GPU, importing TensorFlow 2.21 and listing its devices
prints, from C++ and before any flag or log level applies:

  WARNING: All log messages before absl::InitializeLog() is called are written to STDERR   (twice)
  I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.   (twice)
  E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ...

`TF_CPP_MIN_LOG_LEVEL` (set by cli/__init__.py unless the user set it) hides
only TensorFlow's own log calls: the first two kinds of line come from absl and
the CUDA stub directly, and an "E ... CUDA error" line alarms every new user.
So the entry points import TensorFlow, and let it find its devices, with the
stderr file descriptor sent to a temporary file, then write back every line
but these. The cuInit line is dropped only together with the stub's "Could not
find cuda drivers" (a machine with no CUDA driver at all); where a driver is
installed but fails, it is the diagnosis and stays. Set TF_CPP_MIN_LOG_LEVEL=0
to see every line.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

_ABSL_PREAMBLE = re.compile(
  r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
)
_NO_DRIVER = re.compile(r"^I\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine")
_CUINIT_FAILED = re.compile(r"^E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: ")


def harmless_lines_removed(text: str) -> list[str]:
  """The lines of captured start-up output worth showing."""
  lines = text.splitlines()
  no_driver = any(_NO_DRIVER.search(line) for line in lines)
  kept = []
  for line in lines:
    if _ABSL_PREAMBLE.search(line) or _NO_DRIVER.search(line):
      continue
    if no_driver and _CUINIT_FAILED.search(line):
      continue
    kept.append(line)
  return kept


def import_tensorflow() -> None:
  """Imports TensorFlow and lists its devices, keeping only the start-up lines worth showing.

  Does nothing if TensorFlow is already imported (a test process, a library
  user) or if the user asked for everything with TF_CPP_MIN_LOG_LEVEL=0.
  """
  if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top

      # Finding the devices is where CUDA is initialized (the cuInit line).
      tf.config.list_physical_devices()
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = harmless_lines_removed(captured.read().decode(errors="replace"))
      if kept:
        sys.stderr.write("\n".join(kept) + "\n")

"""TensorFlow imported without its harmless C++ start-up lines on stderr, and without matplotlib.

On a machine without a GPU, importing TensorFlow 2.21 and listing its devices
prints, from C++ and before any flag or log level applies:

  WARNING: All log messages before absl::InitializeLog() is called are written to STDERR   (twice)
  I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.   (twice)
  I0000 ... port.cc:153] oneDNN custom operations are on. You may see slightly different ...   (on some CPUs)
  E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ...

`TF_CPP_MIN_LOG_LEVEL` (set by cli/__init__.py unless the user set it) hides
only TensorFlow's own log calls: the first two kinds of line come from absl and
the CUDA stub directly, and an "E ... CUDA error" line alarms every new user.
So the entry points import TensorFlow, and let it find its devices, with the
stderr file descriptor sent into a pipe; a forked process passes every line on
to the real stderr as it arrives, but these. (As it arrives, and from another
process: if the import crashes or hangs, what TensorFlow said before is on the
screen.) The cuInit line
is dropped only together with the stub's "Could not find cuda drivers" (a
machine with no CUDA driver at all), which TensorFlow prints before it; where a
driver is installed but fails, it is the diagnosis and stays. Set
TF_CPP_MIN_LOG_LEVEL=0 to see every line. If the pipe cannot be made (no fd 2,
no file descriptors left), TensorFlow is imported as it is.

Keras, which TensorFlow imports, imports matplotlib.pyplot when it is
installed (the `plots` extra), for image-gallery helpers this project never
uses: about 1 s of every start-up on a 2-core machine. The import is hidden
from Keras while TensorFlow loads (Keras then leaves those helpers unusable)
and allowed again afterwards; the reports draw with matplotlib's Agg canvas,
imported when they need it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

_ABSL_PREAMBLE = re.compile(
  r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
)
_NO_DRIVER = re.compile(r"^I\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine")
_CUINIT_FAILED = re.compile(r"^E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: ")
# Printed on CPUs with oneDNN's optimized kernels (an AMD EPYC, not every Intel machine), at the
# info level TF_CPP_MIN_LOG_LEVEL=2 means to hide, but before that setting applies.
_ONEDNN_ON = re.compile(r"^I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\.")
_HIDDEN_MODULES = ("matplotlib", "matplotlib.pyplot")


class LineFilter:
  """Decides, line by line in the order they come, which start-up lines are worth showing."""

  def __init__(self):
    self.no_driver = False

  def keep(self, line: str) -> bool:
    if _ABSL_PREAMBLE.search(line) or _ONEDNN_ON.search(line):
      return False
    if _NO_DRIVER.search(line):
      self.no_driver = True
      return False
    return not (self.no_driver and _CUINIT_FAILED.search(line))


def harmless_lines_removed(text: str) -> list[str]:
  """The lines of captured start-up output worth showing."""
  line_filter = LineFilter()
  return [line for line in text.splitlines() if line_filter.keep(line)]


def _forward(read_fd: int, write_fd: int) -> None:
  """Copies the lines worth showing from `read_fd` to `write_fd` until end of file."""
  line_filter = LineFilter()
  with os.fdopen(read_fd, "rb", buffering=0) as pipe:
    pending = b""
    while chunk := pipe.read(65536):
      *lines, pending = (pending + chunk).split(b"\n")
      kept = [line for line in lines if line_filter.keep(line.decode(errors="replace"))]
      if kept:
        os.write(write_fd, b"\n".join(kept) + b"\n")
    if pending and line_filter.keep(pending.decode(errors="replace")):
      os.write(write_fd, pending + b"\n")


def _start_forwarder(read_fd: int, write_fd: int, out_fd: int) -> int:
  """Forks the process that runs `_forward`; returns its pid.

  A process, not a thread: if TensorFlow's import aborts this one, the
  forwarder still reads what is left in the pipe and shows it. Forked before
  TensorFlow starts any thread.
  """
  pid = os.fork()
  if pid == 0:  # the forwarder
    try:
      os.close(write_fd)
      _forward(read_fd, out_fd)
    finally:
      os._exit(0)  # pylint: disable=protected-access  (no atexit handlers, no buffers of the parent)
  os.close(read_fd)
  return pid


@contextlib.contextmanager
def _filtered_stderr():
  """fd 2 goes through `_forward` inside the block; as it was outside (also on an exception)."""
  try:
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
  except OSError:
    yield
    return
  sys.stderr.flush()
  try:
    forwarder = _start_forwarder(read_fd, write_fd, saved)
  except OSError:
    for fd in (saved, read_fd, write_fd):
      os.close(fd)
    yield
    return
  os.dup2(write_fd, 2)
  os.close(write_fd)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # closes the pipe's last write end here: the forwarder reads to its end and exits
    os.waitpid(forwarder, 0)
    os.close(saved)


@contextlib.contextmanager
def _hidden(names: tuple[str, ...]):
  """`import NAME` fails inside the block for modules not imported yet (None in sys.modules)."""
  hidden = [name for name in names if name not in sys.modules]
  for name in hidden:
    sys.modules[name] = None  # type: ignore[assignment]
  try:
    yield
  finally:
    for name in hidden:
      if sys.modules.get(name, 0) is None:
        del sys.modules[name]


def import_tensorflow() -> None:
  """Imports TensorFlow and lists its devices, showing only the start-up lines worth showing.

  Does nothing if TensorFlow is already imported (a test process, a library
  user); shows every line if the user asked for them with TF_CPP_MIN_LOG_LEVEL=0.
  """
  if "tensorflow" in sys.modules:
    return
  show_all = os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"
  with _hidden(_HIDDEN_MODULES), contextlib.nullcontext() if show_all else _filtered_stderr():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    # Finding the devices is where CUDA is initialized (the cuInit line).
    tf.config.list_physical_devices()

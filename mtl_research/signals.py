"""SIGTERM and SIGINT as a request to stop, for every process of the package that honours one.

A preempted job gets SIGTERM, a researcher presses Ctrl-C: the trainer
(train/interrupt.py) and the sweep runner (sweep/runner.py) both turn the
first of these signals into a request they act on at their next safe point,
instead of dying mid-write. `StopSignals` is the one place that installs and
restores their handlers and records which signal arrived; the callers decide
what stopping means.

Python runs signal handlers only between bytecodes of the main thread. A
trainer's main thread waits inside TensorFlow during a compiled loop, so with
`second_stops_now` the signals are also counted by a thread reading the
interpreter's wakeup file descriptor, which sees each one as it arrives and
ends the process on the second.

Neutral on purpose: it imports nothing of the package, so train/ and sweep/
can both use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
import os
import signal
import threading
import types
from typing import Any, Self

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# What signal.signal installs and returns: a function, SIG_DFL or SIG_IGN (ints), or None (a
# handler not installed from Python).
_Handler = Callable[[int, types.FrameType | None], Any] | int | None


def signal_name(signum: int) -> str:
  """ "SIGTERM", "SIGINT", ...: how messages name a signal."""
  return signal.Signals(signum).name


class StopSignals:
  """A context manager that records the first SIGTERM/SIGINT instead of dying on it.

  Inside the `with` block the first stop signal is kept in `signal` (its
  number) and `name`, and `on_first(signum)` is called from the handler. What
  a later one does depends on `second_stops_now`: False, it is ignored (the
  first one stands); True, the process ends at once, as if no handler had been
  installed, even while the main thread is inside a long C call. The previous
  handlers are restored on exit.

  Outside the main thread nothing is installed (Python allows handlers only
  there) and `signal` stays None.
  """

  def __init__(self, on_first: Callable[[int], None] | None = None, second_stops_now: bool = False):
    self.signal: int | None = None
    self._on_first = on_first
    self._second_stops_now = second_stops_now
    self._previous: dict[int, _Handler] = {}
    self._previous_wakeup = -1
    self._write_fd: int | None = None

  @property
  def requested(self) -> bool:
    return self.signal is not None

  @property
  def name(self) -> str:
    return signal_name(self.signal) if self.signal is not None else ""

  def _handle(self, signum: int, frame) -> None:  # pylint: disable=unused-argument
    if self.signal is None:
      self.signal = signum
      if self._on_first is not None:
        self._on_first(signum)
    elif self._second_stops_now:  # the second one: stop now, as without this handler
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)

  def __enter__(self) -> Self:
    if threading.current_thread() is not threading.main_thread():
      return self
    self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
    if self._second_stops_now:
      read_fd, self._write_fd = os.pipe()
      os.set_blocking(self._write_fd, False)
      self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
      threading.Thread(target=_exit_on_second, args=(read_fd,), daemon=True, name="stop-signals").start()
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
    if self._write_fd is not None:
      signal.set_wakeup_fd(self._previous_wakeup)
      os.close(self._write_fd)  # the counting thread reads end-of-file and ends
      self._write_fd = None


def _exit_on_second(read_fd: int) -> None:
  """Exits the process on the second SIGTERM/SIGINT read from the wakeup descriptor."""
  seen = 0
  try:
    while data := os.read(read_fd, 64):
      for signum in data:
        seen += signum in STOP_SIGNALS
        if seen >= 2:
          os.write(2, f"{signal_name(signum)} again: stopping now.\n".encode())
          os._exit(128 + signum)  # pylint: disable=protected-access
  finally:
    os.close(read_fd)

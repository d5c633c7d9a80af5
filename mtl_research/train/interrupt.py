"""SIGTERM and SIGINT as a request to stop cleanly between two compiled loops.

A preempted job gets SIGTERM, a researcher presses Ctrl-C: either way the
trainer finishes the loop it is in, saves a checkpoint and exits with status 0,
so that the same command resumes the run. A second signal stops the process at
once, even inside a long compiled call (the checkpoints on disk stay
consistent: TensorFlow writes them under a temporary name and renames them
when complete).

Python runs signal handlers only between bytecodes of the main thread, which
waits inside TensorFlow during a loop call; so the signals are also counted by
a thread reading the interpreter's wakeup file descriptor, which sees each
one as it arrives.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
  """Training stopped on request, with a checkpoint saved; the message says how to resume."""


class StopRequest:
  """A context manager that records the first SIGTERM/SIGINT instead of dying on it."""

  def __init__(self, log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)):
    self.log = log
    self.signal: int | None = None
    self._previous: dict[int, object] = {}
    self._previous_wakeup = -1
    self._write_fd: int | None = None

  @property
  def requested(self) -> bool:
    return self.signal is not None

  @property
  def name(self) -> str:
    return signal.Signals(self.signal).name if self.signal is not None else ""

  def _handle(self, signum: int, frame) -> None:  # pylint: disable=unused-argument
    if self.signal is not None:  # the second one: stop now, as without this handler
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.signal = signum
    self.log(f"{self.name} received: stopping after the current loop with a checkpoint "
             "(send it again to stop at once).")

  def __enter__(self) -> StopRequest:
    if threading.current_thread() is not threading.main_thread():  # Python allows handlers only there
      return self
    self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
    read_fd, self._write_fd = os.pipe()
    os.set_blocking(self._write_fd, False)
    self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_count_signals, args=(read_fd,), daemon=True, name="stop-request").start()
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
    if self._write_fd is not None:
      signal.set_wakeup_fd(self._previous_wakeup)
      os.close(self._write_fd)  # the counting thread reads end-of-file and ends
      self._write_fd = None


def _count_signals(read_fd: int) -> None:
  """Exits the process on the second SIGTERM/SIGINT read from the wakeup descriptor."""
  seen = 0
  try:
    while data := os.read(read_fd, 64):
      for signum in data:
        seen += signum in SIGNALS
        if seen >= 2:
          os.write(2, f"{signal.Signals(signum).name} again: stopping now.\n".encode())
          os._exit(128 + signum)  # pylint: disable=protected-access
  finally:
    os.close(read_fd)

"""SIGTERM and SIGINT as a request to stop cleanly between two compiled loops.

A preempted job gets SIGTERM, a researcher presses Ctrl-C: either way the
trainer finishes the loop it is in, saves a checkpoint and exits with status 0,
so that the same command resumes the run. A second signal stops the process at
once (the checkpoints on disk stay consistent: TensorFlow writes them under a
temporary name and renames them when complete).
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
    if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
      self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

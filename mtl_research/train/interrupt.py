"""SIGTERM and SIGINT as a request to stop cleanly between two compiled loops.

A preempted job gets SIGTERM, a researcher presses Ctrl-C: either way the
trainer finishes the loop it is in, saves a checkpoint and exits with status 0,
so that the same command resumes the run. A second signal stops the process at
once, even inside a long compiled call (the checkpoints on disk stay
consistent: TensorFlow writes them under a temporary name and renames them
when complete).

The handlers, and the thread that sees the second signal while the main thread
waits inside TensorFlow, are mtl_research/signals.py's; this module says what
the trainer does with them.
"""

from __future__ import annotations

from collections.abc import Callable
import sys

from mtl_research import signals


class Interrupted(Exception):
  """Training stopped on request, with a checkpoint saved; the message says how to resume."""


class StopRequest(signals.StopSignals):
  """A context manager that records the first SIGTERM/SIGINT instead of dying on it; the second kills."""

  def __init__(self, log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)):
    super().__init__(on_first=self._announce, second_stops_now=True)
    self.log = log

  def _announce(self, signum: int) -> None:  # pylint: disable=unused-argument
    self.log(
      f"{self.name} received: stopping after the current loop with a checkpoint (send it again to stop at once)."
    )

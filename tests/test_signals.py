"""mtl_research.signals: the first SIGTERM/SIGINT recorded, a second ignored or fatal, handlers restored.

The trainer (train/interrupt.py) and the sweep runner use it; their end-to-end
behaviour is tested in test_reliability.py and test_sweep.py. These tests need
no TensorFlow (well under a second each).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from mtl_research import signals
from mtl_research.train.interrupt import StopRequest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until(predicate, timeout: float = 10.0) -> bool:
  """Python runs a handler between bytecodes of the main thread: give it a few."""
  deadline = time.monotonic() + timeout
  while not predicate():
    if time.monotonic() > deadline:
      return False
    time.sleep(0.01)
  return True


def test_the_first_signal_is_recorded_a_later_one_ignored_and_handlers_restored():
  before = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS}
  seen = []
  with signals.StopSignals(on_first=seen.append) as stop:
    assert not stop.requested and stop.name == ""
    os.kill(os.getpid(), signal.SIGTERM)
    assert wait_until(lambda: stop.requested)
    os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt without the handler
    time.sleep(0.05)
  assert stop.signal == signal.SIGTERM and stop.name == "SIGTERM" and seen == [signal.SIGTERM]
  assert {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS} == before


def test_off_the_main_thread_nothing_is_installed():
  before = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS}
  during = {}

  def body():
    with signals.StopSignals(second_stops_now=True) as stop:
      during.update({signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS})
    during["requested"] = stop.requested

  thread = threading.Thread(target=body)
  thread.start()
  thread.join()
  assert during == {**before, "requested": False}


def test_stop_request_announces_the_first_signal():
  lines = []
  with StopRequest(log=lines.append) as stop:
    os.kill(os.getpid(), signal.SIGINT)
    assert wait_until(lambda: stop.requested)
  assert stop.name == "SIGINT"
  assert lines == [
    "SIGINT received: stopping after the current loop with a checkpoint (send it again to stop at once)."
  ]


def run_child(script: str, signals_to_send: tuple[int, ...]) -> subprocess.CompletedProcess:
  """Runs `script`, waits for its "ready" line, sends the signals 0.2 s apart; returns the finished process."""
  with subprocess.Popen(
    [sys.executable, "-c", textwrap.dedent(script)],
    cwd=REPO_ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  ) as process:
    try:
      assert process.stdout.readline() == "ready\n"
      for signum in signals_to_send:
        process.send_signal(signum)
        time.sleep(0.2)
      stdout, stderr = process.communicate(timeout=20)
    finally:
      if process.poll() is None:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_second_signal_stops_at_once_while_python_runs():
  done = run_child(
    """
      import time
      from mtl_research.signals import StopSignals
      with StopSignals(second_stops_now=True) as stop:
        print("ready", flush=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
          time.sleep(0.01)
      print("survived", stop.name, flush=True)
      """,
    (signal.SIGTERM, signal.SIGINT),
  )
  # The handler re-raises the signal with the default action; the watching thread may get there first.
  assert done.returncode in (-signal.SIGINT, 128 + signal.SIGINT), done.stderr
  assert "survived" not in done.stdout


def test_a_second_signal_stops_at_once_while_the_main_thread_is_inside_a_c_call():
  # The main thread blocks both signals and sleeps in C, as it waits inside TensorFlow during a compiled
  # loop: no Python handler can run, only the thread reading the wakeup descriptor sees them.
  done = run_child(
    """
      import ctypes, signal
      from mtl_research.signals import STOP_SIGNALS, StopSignals
      with StopSignals(second_stops_now=True):
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        print("ready", flush=True)
        ctypes.CDLL(None).sleep(15)
      print("survived", flush=True)
      """,
    (signal.SIGTERM, signal.SIGINT),
  )
  assert done.returncode == 128 + signal.SIGINT, done.stderr
  assert done.stderr == "SIGINT again: stopping now.\n" and done.stdout == ""


def test_without_second_stops_now_a_second_signal_is_ignored():
  done = run_child(
    """
      import time
      from mtl_research.signals import StopSignals
      with StopSignals() as stop:
        print("ready", flush=True)
        while not stop.requested:
          time.sleep(0.01)
        time.sleep(0.5)
      print("stopped by", stop.name, flush=True)
      """,
    (signal.SIGTERM, signal.SIGINT),
  )
  assert done.returncode == 0, done.stderr
  assert done.stdout == "stopped by SIGTERM\n"

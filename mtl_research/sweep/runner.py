"""Trains a sweep's runs as subprocesses of `mtl_research.cli.train`, several at once.

With `pack_size` > 1 the runs are grouped into packs (plan.packs) and one
process trains a whole pack (`--pack_file`, train/pack.py): each run of it is
still a normal run in its own directory, with its own outcome; `parallel`
counts processes, the progress lines count runs.

  SWEEP_DIR/sweep.json            the sweep's definition (written by cli/ablate.py)
  SWEEP_DIR/packs/<first>+<n>.json, .log   a pack's runs (names, arguments, logs), its process's output
  SWEEP_DIR/runs/<name>/          a normal training run directory, plus
      run.json                    {"name", "balancer", "seed", "grid", "single_task"}
      log.txt                     stdout+stderr of every attempt, each after a header line
      FAILED                      the last attempt failed: its exit code and last log lines

A finished run (one with metrics.json) is skipped without starting a process,
so running a finished sweep again takes seconds. Any other run is started with
the same command again: the trainer resumes an interrupted run from its last
checkpoint. A failed run is recorded and retried by the next invocation; it
never stops the others. SIGINT or SIGTERM (caught by signals.StopSignals) stops
every running attempt and ends the sweep; the stopped runs stay resumable.

No trainer outlives the sweep, even one killed with SIGKILL: on Linux each is
started with a parent-death signal, SIGTERM, which it takes as a request to
stop with a checkpoint (train/interrupt.py), so its run stays resumable. Until
it has stopped, it still holds its run directory's lock (train/run_lock.py),
which refuses a second trainer there: the next invocation, started at once,
waits up to LOCK_WAIT_SECONDS for such a run before starting it, training the
others meanwhile (then the new trainer is refused and the run recorded FAILED).

run.json and log.txt are written into the run directory before the trainer
starts; the trainer treats them (and FAILED) as no part of the run
(run_dir.SWEEP_FILES), so a directory holding only them is a new run to it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
import ctypes
import dataclasses
import datetime
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import TextIO

from mtl_research import signals
from mtl_research.files import write_json_atomic, write_text_atomic
from mtl_research.progress import format_duration
from mtl_research.sweep.plan import NOT_FOR_BASELINES, RUNS_DIR, THREAD_FLAGS, RunSpec
from mtl_research.sweep.plan import packs as plan_packs
from mtl_research.train import run_lock
from mtl_research.train.run_dir import FAILED_FILE, LOG_FILE, METRICS_FILE, RUN_FILE

TRAIN_MODULE = "mtl_research.cli.train"
PACKS_DIR = "packs"  # SWEEP_DIR/packs/: each pack's file of runs (--pack_file) and the output of its process
TAIL_LINES = 20
STOP_GRACE_SECONDS = 10.0
# How long a run whose directory another trainer holds (one of a killed invocation, stopping) waits.
LOCK_WAIT_SECONDS = 60.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def available_cpus() -> int:
  """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def threads_per_run(parallel: int, cpus: int) -> int:
  """TensorFlow intra-op threads per run, so that `parallel` runs share `cpus` cores."""
  return max(1, cpus // parallel)


def command(
  spec: RunSpec, run_path: str, passthrough: Sequence[str], threads: int, python: str = sys.executable
) -> list[str]:
  """The training command of one run; thread flags the user passed win over the sweep's."""

  def name_of(arg: str) -> str:
    return arg.partition("=")[0].removeprefix("--")

  given = {name_of(arg) for arg in passthrough}
  if spec.single_task:
    passthrough = [arg for arg in passthrough if name_of(arg) not in NOT_FOR_BASELINES]
  counts = {"intra_op_threads": threads, "inter_op_threads": 1}
  extra = [f"--{name}={counts[name]}" for name in THREAD_FLAGS if name not in given]
  return [python, "-m", TRAIN_MODULE, f"--run_dir={run_path}", *spec.flags(), *passthrough, *extra]


def is_finished(run_path: str) -> bool:
  return os.path.isfile(os.path.join(run_path, METRICS_FILE))


def die_with_this_process() -> Callable[[], None] | None:
  """A `preexec_fn` that has the child sent SIGTERM when this process ends; None where Linux's prctl is missing.

  The kernel sends it when the thread that started the child ends, so the
  runner starts its children from the thread that runs the sweep and outlives
  them. The child then checks that its parent is still this process: if it
  died before prctl, nothing would ever send the signal. The C function is
  looked up here, in the parent: between fork and exec the child only calls it.
  """
  if not sys.platform.startswith("linux"):
    return None
  try:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return None
  prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4  # int prctl(int option, unsigned long arg2, ...)
  parent = os.getpid()
  death_signal = int(signal.SIGTERM)

  def preexec() -> None:
    prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
    if os.getppid() != parent:
      os._exit(128 + death_signal)  # pylint: disable=protected-access  (the signal came too early: as if it came)

  return preexec


@dataclasses.dataclass
class Outcome:
  """What one invocation of the runner did."""

  total: int
  skipped: int = 0  # finished before this invocation
  finished: list[str] = dataclasses.field(default_factory=list)
  failed: list[str] = dataclasses.field(default_factory=list)
  interrupted: int | None = None  # the signal that stopped the sweep

  @property
  def done(self) -> int:
    return self.skipped + len(self.finished)

  @property
  def complete(self) -> bool:
    return self.done == self.total


@dataclasses.dataclass
class _Attempt:
  specs: list[RunSpec]  # one run, or the runs of a pack (one process: train/pack.py)
  process: subprocess.Popen
  log_offsets: dict[str, int]  # where this attempt's output starts in each run's log
  started: float
  pack_file: str | None = None


class Runner:
  """Runs `specs` under `sweep_dir`, `parallel` at a time."""

  def __init__(
    self,
    sweep_dir: str,
    specs: Sequence[RunSpec],
    passthrough: Sequence[str],
    parallel: int = 1,
    *,
    cpus: int | None = None,
    python: str = sys.executable,
    out: TextIO | None = None,
    poll_seconds: float = 0.2,
    pack_size: int = 1,
  ):
    self.sweep_dir = os.path.abspath(sweep_dir)
    self.specs = list(specs)
    self.pack_size = pack_size
    self.passthrough = list(passthrough)
    self.parallel = parallel
    self.threads = threads_per_run(parallel, cpus or available_cpus())
    self.python = python
    self.out = out or sys.stderr
    self.poll_seconds = poll_seconds
    self.env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    self._active: list[_Attempt] = []
    self._queue: collections.deque[list[RunSpec]] = collections.deque()
    self._durations: list[float] = []
    # The first SIGINT/SIGTERM while run() runs: every attempt is stopped, the sweep ends.
    self._stop = signals.StopSignals()
    self._outcome = Outcome(len(self.specs))
    self._preexec = die_with_this_process()
    self._waiting: dict[str, float] = {}  # run name: when it was first found locked by another trainer

  # Paths.

  def run_path(self, spec: RunSpec) -> str:
    return os.path.join(self.sweep_dir, RUNS_DIR, spec.name)

  # The loop.

  def run(self) -> Outcome:
    """Trains every unfinished run; returns when all ended or a signal stopped the sweep."""
    outcome = self._outcome
    todo = []
    for spec in self.specs:
      if is_finished(self.run_path(spec)):
        outcome.skipped += 1
        if not os.path.isfile(os.path.join(self.run_path(spec), RUN_FILE)):
          self._write_run_file(spec)
      else:
        todo.append(spec)
    # Fewer runs than `parallel` full packs: smaller packs, so that every process has some.
    size = min(self.pack_size, max(1, math.ceil(len(todo) / self.parallel)))
    packs = plan_packs(todo, size)
    if len(packs) <= self.parallel:  # all train at once: the sweep ends with the slowest, so even them out
      packs = plan_packs(todo, size, dealt=True)
    self._queue.extend(packs)
    packing = f", in {len(self._queue)} pack(s) of up to {size} runs" if size > 1 else ""
    self._say(
      f"Sweep {self.sweep_dir}: {outcome.total} runs, {outcome.skipped} already finished (skipped), "
      f"{len(todo)} to train, {self.parallel} at a time with {self.threads} thread(s) each{packing}."
    )
    with self._stop:
      while (self._queue or self._active) and not self._stop.requested:
        while self._queue and len(self._active) < self.parallel and not self._stop.requested:
          startable = self._next()
          if startable is None:
            break
          self._start(startable)
        time.sleep(self.poll_seconds)
        for attempt in list(self._active):
          if self._stop.requested:
            break
          self._check(attempt)
      if self._stop.requested:
        self._interrupt()
    return outcome

  def _next(self) -> list[RunSpec] | None:
    """Takes the first queued pack none of whose run directories another trainer holds (or that waited long enough)."""
    for pack in self._queue:
      now = time.monotonic()
      ready = True
      for spec in pack:
        holder = run_lock.holder(self.run_path(spec))
        if holder is not None and spec.name not in self._waiting:
          self._waiting[spec.name] = now
          self._say(
            f"wait {spec.name}: {self.run_path(spec)} is in use by another trainer ({holder}); "
            f"it starts when that one ends, or in {LOCK_WAIT_SECONDS:.0f} s"
          )
        if holder is not None and now - self._waiting[spec.name] < LOCK_WAIT_SECONDS:
          ready = False
      if ready:
        self._queue.remove(pack)
        return pack
    return None

  def _start(self, pack: list[RunSpec]) -> None:
    stamp = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    commands = {
      spec.name: command(spec, self.run_path(spec), self.passthrough, self.threads, self.python) for spec in pack
    }
    offsets, pack_file = {}, None
    if len(pack) > 1:
      pack_file = self._write_pack_file(pack, commands)
      cmd = [self.python, "-m", TRAIN_MODULE, f"--pack_file={pack_file}", *_thread_args(commands[pack[0].name])]
      output_path = pack_file.removesuffix(".json") + ".log"
    else:
      cmd = commands[pack[0].name]
      output_path = os.path.join(self.run_path(pack[0]), LOG_FILE)
    for spec in pack:
      path = self.run_path(spec)
      _remove(os.path.join(path, FAILED_FILE))
      self._write_run_file(spec)
      with open(os.path.join(path, LOG_FILE), "a", encoding="utf-8") as handle:
        how = f" (in a pack of {len(pack)}: {output_path})" if pack_file else ""
        handle.write(f"==== {stamp} attempt{how}: {shlex.join(commands[spec.name])}\n")
        offsets[spec.name] = handle.tell()
    with open(output_path, "a", encoding="utf-8") as handle:
      if pack_file:
        handle.write(f"==== {stamp} attempt: {shlex.join(cmd)}\n")
        handle.flush()
      process = subprocess.Popen(  # pylint: disable=subprocess-popen-preexec-fn  (it only calls prctl)
        cmd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=self.env,
        preexec_fn=self._preexec,
      )
    self._active.append(_Attempt(pack, process, offsets, time.monotonic(), pack_file))
    self._say(f"start {pack[0].name}" if len(pack) == 1 else f"start a pack of {len(pack)}: {_names(pack)}")
    self._progress()

  def _write_pack_file(self, pack: list[RunSpec], commands: dict[str, list[str]]) -> str:
    """SWEEP_DIR/packs/<first run>+<n>.json: each run's name, training arguments and log (cli/train.py --pack_file)."""
    directory = os.path.join(self.sweep_dir, PACKS_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{pack[0].name[:150]}+{len(pack) - 1}.json")
    runs = [
      {"name": spec.name, "args": commands[spec.name][3:], "log": os.path.join(self.run_path(spec), LOG_FILE)}
      for spec in pack
    ]
    write_json_atomic(path, {"runs": runs})
    return path

  def _check(self, attempt: _Attempt) -> None:
    code = attempt.process.poll()
    if code is None:
      return
    self._active.remove(attempt)
    seconds = time.monotonic() - attempt.started
    self._durations += [seconds / len(attempt.specs)] * len(attempt.specs)
    for spec in attempt.specs:
      path = self.run_path(spec)
      log_path = os.path.join(path, LOG_FILE)
      if is_finished(path):
        self._outcome.finished.append(spec.name)
        self._say(f"finished {spec.name} in {format_duration(seconds)}")
        continue
      reason = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
      if code == 0:
        reason = "exit code 0 without metrics.json"
      tail = _tail(log_path, attempt.log_offsets[spec.name])
      if attempt.pack_file and not tail:  # the pack ended before this run wrote a line: its own output says why
        tail = _tail(attempt.pack_file.removesuffix(".json") + ".log", 0)
      write_text_atomic(os.path.join(path, FAILED_FILE), f"{reason}\n" + "".join(f"{line}\n" for line in tail))
      last = next((line for line in reversed(tail) if line.strip()), "")
      self._outcome.failed.append(spec.name)
      self._say(f"FAILED {spec.name} ({reason}): {last.strip()[:300]}\n  log: {log_path}")
    self._progress()

  def _interrupt(self) -> None:
    """Stops every running attempt; each run stays resumable (no FAILED marker)."""
    name = self._stop.name
    running = sum(len(attempt.specs) for attempt in self._active)
    self._say(f"{name}: stopping {running} running run(s)...")
    for attempt in self._active:
      if attempt.process.poll() is None:
        attempt.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for attempt in self._active:
      try:
        attempt.process.wait(max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        attempt.process.kill()
        attempt.process.wait()
      for spec in attempt.specs:
        with open(os.path.join(self.run_path(spec), LOG_FILE), "a", encoding="utf-8") as handle:
          handle.write(f"==== interrupted by {name}; the next invocation of the sweep resumes this run\n")
    self._active.clear()
    self._outcome.interrupted = self._stop.signal

  # Files.

  def _write_run_file(self, spec: RunSpec) -> None:
    path = self.run_path(spec)
    os.makedirs(path, exist_ok=True)
    write_json_atomic(os.path.join(path, RUN_FILE), spec.to_json())

  # Reporting.

  def _say(self, line: str) -> None:
    self.out.write(line + "\n")
    self.out.flush()

  def _progress(self) -> None:
    eta = None
    queued = sum(len(pack) for pack in self._queue)
    if self._durations:
      mean = sum(self._durations) / len(self._durations)  # seconds per run (a pack's time shared by its runs)
      now = time.monotonic()
      work = queued * mean + sum(max(0.0, mean * len(a.specs) - (now - a.started)) for a in self._active)
      eta = work / self.parallel
    running = sum(len(attempt.specs) for attempt in self._active)
    self._say(
      f"done {self._outcome.done} / running {running} / failed {len(self._outcome.failed)} / "
      f"left {queued} | ETA {format_duration(eta)}"
    )


def _names(pack: Sequence[RunSpec], shown: int = 3) -> str:
  names = ", ".join(spec.name for spec in pack[:shown])
  return names + (f" and {len(pack) - shown} more" if len(pack) > shown else "")


def _thread_args(cmd: Sequence[str]) -> list[str]:
  """The thread flags of a run's command, which its pack's process sets once for all its runs."""
  return [arg for arg in cmd if arg.partition("=")[0].removeprefix("--") in THREAD_FLAGS]


def _tail(path: str, offset: int, lines: int = TAIL_LINES) -> list[str]:
  """The last `lines` lines written to `path` after `offset`."""
  try:
    with open(path, "rb") as handle:
      handle.seek(0, os.SEEK_END)
      start = max(offset, handle.tell() - 64 * 1024)
      handle.seek(start)
      text = handle.read().decode("utf-8", errors="replace")
  except OSError:
    return []
  return text.splitlines()[-lines:]


def _remove(path: str) -> None:
  try:
    os.unlink(path)
  except FileNotFoundError:
    pass

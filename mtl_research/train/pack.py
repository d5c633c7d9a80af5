"""The controller of a pack: several runs trained by one compiled loop (pack_loop.py), each a normal run.

Every member is a `Trainer` (loop.py) with its own run directory, writers,
periodic actions, checkpoints and selection; only the loop calls are shared.
Each call runs the same number of steps for every running member: the fewest
any of them may run before one of its own actions is due, so members with the
same schedule (a sweep's runs) stop together, and members at other steps (one
resumed from an older checkpoint) still run exactly their own steps. A step's
arithmetic does not depend on where a loop call ends (train_loop.py), so a
member computes what it computes alone.

Isolation: a member whose loss turns non-finite is replayed alone with its own
careful loop (Trainer._recover); if its --nan_policy stops it, it leaves the
pack (its steps are skipped from then on) and the others go on. A stop request
(SIGTERM, Ctrl-C) checkpoints every running member before Interrupted is raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import contextlib
import dataclasses
import logging
import time

import tensorflow as tf

from mtl_research import provenance
from mtl_research.errors import UserError
from mtl_research.train import guard
from mtl_research.train.interrupt import Interrupted
from mtl_research.train.loop import Segment, Trainer
from mtl_research.train.pack_loop import PackLoop


@dataclasses.dataclass
class MemberResult:
  """How one member ended: its metrics, or the one-sentence error that stopped it."""

  name: str
  metrics: dict | None = None
  error: str | None = None


class _NoRetracingWarning(logging.Filter):
  """Drops TensorFlow's "N out of the last N calls to F triggered tf.function retracing" warning.

  Every member traces the same Python functions (checkpoint writes, the
  evaluation step) for its own variables: one trace per member is what a pack
  means, not the mistake the warning is for.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _retracing_expected() -> Iterator[None]:
  quiet = _NoRetracingWarning()
  tf.get_logger().addFilter(quiet)
  try:
    yield
  finally:
    tf.get_logger().removeFilter(quiet)


class PackTrainer:
  """Trains `trainers` (one per run, named `names`) together; `log` receives the pack's own lines."""

  def __init__(
    self, trainers: Sequence[Trainer], names: Sequence[str], jit_fall_back: bool, log: Callable[[str], None]
  ):
    self.trainers = list(trainers)
    self.names = list(names)
    self.log = log
    self.jit_fall_back = jit_fall_back
    self.loop = PackLoop([t.parts.train_loop for t in self.trainers], self.trainers[0].parts.train_loop.jit_compile)

  def compile(self) -> None:
    """Compiles the pack's loop (raises UserError under --jit_compile=on if XLA cannot serve)."""
    self.log(
      f"Compiling the train loop of {len(self.trainers)} runs with XLA…"
      if self.loop.jit_compile
      else f"Tracing the train loop of {len(self.trainers)} runs (graph)…"
    )
    self.log(self.loop.compile(self.jit_fall_back, [t.parts.origins for t in self.trainers], self.names))

  def run(self) -> list[MemberResult]:
    """Trains every member to its end, then selects, evaluates and writes each one's results.

    Raises Interrupted (after every running member saved a checkpoint) if a
    stop was requested. A member stopped by a non-finite loss, or by a
    UserError of its own, ends with its `error`; the others go on.
    """
    with _retracing_expected():
      return self._run()

  def _run(self) -> list[MemberResult]:
    results = [MemberResult(name) for name in self.names]
    starts = [t.begin() for t in self.trainers]
    if any(s < t.parts.total_steps for s, t in zip(starts, self.trainers)) and not self.loop.compiled:
      self.compile()
    segments: list[Segment | None] = []
    for trainer, start in zip(self.trainers, starts):
      trainer.record_start(start)
      segments.append(trainer.open_segment(start) if start < trainer.parts.total_steps else None)
    began = time.perf_counter()
    try:
      self._train(segments, results)
    except Interrupted:
      for trainer, result in zip(self.trainers, results):
        if result.error is None:
          trainer.end(provenance.INTERRUPTED)
      raise
    finally:
      for segment in segments:
        if segment is not None:
          segment.close()
    for trainer, segment, result in zip(self.trainers, segments, results):
      if result.error is not None:
        continue
      if segment is not None:
        trainer.log_trained(segment, self.loop.compile_seconds)
      try:
        result.metrics = trainer.finish()
      except UserError as error:
        self._fail(trainer, result, str(error))
    self.log(f"The pack of {len(self.trainers)} runs took {time.perf_counter() - began:.2f} s after compiling.")
    return results

  def _train(self, segments: list[Segment | None], results: list[MemberResult]) -> None:
    while True:
      running = {
        k: segment
        for k, segment in enumerate(segments)
        if segment is not None and results[k].error is None and segment.step < segment.total
      }
      if not running:
        return
      self._honour_stop(running)
      stops = {k: segment.next_stop() for k, segment in running.items()}
      steps = min(stop - running[k].step for k, (stop, _) in stops.items())
      # A member's diagnostics are due only where its own loop call would have ended.
      diagnose = [k in stops and stops[k][0] == running[k].step + steps and stops[k][1] for k in range(len(segments))]
      tick = time.perf_counter()
      logs = self.loop.run(steps, diagnose, [k in running for k in range(len(segments))])
      seconds = time.perf_counter() - tick  # the loop's, shared by its runs: each ran its steps in it
      for k, segment in running.items():
        member_logs = logs[k]
        assert member_logs is not None  # every running member stepped
        try:
          self.trainers[k].end_loop(segment, segment.step + steps, diagnose[k], member_logs, seconds)
        except (guard.NonFiniteError, UserError) as error:
          self._fail(self.trainers[k], results[k], str(error))

  def _honour_stop(self, running: dict[int, Segment]) -> None:
    """On a stop request, checkpoints every running member and raises one Interrupted for all."""
    messages = []
    for k, segment in running.items():
      try:
        self.trainers[k].honour_stop(segment.step)
      except Interrupted as interrupted:
        messages.append(f"{self.names[k]}: {interrupted}")
    if messages:
      raise Interrupted("\n".join(messages))

  def _fail(self, trainer: Trainer, result: MemberResult, error: str) -> None:
    result.error = error
    trainer.end(provenance.FAILED)
    trainer.log(f"error: {error}")

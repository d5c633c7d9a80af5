"""A pack: the train loops of several runs stepped by one compiled program.

For the small models of tabular MTL a run's cost is mostly per-process
start-up and tracing, and one XLA program of a small model leaves most of
the machine idle between its tiny kernels. A pack traces the steps of S runs
into one `tf.while_loop`: iteration i runs step i of every run in turn, each
on its own variables (model, optimizer, balancer, step counter) and its own
rows. The runs share nothing but the program: their steps are independent
computations that XLA schedules one after the other, so each run computes
what it computes alone (tested bit for bit in tests/test_pack.py).

A call takes the row indices of every run, [S, steps_per_call, batch], and
the number of steps of each, [S]: a run with 0 (stopped by a non-finite loss,
or finished) is skipped by a `tf.cond` around its step, so one compiled
program serves any subset of the pack. The controller (train/pack.py) gives
every running member the same number of steps per call.

What a member does alone (its careful loop, which replays steps after a
non-finite loss, its evaluation and checkpoints) stays its own TrainLoop's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import re
import time

import numpy as np
import tensorflow as tf

from mtl_research.errors import UserError
from mtl_research.train import compilation
from mtl_research.train.train_loop import CallLogs, TrainLoop, call, resolve_executor

# The name scope of member k's ops ("run3/balancer/..."): names the member XLA could not compile.
_MEMBER_SCOPE = "run{}"
_MEMBER = re.compile(r"(?:^|/)run(\d+)(?:_\d+)?/")


class PackLoop:
  """One compiled loop over the steps of `loops` (one TrainLoop per run, all on one device)."""

  def __init__(self, loops: Sequence[TrainLoop], jit_compile: bool):
    if not loops:
      raise ValueError("a pack needs at least one train loop")
    shapes = {(loop.steps_per_call, loop.global_batch_size) for loop in loops}
    if len(shapes) != 1:
      raise ValueError(f"the loops of a pack must share steps_per_call and the batch size, not {sorted(shapes)}")
    if any(loop.distributed for loop in loops):
      raise ValueError("a pack runs on one device: no loop of it may use a tf.distribute strategy")
    self.loops = list(loops)
    self.steps_per_call, self.batch_size = shapes.pop()
    self._use(jit_compile)

  def _use(self, jit_compile: bool) -> None:
    self.jit_compile = jit_compile
    self.executor = resolve_executor(self.loops[0].requested_executor, False, jit_compile)
    self.loop = tf.function(self._loop, jit_compile=jit_compile, autograph=False)
    self.compiled = False
    self.compile_seconds = 0.0

  def __len__(self) -> int:
    return len(self.loops)

  def _loop(self, blocks: tf.Tensor, num_steps: tf.Tensor, diagnose: tf.Tensor) -> list[dict]:
    """Runs num_steps[k] steps of member k on blocks[k]; each member's fast-loop logs (TrainLoop._loop)."""
    for loop in self.loops:
      loop.loss_sum.assign(0.0)
    carries = [loop.initial_carry(careful=False) for loop in self.loops]

    def body(i, carries):
      after = []
      for k, (loop, carry) in enumerate(zip(self.loops, carries)):
        with tf.name_scope(_MEMBER_SCOPE.format(k)):
          after.append(
            tf.cond(
              i < num_steps[k],
              lambda loop=loop, k=k, carry=carry: loop.advance(blocks[k], i, carry),
              lambda carry=carry: carry,
            )
          )
      return i + 1, after

    _, carries = tf.while_loop(lambda i, _: i < tf.reduce_max(num_steps), body, (tf.constant(0), carries))
    results = []
    for k, (loop, carry) in enumerate(zip(self.loops, carries)):
      logs, _ = loop.with_means(carry)
      results.append(loop.fast_loop_end(logs, blocks[k], num_steps[k], diagnose[k]))
    return results

  def _call(self, rows: Sequence[np.ndarray | None], diagnose: Sequence[bool]) -> list[dict]:
    """One call on member k's batches rows[k] (None: the member does not step)."""
    blocks = np.zeros([len(self.loops), self.steps_per_call, self.batch_size], np.int32)
    counts = np.zeros([len(self.loops)], np.int32)
    for k, member_rows in enumerate(rows):
      if member_rows is not None:
        blocks[k, : len(member_rows)] = member_rows
        counts[k] = len(member_rows)
    return call(self.loop, self.executor, tf.constant(blocks), tf.constant(counts), tf.constant(list(diagnose)))

  def compile(self, fall_back: bool, origins: Sequence[Mapping[str, str]], names: Sequence[str]) -> str:
    """Traces and, under XLA, compiles the pack's loop now, running no step; returns a line saying so.

    `origins[k]` maps the step's scopes to the flags member k chose, `names[k]`
    is its name: if XLA cannot compile the loop, the line (or, without
    `fall_back`, the UserError) names the member and its component.
    """
    tick = time.perf_counter()
    try:
      self._call([None] * len(self.loops), [False] * len(self.loops))
    except tf.errors.InvalidArgumentError as error:
      if not self.jit_compile or not compilation.is_compile_error(error):
        raise
      cause = self._culprit(error, origins, names)
      if not fall_back:
        raise UserError(
          f"--jit_compile=on: XLA cannot compile the train loop: {cause}; use --jit_compile=auto or off."
        ) from None
      self._use(False)
      for loop in self.loops:  # a member's careful replay runs the mode its steps ran
        loop._use(False)  # pylint: disable=protected-access
      line = self.compile(fall_back, origins, names)
      self.compile_seconds = time.perf_counter() - tick
      return f"XLA cannot compile {cause}: using the graph loop for the whole pack. {line}"
    self.compiled = True
    for loop in self.loops:
      loop.compiled = True
    self.compile_seconds = time.perf_counter() - tick
    verb = "Compiled the pack's train loop with XLA" if self.jit_compile else "Traced the pack's train loop (graph)"
    return f"{verb} in {self.compile_seconds:.2f} s ({len(self.loops)} runs)."

  @staticmethod
  def _culprit(error: tf.errors.OpError, origins: Sequence[Mapping[str, str]], names: Sequence[str]) -> str:
    node = re.search(r"\{\{node ([^}]+)\}\}", str(error))
    member = _MEMBER.search(node.group(1)) if node else None
    if member is None:
      return compilation.culprit(error, {})
    k = int(member.group(1))
    return f"{compilation.culprit(error, origins[k])} of run {names[k]}"

  def run(self, num_steps: int, diagnose: Sequence[bool], active: Sequence[bool]) -> list[dict | None]:
    """Runs `num_steps` (≥ 1) steps of every active member from its current step.

    Returns each member's logs as TrainLoop.run returns them (None for an
    inactive member). More steps than `steps_per_call` take several calls.
    """
    if num_steps < 1:
      raise ValueError(f"num_steps must be at least 1, not {num_steps}")
    rows = [
      loop.order.batches(int(loop.global_step.numpy()), num_steps) if on else None
      for loop, on in zip(self.loops, active)
    ]
    calls = [CallLogs(len(loop.task_specs), careful=False) for loop in self.loops]
    for begin in range(0, num_steps, self.steps_per_call):
      end = min(begin + self.steps_per_call, num_steps)
      last = end == num_steps
      chunk = [None if r is None else r[begin:end] for r in rows]
      results = self._call(chunk, [bool(d and on and last) for d, on in zip(diagnose, active)])
      for k, on in enumerate(active):
        if on:
          calls[k].add(results[k])
    self.compiled = True
    return [c.result() if on else None for c, on in zip(calls, active)]

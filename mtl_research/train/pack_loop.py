"""A pack: the train loops of several runs stepped by one compiled program.

For the small models of tabular MTL a run's cost is mostly per-process
start-up and tracing, and one XLA program of a small model leaves most of
the machine idle between its tiny kernels. A pack traces the steps of S runs
into one `tf.while_loop`: iteration i runs step i of every run in turn, each
on its own variables (model, optimizer, balancer, step counter) and its own
rows. The runs share nothing but the program: their steps are independent
computations that XLA schedules one after the other, so each run computes
what it computes alone (tested bit for bit in tests/test_pack.py).

A call takes the row indices of the running members, [S', steps_per_call,
batch], and one number of steps for all of them (the controller, train/pack.py,
gives every running member the same). The program of a set of running members
is compiled once, when that set first runs: normally the whole pack, once;
a member that leaves it (stopped by a non-finite loss, or finished before the
others) makes one more program for the rest. Skipping a member's step with a
`tf.cond` instead would serve every set with one program, but made the loop of
10 runs about 25% slower (scripts/benchmark.py --sweep, measured while this was built).

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
    self._programs: dict[tuple[int, ...], tf.types.experimental.PolymorphicFunction] = {}
    self.compiled = False
    self.compile_seconds = 0.0

  def __len__(self) -> int:
    return len(self.loops)

  def _program(self, members: tuple[int, ...]):
    """The compiled loop of the running `members` (indices into `loops`), made when first asked for."""
    if members not in self._programs:
      loops = [self.loops[k] for k in members]
      self._programs[members] = tf.function(
        lambda blocks, num_steps, diagnose: self._loop(loops, members, blocks, num_steps, diagnose),
        jit_compile=self.jit_compile,
        autograph=False,
      )
    return self._programs[members]

  @staticmethod
  def _loop(loops, members, blocks: tf.Tensor, num_steps: tf.Tensor, diagnose: tf.Tensor) -> list[dict]:
    """Runs `num_steps` steps of every loop, loop j on blocks[j]; each one's fast-loop logs (TrainLoop._loop)."""
    for loop in loops:
      loop.loss_sum.assign(0.0)

    def body(i, carries):
      after = []
      for j, (loop, carry) in enumerate(zip(loops, carries)):
        with tf.name_scope(_MEMBER_SCOPE.format(members[j])):
          after.append(loop.advance(blocks[j], i, carry))
      return i + 1, after

    initial = [loop.initial_carry(careful=False) for loop in loops]
    _, carries = tf.while_loop(lambda i, _: i < num_steps, body, (tf.constant(0), initial))
    results = []
    for j, (loop, carry) in enumerate(zip(loops, carries)):
      logs, _ = loop.with_means(carry)
      results.append(loop.fast_loop_end(logs, blocks[j], num_steps, diagnose[j]))
    return results

  def _call(self, members: tuple[int, ...], rows: Sequence[np.ndarray], diagnose: Sequence[bool]) -> list[dict]:
    """One call of the program of `members` on their batches `rows` (one [steps, batch] array each)."""
    steps = len(rows[0]) if rows else 0
    blocks = np.zeros([len(members), self.steps_per_call, self.batch_size], np.int32)
    for j, member_rows in enumerate(rows):
      blocks[j, :steps] = member_rows
    return call(
      self._program(members),
      self.executor,
      tf.constant(blocks),
      tf.constant(steps, tf.int32),
      tf.constant(list(diagnose), tf.bool),
    )

  def compile(self, fall_back: bool, origins: Sequence[Mapping[str, str]], names: Sequence[str]) -> str:
    """Traces and, under XLA, compiles the pack's loop now, running no step; returns a line saying so.

    `origins[k]` maps the step's scopes to the flags member k chose, `names[k]`
    is its name: if XLA cannot compile the loop, the line (or, without
    `fall_back`, the UserError) names the member and its component.
    """
    tick = time.perf_counter()
    try:
      everyone = tuple(range(len(self.loops)))
      self._call(everyone, [np.zeros([0, self.batch_size], np.int32)] * len(everyone), [False] * len(everyone))
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
    members = tuple(k for k, on in enumerate(active) if on)
    rows = [self.loops[k].order.batches(int(self.loops[k].global_step.numpy()), num_steps) for k in members]
    calls = [CallLogs(len(self.loops[k].task_specs), careful=False) for k in members]
    for begin in range(0, num_steps, self.steps_per_call):
      end = min(begin + self.steps_per_call, num_steps)
      last = end == num_steps
      results = self._call(members, [r[begin:end] for r in rows], [bool(diagnose[k] and last) for k in members])
      for logs, result in zip(calls, results):
        logs.add(result)
    self.compiled = True
    by_member = dict(zip(members, calls))
    return [by_member[k].result() if k in by_member else None for k in range(len(self.loops))]

"""What the controller does between loop calls: periodic actions, each a *when* and a *what*.

An action runs after the loop call that ends on one of its steps (every
`every` steps, and at the end of training when `at_end`); the controller ends
its loop calls wherever some action is due, so a new periodic behaviour (a
diagnostic, an architecture's gate statistics) is one more action, not another
branch of the controller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class LoopEnd:
  """What an action sees: where a loop call ended and what it returned."""

  step: int  # steps completed
  total: int  # steps of the whole run
  logs: dict[str, Any]  # the last step's logs (NumPy values)
  steps_per_sec: float  # of this loop call


@dataclasses.dataclass(frozen=True)
class PeriodicAction:
  """Runs `run` every `every` steps (0: never periodically) and, if `at_end`, after the last step.

  `needs_diagnostics`: the loop call ending on a step where this action is due
  computes the diagnostics that cost extra backward passes (the gradient-conflict
  statistics of --log_grad_conflict).
  """

  name: str
  every: int
  run: Callable[[LoopEnd], None]
  at_end: bool = True
  needs_diagnostics: bool = False

  def due(self, step: int, total: int) -> bool:
    return (self.every > 0 and step % self.every == 0) or (self.at_end and step == total)

  def next_due(self, step: int) -> int | None:
    """The first step after `step` where the action is due periodically (None: never)."""
    return (step // self.every + 1) * self.every if self.every > 0 else None


def next_stop(step: int, total: int, steps_per_loop: int, actions: Sequence[PeriodicAction]) -> int:
  """Where the loop call starting after `step` ends: at most `steps_per_loop` on, at the first due action."""
  stops = [total, step + steps_per_loop] + [due for action in actions if (due := action.next_due(step)) is not None]
  return min(stops)


def needs_diagnostics(actions: Sequence[PeriodicAction], step: int, total: int) -> bool:
  return any(action.needs_diagnostics and action.due(step, total) for action in actions)

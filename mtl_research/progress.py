"""Progress lines shared by the trainer and the sweep runner (no TensorFlow)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
import time


def format_duration(seconds: float | None) -> str:
  """h:mm:ss, or -:--:-- when unknown (no estimate yet)."""
  if seconds is None:
    return "-:--:--"
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TrainingProgress:
  """The trainer's line after each loop call: loop means, the last loop's speed and an ETA.

  A cumulative average would fold the first call's one-time costs into every
  line (the rate climbs for the whole run and the first ETA is far too long),
  so each line describes only the interval since the previous one:

  * `total` and the task losses are means over the loop's steps (one batch's
    values are too noisy to read);
  * `steps/s` is the loop call's own rate (what TensorBoard logs as
    `steps_per_sec`);
  * the ETA is the remaining steps at the interval's wall-clock rate, which also
    counts the periodic work between calls (evaluation, checkpoints), so it is
    what the user will wait. Compilation runs before the first interval starts
    (`start` is called after it), so it is never in an ETA.
  """

  def __init__(self, task_names: Sequence[str], total: int, clock: Callable[[], float] = time.perf_counter):
    self.task_names = list(task_names)
    self.total = total
    self.clock = clock
    self._step: int | None = None
    self._time = 0.0

  def start(self, step: int) -> None:
    """Marks the beginning of training at `step` (after compilation)."""
    self._step, self._time = step, self.clock()

  def line(self, step: int, loop_rate: float, objective: float, losses: Sequence[float]) -> str:
    """The line for a loop call that ended at `step` (call `start` first)."""
    if self._step is None:
      raise RuntimeError("TrainingProgress.line called before start")
    now = self.clock()
    steps, seconds = step - self._step, now - self._time
    self._step, self._time = step, now
    remaining = (self.total - step) * seconds / steps if steps > 0 and seconds > 0 else None
    eta = format_duration(0.0 if step >= self.total else remaining)
    task_losses = " ".join(f"{name} {value:.4f}" for name, value in zip(self.task_names, losses))
    width = len(str(self.total))
    return (
      f"step {step:>{width}}/{self.total} | total {objective:.4f} | {task_losses} | "
      f"{loop_rate:,.0f} steps/s | ETA {eta}"
    )

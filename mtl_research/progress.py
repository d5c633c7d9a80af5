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
  and one loop's pace alone swings with the periodic work between calls (an
  evaluation every fifth loop). So:

  * `total` and the task losses are means over the loop's steps (one batch's
    values are too noisy to read);
  * `steps/s` is the loop call's own rate (what TensorBoard logs as
    `steps_per_sec`);
  * the ETA is the remaining steps at the wall-clock pace of the last `window`
    steps (the trainer passes its longest action period, so that pace includes
    each periodic evaluation and checkpoint as often as they come), or of all
    steps since `start` while fewer have run. Compilation runs before `start`
    is called, so it is never in an ETA.
  """

  def __init__(
    self, task_names: Sequence[str], total: int, window: int = 1, clock: Callable[[], float] = time.perf_counter
  ):
    self.task_names = list(task_names)
    self.total = total
    self.window = max(window, 1)
    self.clock = clock
    self._marks: list[tuple[int, float]] = []  # (step, time) of `start` and each line, oldest first

  def start(self, step: int) -> None:
    """Marks the beginning of training at `step` (after compilation)."""
    self._marks = [(step, self.clock())]

  def line(self, step: int, loop_rate: float, objective: float, losses: Sequence[float]) -> str:
    """The line for a loop call that ended at `step` (call `start` first)."""
    if not self._marks:
      raise RuntimeError("TrainingProgress.line called before start")
    now = self.clock()
    self._marks.append((step, now))
    # Keep as the first mark the newest one at least `window` steps back (or the oldest there is).
    while len(self._marks) > 2 and self._marks[1][0] <= step - self.window:
      self._marks.pop(0)
    first_step, first_time = self._marks[0]
    steps, seconds = step - first_step, now - first_time
    remaining = (self.total - step) * seconds / steps if steps > 0 and seconds > 0 else None
    eta = format_duration(0.0 if step >= self.total else remaining)
    task_losses = " ".join(f"{name} {value:.4f}" for name, value in zip(self.task_names, losses))
    width = len(str(self.total))
    return (
      f"step {step:>{width}}/{self.total} | total {objective:.4f} | {task_losses} | "
      f"{loop_rate:,.0f} steps/s | ETA {eta}"
    )

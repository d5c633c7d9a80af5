"""The trainer's progress line (progress.py) under a fake clock."""

import pytest

from mtl_research.progress import TrainingProgress, format_duration


class FakeClock:
  def __init__(self, *times: float):
    self.times = list(times)

  def __call__(self) -> float:
    return self.times.pop(0)


def test_each_line_describes_only_its_own_interval():
  # Training starts at 10 s (after compiling); the first interval is slow (warm-up and an
  # evaluation), the second fast: the ETA follows the latest interval, not the run's average.
  progress = TrainingProgress(["price", "kind"], total=1000, clock=FakeClock(10.0, 12.0, 12.5, 13.0))
  progress.start(0)
  first = progress.line(100, 250.0, 0.75, [0.25, 0.5])
  assert first == "step  100/1000 | total 0.7500 | price 0.2500 kind 0.5000 | 250 steps/s | ETA 0:00:18"
  second = progress.line(600, 4321.0, 0.5, [0.125, 0.375])
  # 500 steps in 0.5 s of wall time: the remaining 400 take 0.4 s.
  assert second.endswith("| 4,321 steps/s | ETA 0:00:00")
  assert progress.line(1000, 900.0, 0.5, [0.1, 0.4]).endswith("ETA 0:00:00")


def test_a_long_run_estimates_hours_and_resumes_from_its_step():
  progress = TrainingProgress(["a"], total=1_000_000, clock=FakeClock(0.0, 100.0))
  progress.start(500_000)  # resumed half way
  line = progress.line(510_000, 101.0, 1.0, [1.0])
  assert line.endswith("| 101 steps/s | ETA 1:21:40")  # 490,000 steps at 100 steps/s of wall time


def test_line_before_start_is_a_bug():
  with pytest.raises(RuntimeError):
    TrainingProgress(["a"], total=10, clock=FakeClock(0.0)).line(5, 1.0, 1.0, [1.0])


def test_the_eta_counts_periodic_work_as_often_as_it_comes():
  """Loops of 100 steps take 1 s; every fifth also validates (+4 s). Over a window of 500 steps the
  pace is 500 steps per 9 s whichever loop just ended, so the ETA stops jumping."""
  times, now = [0.0], 0.0
  for loop in range(1, 21):
    now += 1.0 + (4.0 if loop % 5 == 0 else 0.0)
    times.append(now)
  progress = TrainingProgress(["a"], total=2000, window=500, clock=FakeClock(*times))
  progress.start(0)
  etas = [progress.line(100 * loop, 100.0, 1.0, [1.0]).rpartition("ETA ")[2] for loop in range(1, 21)]
  # From step 500 on, every line looks back over one whole period: (2000 − step) · 9 / 500 s.
  assert etas[4:] == [format_duration((2000 - 100 * loop) * 9 / 500) for loop in range(5, 21)]
  # Before, the pace since the start (no validation yet: 1 s per 100 steps).
  assert etas[:4] == [format_duration((2000 - 100 * loop) / 100) for loop in range(1, 5)]

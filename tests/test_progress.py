"""The trainer's progress line (progress.py) under a fake clock."""

import pytest

from mtl_research.progress import TrainingProgress


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

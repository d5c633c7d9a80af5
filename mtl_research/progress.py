"""Progress lines shared by the trainer and the sweep runner (no TensorFlow)."""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
  """h:mm:ss, or -:--:-- when unknown (no estimate yet)."""
  if seconds is None:
    return "-:--:--"
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

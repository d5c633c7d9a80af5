"""The model's input as data and models both see it: feature groups and their shape.

Kept apart from `data` and `models` so that neither has to know the other.
"""

from __future__ import annotations

import dataclasses

NUMERIC = "numeric"
EMBEDDED = "embedded"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """The shape of the model's input, which the architecture's encoder needs."""

  numeric_dim: int
  embedded_vocab_sizes: tuple[int, ...] = ()  # per embedded column; index 0 = missing or unseen

  @classmethod
  def of_numeric(cls, features) -> FeatureSpec:
    """The spec of features with only a numeric group."""
    return cls(int(features[NUMERIC].shape[1]))

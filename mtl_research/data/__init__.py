"""Datasets: sources registered by name (`--dataset`) and tf.data pipelines.

Importing this package registers every source listed below; to add a dataset,
write its module and add one import line here.
"""

from mtl_research.data import (
  census_income,  # noqa: F401  (registers "census_income")
  csv_table,  # noqa: F401  (registers "csv")
  gradnorm_toy,  # noqa: F401  (registers "gradnorm_toy")
  mmoe_synthetic,  # noqa: F401  (registers "mmoe_synthetic")
  npz_table,  # noqa: F401  (registers "npz")
  synthetic,  # noqa: F401  (registers "synthetic")
)
from mtl_research.data.registry import DATASETS

__all__ = ["DATASETS"]

"""Datasets: sources registered by name (`--dataset`) and tf.data pipelines.

Importing this package registers every source listed below; to add a dataset,
write its module and add one import line here.
"""

from mtl_research.data.registry import DATASETS
from mtl_research.data import synthetic  # noqa: F401  (registers "synthetic")
from mtl_research.data import csv_table  # noqa: F401  (registers "csv")
from mtl_research.data import npz_table  # noqa: F401  (registers "npz")
from mtl_research.data import census_income  # noqa: F401  (registers "census_income")
from mtl_research.data import gradnorm_toy  # noqa: F401  (registers "gradnorm_toy")
from mtl_research.data import mmoe_synthetic  # noqa: F401  (registers "mmoe_synthetic")

__all__ = ["DATASETS"]

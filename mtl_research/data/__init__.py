"""Datasets: sources registered by name (`--dataset`) and tf.data pipelines.

Importing this package registers every source listed below; to add a dataset,
write its module and add one import line here.
"""

from mtl_research.data.registry import DATASETS
from mtl_research.data import synthetic  # noqa: F401  (registers "synthetic")

__all__ = ["DATASETS"]

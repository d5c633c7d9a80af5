"""The dataset registry; sources are functions `load(params, seed) -> DatasetBundle`."""

from mtl_research.registry import Registry

DATASETS: Registry = Registry("dataset")

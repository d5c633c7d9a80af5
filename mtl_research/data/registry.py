"""The dataset registry.

A source is a function `load(params, seed, fitted=None) -> DatasetBundle`.
`fitted` is the `preprocessing` of an earlier bundle from the same source (read
back from a run directory), to be reused instead of fitted anew; sources
without preprocessing ignore it.
"""

from mtl_research.registry import Registry

DATASETS: Registry = Registry("dataset")

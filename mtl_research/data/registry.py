"""The dataset registry.

A source is a function `load(params, seed, fitted=None) -> DatasetBundle`.
`fitted` is the `fitted` preprocessing of an earlier bundle from the same
source (read back from a run directory: a `preprocessing.Preprocessing`, or the
JSON document of one, which the source checks), to be reused instead of fitted
anew; sources without preprocessing ignore it.
"""

from mtl_research.registry import Registry

DATASETS: Registry = Registry("dataset")

"""The architecture registry; builders `build(task_specs, feature_spec, params) -> MultiTaskModel`."""

from mtl_research.registry import Registry

ARCHITECTURES: Registry = Registry("architecture")

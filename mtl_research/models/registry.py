"""The architecture registry; builders `build(task_specs, params) -> MultiTaskModel`."""

from mtl_research.registry import Registry

ARCHITECTURES: Registry = Registry("architecture")

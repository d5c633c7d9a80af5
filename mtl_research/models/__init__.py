"""Multi-task architectures registered by name (`--model`).

Importing this package registers every architecture listed below; to add one,
write its module and add one import line here.
"""

from mtl_research.models import (
  cross_stitch,  # noqa: F401  (registers "cross_stitch")
  dselect_k,  # noqa: F401  (registers "dselect_k")
  mmoe,  # noqa: F401  (registers "mmoe")
  ple,  # noqa: F401  (registers "ple")
  shared_bottom,  # noqa: F401  (registers "shared_bottom")
)
from mtl_research.models.registry import ARCHITECTURES

__all__ = ["ARCHITECTURES"]

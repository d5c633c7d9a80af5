"""Loss balancers registered by name (`--balancer`).

Importing this package registers every balancer listed below; to add one, write
its module (a `Balancer` subclass, see base.py) and add one import line here.
"""

from mtl_research.balancers import (
  fixed,  # noqa: F401  (registers "fixed")
  gradnorm,  # noqa: F401  (registers "gradnorm")
  uncertainty,  # noqa: F401  (registers "uncertainty")
)
from mtl_research.balancers.registry import BALANCERS

__all__ = ["BALANCERS"]

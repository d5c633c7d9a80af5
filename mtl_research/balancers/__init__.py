"""Loss balancers registered by name (`--balancer`).

Importing this package registers every balancer listed below; to add one, write
its module (a `Balancer` subclass, see base.py) and add one import line here.
"""

from mtl_research.balancers import (
  aligned_mtl,  # noqa: F401  (registers "aligned_mtl")
  cagrad,  # noqa: F401  (registers "cagrad")
  config_direction,  # noqa: F401  (registers "config")
  db_mtl,  # noqa: F401  (registers "db_mtl")
  dualproj,  # noqa: F401  (registers "dualproj")
  excess_mtl,  # noqa: F401  (registers "excess_mtl")
  fairgrad,  # noqa: F401  (registers "fairgrad")
  fixed,  # noqa: F401  (registers "fixed")
  gradient_surgery,  # noqa: F401  (registers "pcgrad")
  gradient_vaccine,  # noqa: F401  (registers "gradvac")
  gradnorm,  # noqa: F401  (registers "gradnorm")
  imtl_g,  # noqa: F401  (registers "imtl_g")
  mgda,  # noqa: F401  (registers "mgda")
  moco,  # noqa: F401  (registers "moco")
  nash_mtl,  # noqa: F401  (registers "nash_mtl")
  sign_dropout,  # noqa: F401  (registers "graddrop")
  uncertainty,  # noqa: F401  (registers "uncertainty")
  upgrad,  # noqa: F401  (registers "upgrad")
)
from mtl_research.balancers.registry import BALANCERS

__all__ = ["BALANCERS"]

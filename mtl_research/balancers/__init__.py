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
  dynamic_weight_average,  # noqa: F401  (registers "dwa")
  excess_mtl,  # noqa: F401  (registers "excess_mtl")
  fairgrad,  # noqa: F401  (registers "fairgrad")
  famo,  # noqa: F401  (registers "famo")
  fixed,  # noqa: F401  (registers "fixed")
  geometric_mean,  # noqa: F401  (registers "gls")
  gradient_surgery,  # noqa: F401  (registers "pcgrad")
  gradient_vaccine,  # noqa: F401  (registers "gradvac")
  gradnorm,  # noqa: F401  (registers "gradnorm")
  imtl_g,  # noqa: F401  (registers "imtl_g")
  imtl_l,  # noqa: F401  (registers "imtl_l")
  mgda,  # noqa: F401  (registers "mgda")
  moco,  # noqa: F401  (registers "moco")
  nash_mtl,  # noqa: F401  (registers "nash_mtl")
  random_weighting,  # noqa: F401  (registers "rlw")
  scale_invariant,  # noqa: F401  (registers "scale_invariant")
  sign_dropout,  # noqa: F401  (registers "graddrop")
  smooth_tchebycheff,  # noqa: F401  (registers "stch")
  uncertainty,  # noqa: F401  (registers "uncertainty")
  upgrad,  # noqa: F401  (registers "upgrad")
)
from mtl_research.balancers.registry import BALANCERS

__all__ = ["BALANCERS"]

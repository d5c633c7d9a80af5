"""Scale-invariant loss: Σ_t log L_t, the baseline "SI" of Navon, Shamsian, Achituve, Maron,
Kawaguchi, Chechik & Fetaya, "Multi-Task Learning as a Bargaining Game", ICML 2022 (among
its baselines: the sum of the log losses, invariant to rescaling any one loss).

  L_total = Σ_t log(L_t + ε),   w_t = ∂L_total/∂L_t = 1 / (L_t + ε),

so replacing L_t by c·L_t adds the constant log c and leaves the gradient unchanged:
the update does not depend on the losses' scales at all. ε = 1e-8 (as DB-MTL's and
FAMO's authors' code) keeps a loss of exactly 0 finite; the baseline has none. This is
DB-MTL's loss-scale half without its gradient balancing.
"""

from __future__ import annotations

import tensorflow as tf

from mtl_research.balancers.loss_function import LossFunctionBalancer, log_losses
from mtl_research.balancers.registry import BALANCERS


@BALANCERS.register("scale_invariant", params=())
class ScaleInvariant(LossFunctionBalancer):
  """Navon et al. 2022's scale-invariant baseline: the sum of the log losses."""

  def scalarize(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(log_losses(losses))

"""GLS, the geometric loss strategy: Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++:
Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning",
CVPR Workshops 2019, its geometric loss strategy:

  L_total = (Π_{t=1}^{T} L_t)^{1/T},

the geometric mean of the task losses. By the chain rule its gradient is a weighted sum
of the tasks' gradients with

  w_t = ∂L_total/∂L_t = L_total / (T·L_t),

so each task is weighted inversely to its own loss, and multiplying one task's loss by
c > 0 multiplies L_total by c^{1/T} without changing the direction of the update
(scale invariance up to the step length).

Computed as exp(mean_t log(L_t + ε)), ε = 1e-8: in log space a product of many small
or large losses neither underflows nor overflows, and a loss of exactly 0 keeps a
finite gradient (the paper has no ε; LibMTL multiplies the raw losses). With one task
it is L itself: the method only weighs tasks against each other.
"""

from __future__ import annotations

import tensorflow as tf

from mtl_research.balancers.loss_function import LossFunctionBalancer, log_losses
from mtl_research.balancers.registry import BALANCERS


@BALANCERS.register("gls", params=())
class GeometricLossStrategy(LossFunctionBalancer):
  """Chennupati et al. 2019: the geometric mean of the task losses."""

  relative_only = True

  def scalarize(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.exp(tf.reduce_mean(log_losses(losses)))

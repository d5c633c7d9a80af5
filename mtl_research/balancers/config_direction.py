"""ConFIG: Liu, Chu & Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks",
ICLR 2025 (arXiv:2408.11104), Eq. 2-3; the authors' code tum-pbs/ConFIG.

With unit gradients u_t = g_t/‖g_t‖ and U = [u_1 … u_T], the conflict-free
direction is the one with equal projections on every unit gradient,

  v = (Uᵀ)⁺·1,   v̂ = v/‖v‖,

and the update keeps the length of the tasks' projections on it:

  d = (Σ_t g_tᵀv̂)·v̂.

In the basis of the task gradients v = Σ_t a_t·g_t with a_t = β_t/‖g_t‖ and
β = K⁺·1 (K_st = u_sᵀu_t, the cosines: Uᵀv = Kβ = 1): the direction is IMTL-G's
(imtl_g.py computes it, with K's accurate pseudo-inverse under XLA too), which
makes the projections equal but fixes the scale by Σα = 1 instead. Here the
weights are w = a·Σ_t(Ga)_t / (aᵀGa), independent of a's scale and sign, so the
direction always has positive projections where the unit gradients are
independent. Defaults follow the paper and the authors' code (`ConFIG_update`
with its default least-squares solve and `ProjectionLength`); the code's
`use_latest_square=False` (a pseudo-inverse) gives the same v. Its momentum
variant (M-ConFIG) is not offered.

Degenerate input: a zero gradient gets weight 0 and the others are balanced;
dependent unit gradients take the least-squares direction (IMTL-G's rule); every
gradient zero gives weights 1/T (a zero update); T = 1 gives w = 1 (d = g).
Diagnostics: `gramian/config_cosine` (the mean cosine between d and the task
gradients) and `gramian/config_spread` (their max − min: 0 when the projections
are equal).
"""

from __future__ import annotations

import tensorflow as tf

from mtl_research.balancers import imtl_g
from mtl_research.balancers.gramian import SCOPE_PARAM, GramianBalancer, Weighting
from mtl_research.balancers.registry import BALANCERS

PARAMS = (SCOPE_PARAM,)


def config_weights(gramian: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """ConFIG's float64 weights [T] from the float64 Gramian [T, T], and its diagnostics."""
  gramian = tf.convert_to_tensor(gramian, tf.float64)
  direction, _ = imtl_g.imtl_g_weights(gramian)  # ∝ a (module docstring)
  products = tf.linalg.matvec(gramian, direction)  # g_tᵀ(Jᵀa)
  squared = tf.tensordot(direction, products, 1)  # ‖Jᵀa‖²
  scale = tf.math.divide_no_nan(tf.reduce_sum(products), squared)
  num_tasks = gramian.shape[0]
  weights = tf.where(squared > 0, direction * scale, tf.fill([num_tasks], tf.constant(1.0 / num_tasks, tf.float64)))
  # cos(d, g_t) over the tasks with a gradient.
  norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gramian), 0.0))
  update = tf.linalg.matvec(gramian, weights)
  length = tf.sqrt(tf.maximum(tf.tensordot(weights, update, 1), 0.0))
  present = norms > 0
  cosines = tf.math.divide_no_nan(update, norms * length)
  count = tf.reduce_sum(tf.cast(present, tf.float64))
  spread = tf.reduce_max(tf.where(present, cosines, -2.0)) - tf.reduce_min(tf.where(present, cosines, 2.0))
  return weights, {
    "config_cosine": tf.math.divide_no_nan(tf.reduce_sum(tf.where(present, cosines, 0.0)), count),
    "config_spread": tf.where(count > 0, spread, 0.0),
  }


@BALANCERS.register("config", params=PARAMS)
class ConFIG(GramianBalancer):
  """Liu, Chu & Thuerey 2025: equal projections on every unit gradient, the projections' total length."""

  diagnostic_names = ("config_cosine", "config_spread")

  def weigh(self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor, seed: tf.Tensor) -> Weighting:
    del losses, step, seed  # ConFIG reads the gradients only
    weights, diagnostics = config_weights(gramian)
    return Weighting(weights, diagnostics)

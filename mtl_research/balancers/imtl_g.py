"""IMTL-G: the gradient balance of Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang,
"Towards Impartial Multi-task Learning", ICLR 2021, §3.2.

The shared parameters follow g = Σ_t α_t·g_t, with Σ_t α_t = 1 and α chosen so
that g has the same projection onto every unit task gradient u_t = g_t/‖g_t‖:

  gᵀu_1 = gᵀu_t  for t = 2..T.

The paper solves it in closed form (its Eq. 6), with D = [g_1 − g_2, …, g_1 − g_T]ᵀ
and U = [u_1 − u_2, …, u_1 − u_T]ᵀ:

  α_{2:T} = g_1·Uᵀ·(D·Uᵀ)⁻¹,   α_1 = 1 − Σ_{t≥2} α_t.

Here the same linear conditions are written through the Gramian G alone. With
n_t = ‖g_t‖ = √G_tt, the cosine matrix K_st = G_st/(n_s·n_t) and β_t = α_t·n_t,
the projections are gᵀu_t = Σ_s α_s·G_st/n_t = (Kβ)_t, so the conditions read
Kβ = c·1 for some common projection c. Hence

  β = K⁺·1,   α_t = β_t/n_t,   α ← α/Σ_t α_t   (the paper's Σα = 1),

which is the paper's solution whenever the unit gradients are linearly
independent (K invertible; the tests compare it with Eq. 6 on the explicit
vectors). Written this way the system is symmetric, no task plays the role of
task 1, and K's pseudo-inverse K⁺ (spectral.psd_function: exact under XLA too)
defines the answer where the paper's inverse does not exist.

Scale: the paper's update Σ_t α_t·g_t with Σα = 1, which LibMTL's `IMTL`, the
Aligned-MTL authors' `imtl` balancer (SamsungLabs/MTL) and TorchJD's `IMTLG`
use as well. LibMTL's `IMTL` is the paper's hybrid IMTL (the gradient balance
applied to the losses rescaled by IMTL-L's learned exp(s_t)·L_t − s_t); this
module is IMTL-G alone. Where the gradients come from: the paper's Algorithm 1
takes them with respect to the shared feature z, as MGDA-UB does; that is
--gradient_scope=representation, while the default `parameters` uses the
shared parameters.

Degenerate input (the paper's inverse does not exist; LibMTL's code fails
there, SamsungLabs/MTL's adds 1e-8·I):
  * a zero gradient has no direction (u_t = 0): that task gets α_t = 0 and the
    others are balanced among themselves;
  * gradients with the same direction (a duplicated task) act as one task:
    β = K⁺·1 is the minimum-norm solution, which splits their β equally, so
    two identical gradients get α = ½, ½, and g_2 = 3·g_1 gets α = ¾, ¼ (the
    angle bisector's weights (‖g_2‖, ‖g_1‖)/(‖g_1‖ + ‖g_2‖), the limit of the
    two-task solution as the angle closes);
  * unit gradients that are dependent without repeating (a task whose loss
    is the sum of two others) admit equal projections only at c = 0, a zero
    update; K⁺·1 is instead the least-squares solution, a step whose
    projections are as equal as they can be (`imtl_residual` > 0 says so);
  * an eigenvalue of K below λ_max·T·1e-12 counts as zero (unit gradients
    within ~1e-6 rad of the span of the others);
  * T = 1: α = 1; every gradient zero: α = 1/T (the update is zero anyway).
TorchJD's `IMTLG` (Quinton & Rey, "Jacobian Descent for Multi-Objective
Optimization", 2024) also uses a pseudo-inverse, of G itself: α ∝ G⁺·n. That is
the same solution when the gradients are independent; with parallel gradients
of unequal norms it splits α differently (g_2 = 3·g_1: ¼, ¾).

Σα = 1 fixes the scale but not the sign of the common projection c: when
Σ_t β_t/n_t < 0 the paper's normalization yields c < 0, a step that ascends
every task to first order (it happens with three or more tasks of unequal
norms). The paper has no rule for it and neither does this module; the
diagnostic `imtl_cosine` (the common cosine between g and each task gradient)
shows it as a negative value.

Diagnostics: `imtl_residual`, the spread (max − min) of cos(g, g_t) over the
tasks with a gradient (0 when the projections are equal, which they are unless
the gradients are dependent), and `imtl_cosine`, their mean.
"""

from __future__ import annotations

import tensorflow as tf

from mtl_research.balancers import spectral
from mtl_research.balancers.gramian import SCOPE_PARAM, GramianBalancer, Weighting
from mtl_research.balancers.registry import BALANCERS

PARAMS = (SCOPE_PARAM,)

# Eigenvalues of the cosine matrix K below λ_max·T·1e-12 count as zero (K's rounding is ~T·1e-16): unit
# gradients within about 1e-6 rad of the span of the others are taken as dependent.
RANK_TOLERANCE = 1e-12


def imtl_g_weights(gramian: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """IMTL-G's weights α [T] (Σα = 1) from the float64 Gramian [T, T], and its diagnostics (module docstring)."""
  gramian = tf.convert_to_tensor(gramian, tf.float64)
  num_tasks = gramian.shape[0]
  norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gramian), 0.0))
  has_gradient = tf.cast(norms > 0.0, tf.float64)
  inverse_norms = tf.math.divide_no_nan(tf.ones_like(norms), norms)  # 0 for a zero gradient: u_t = 0
  # K_st = u_sᵀu_t, with a unit diagonal (exactly, not up to rounding) where there is a gradient.
  cosines = tf.linalg.set_diag(gramian * inverse_norms[:, None] * inverse_norms[None, :], has_gradient)
  pseudo_inverse, _, _ = spectral.psd_function(cosines, RANK_TOLERANCE, tf.math.reciprocal, lambda a, b: -1.0 / (a * b))
  # β = K⁺·1 over the tasks with a gradient: the minimum-norm least-squares solution of Kβ = 1.
  beta = tf.linalg.matvec(pseudo_inverse, has_gradient)
  alpha = beta * inverse_norms
  total = tf.reduce_sum(alpha)
  # Σα = 0 only when every gradient is zero (or, measure zero, when the impartial direction's weights
  # cancel): no α with Σα = 1 balances them, and equal weights keep Σα = 1 (with one task, α = 1).
  weights = tf.where(total != 0.0, alpha / tf.where(total != 0.0, total, 1.0), 1.0 / num_tasks)
  return weights, _diagnostics(gramian, weights, inverse_norms, has_gradient)


def _diagnostics(gramian, weights, inverse_norms, has_gradient) -> dict[str, tf.Tensor]:
  """The spread and mean of cos(g, g_t) over the tasks with a gradient, g = Σ_t w_t·g_t."""
  products = tf.linalg.matvec(gramian, weights)  # gᵀg_t
  update_norm = tf.sqrt(tf.maximum(tf.tensordot(weights, products, 1), 0.0))
  cosines = tf.math.divide_no_nan(products * inverse_norms, update_norm)
  present = has_gradient > 0
  highest = tf.reduce_max(tf.where(present, cosines, -2.0))
  lowest = tf.reduce_min(tf.where(present, cosines, 2.0))
  count = tf.reduce_sum(has_gradient)
  return {
    "imtl_residual": tf.where(count > 0, highest - lowest, 0.0),
    "imtl_cosine": tf.math.divide_no_nan(tf.reduce_sum(cosines * has_gradient), count),
  }


@BALANCERS.register("imtl_g", params=PARAMS)
class IMTLG(GramianBalancer):
  """Liu et al. 2021: the update has equal projections onto every unit task gradient, Σα = 1."""

  relative_only = True  # with one task α = 1: it trains as `fixed` does
  diagnostic_names = ("imtl_residual", "imtl_cosine")

  def weigh(self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor, seed: tf.Tensor) -> Weighting:
    del losses, step, seed  # the gradient balance reads the gradients only
    weights, diagnostics = imtl_g_weights(gramian)
    return Weighting(weights, diagnostics)

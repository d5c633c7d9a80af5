"""Aligned-MTL: Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component
Alignment for Multi-Task Learning", CVPR 2023, Algorithm 1.

Let J be the task gradients stacked as rows (the paper's gradient matrix is Jᵀ,
one column per task) and G = J·Jᵀ = V·Λ·Vᵀ its eigendecomposition. Keeping the R
non-zero eigenvalues λ_1 ≥ … ≥ λ_R, the paper's balance transformation is

  B = σ_min · V_R · Λ_R^(−1/2) · V_Rᵀ,    σ_min = √λ_R,

the aligned gradients are the rows of J_aligned = B·J (B is symmetric: the paper's
Jᵀ·B, transposed), and the update is their sum weighted by the task preferences
p (equal, p = 1):

  update = Σ_t p_t·(B·J)_t = (B·p)ᵀ·J,   so the task weights are  w = B·p = σ_min·V_R·Λ_R^(−1/2)·V_Rᵀ·1.

Why "aligned": J_aligned·J_alignedᵀ = B·G·B = σ_min²·V_R·V_Rᵀ, which is σ_min²·I
when the gradients are independent: the aligned gradients are orthogonal with
equal norms σ_min (condition number 1). With J = U·S·Wᵀ (thin SVD), B·J =
σ_min·U_R·W_Rᵀ: the matrix with orthonormal rows nearest to J (orthogonal
Procrustes), scaled to J's smallest singular value (the paper's scale).
The authors' `amtlub` (Aligned-MTL-UB) aligns the gradients with respect to
the shared representation instead: --gradient_scope=representation.

Scale and rank, as in the authors' code (SamsungLabs/MTL, code/optim/aligned:
`scale_mode='min'`, `grads.sum(-1)`) and LibMTL's `Aligned_MTL` (`B.sum(0)`):
the aligned gradients are summed, not averaged (TorchJD's `AlignedMTL`
defaults to the mean, p = 1/T: a factor T, which Adam's update ignores), and an
eigenvalue counts as zero unless λ > λ_max·T·ε₃₂ (ε₃₂ = float32's machine
epsilon, the authors' tolerance: they compute in float32). A dropped eigenvalue
(a zero gradient, a duplicated task, dependent gradients) leaves its direction
out of B: a zero gradient gets weight 0, two identical gradients weight 1 each.
Every gradient zero (nothing kept): B = I, w = p, as TorchJD does (the authors'
code fails there); the update is zero anyway.

B is computed by spectral.psd_function, which stays accurate under XLA (where
tf.linalg.eigh alone moved the weights by up to 1e-4 at condition 1e5).

Diagnostics: `aligned_sigma_min` (σ_min, the aligned gradients' common norm; 0
when every gradient is zero) and `aligned_dropped` (how many eigenvalues were
dropped as zero: T − R). The condition number λ_1/λ_T is the engine's
`gramian/condition`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtl_research.balancers import spectral
from mtl_research.balancers.gramian import SCOPE_PARAM, GramianBalancer, Weighting
from mtl_research.balancers.registry import BALANCERS

PARAMS = (SCOPE_PARAM,)

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # the authors' rank tolerance (torch.finfo() of float32)


def alignment_matrix(gramian: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """The balance transformation B [T, T], σ_min and the number of dropped eigenvalues, from G (float64)."""
  gramian = tf.convert_to_tensor(gramian, tf.float64)
  num_tasks = gramian.shape[0]
  inverse_sqrt, eigenvalues, kept = spectral.psd_function(
    gramian,
    FLOAT32_EPS,
    lambda x: 1.0 / tf.sqrt(x),
    # (a^(−1/2) − b^(−1/2))/(a − b) without cancellation; −½·a^(−3/2) where a = b.
    lambda a, b: -1.0 / (tf.sqrt(a) * tf.sqrt(b) * (tf.sqrt(a) + tf.sqrt(b))),
  )
  any_kept = tf.reduce_any(kept)
  sigma_min = tf.sqrt(tf.reduce_min(tf.where(kept, eigenvalues, np.inf)))
  identity = tf.eye(num_tasks, dtype=tf.float64)
  # One task: B = σ·σ⁻¹ = 1, exactly (rounding could leave 1 − 1e-16), so that it trains as `fixed` does.
  balance = identity if num_tasks == 1 else tf.where(any_kept, sigma_min * inverse_sqrt, identity)
  dropped = num_tasks - tf.reduce_sum(tf.cast(kept, tf.float64))
  return balance, tf.where(any_kept, sigma_min, 0.0), dropped


def aligned_mtl_weights(
  gramian: tf.Tensor, preferences: tf.Tensor | None = None
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """Aligned-MTL's weights w = B·p [T] (p: task preferences, default 1) and its diagnostics."""
  balance, sigma_min, dropped = alignment_matrix(gramian)
  if preferences is None:
    preferences = tf.ones([balance.shape[0]], tf.float64)
  weights = tf.linalg.matvec(balance, tf.cast(preferences, tf.float64))
  return weights, {"aligned_sigma_min": sigma_min, "aligned_dropped": dropped}


@BALANCERS.register("aligned_mtl", params=PARAMS)
class AlignedMTL(GramianBalancer):
  """Senushkin et al. 2023: the sum of the task gradients made orthogonal with equal norms σ_min."""

  relative_only = True  # with one task B = 1, so w = 1: it trains as `fixed` does
  diagnostic_names = ("aligned_sigma_min", "aligned_dropped")

  def weigh(self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor, seed: tf.Tensor) -> Weighting:
    del losses, step, seed  # the alignment reads the gradients only
    weights, diagnostics = aligned_mtl_weights(gramian)
    return Weighting(weights, diagnostics)

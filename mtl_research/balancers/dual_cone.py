"""Projection onto the dual cone of the task gradients, computed on weights from the Gramian alone.

The dual cone of the rows g_1..g_T of J is C = {x : J x ≥ 0}: the directions
that conflict with no task. Quinton & Rey, "Jacobian Descent for
Multi-Objective Optimization" (arXiv:2406.16232), Eq. 3 define the projection
π_J(y) = argmin_{x ∈ C} ‖x − y‖², and their Proposition 1 computes it from
G = J·Jᵀ alone: for any u ∈ R^T,

  π_J(Jᵀu) = Jᵀv,   v ∈ argmin_{v ≥ u} vᵀ G v.                     (QP)

The QP's KKT conditions are exactly those of the projection: with μ = G v
(so μ_t = ⟨π_J(Jᵀu), g_t⟩), v ≥ u, μ ≥ 0 and μ_t (v_t − u_t) = 0. UPGrad
(upgrad.py) solves it for u = e_1..e_T, DualProj (dualproj.py) for u = 1/T.

Solver. Writing v = u + λ, the QP is a non-negative least-squares problem in
λ (min ½λᵀAλ + λᵀA u, λ ≥ 0), solved by Lawson & Hanson's active-set method
("Solving Least Squares Problems", 1974, ch. 23) in its Gramian form: λ = 0 is
feasible; each iteration solves the equality-constrained problem on the
current free set P by one linear solve (|P| ≤ T), then either frees the
task with the most negative multiplier μ_t (the most conflicting one) or, if
the solve left the feasible region, steps back to its boundary and drops the
task that hit its bound. In exact arithmetic it terminates in finitely many
steps with the exact solution, and never frees a task whose gradient lies in
the span of the free ones, so its linear systems stay non-singular even when
G is singular (identical or zero gradients). v ≥ u holds at every iteration,
so even an iteration cap returns a feasible point (the residual says how far
from optimal). A problem without conflict (μ = G u ≥ 0) costs no iteration.
The T problems of UPGrad run as one batch, each iteration one batched solve
(`solve_positive_definite`, unrolled elimination: under XLA a T = 10 UPGrad
with 9 iterations takes ~60 µs, T ≤ 3 ~1 µs).

Numerics (`--dual_cone_reg_eps`, `--dual_cone_norm_eps`): the solver works
on A = G / tr(G) + reg_eps·I (the solution v does not depend on G's scale, so
the normalization only makes reg_eps and the tolerance relative); if
tr(G) ≤ norm_eps, A = reg_eps·I and v = u (with u ≥ 0: every gradient is zero,
or treated as zero). Defaults: reg_eps = 0 and norm_eps = 0, the paper's exact
projection, scale-invariant, as Proposition 1 states it. TorchJD (the authors'
library; UPGrad and DualProj since v0.1.0) uses reg_eps = 1e-4 and
norm_eps = 1e-4 (normalizing by the trace since v0.6.0, by σ_max² before):
its regularization moves the weights by ~1e-4 relative, and much more for a
task whose ‖g_t‖² is below ~1e-4 of Σ‖g‖² (a gradient 100× smaller than
another's); its norm_eps is an absolute threshold, so once Σ_t ‖g_t‖² < 1e-4
(late in training, or small losses) it returns u, i.e. the plain mean
gradient, conflicts included. Both values are behind the flags to reproduce
TorchJD's numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from mtl_research.params import FLOAT, Param

REG_EPS_PARAM = Param(
  "dual_cone_reg_eps",
  FLOAT,
  0.0,
  "UPGrad/DualProj: added to the diagonal of G/tr(G) before projecting (0: the paper's exact projection; "
  "TorchJD: 1e-4).",
  lower=0.0,
)
NORM_EPS_PARAM = Param(
  "dual_cone_norm_eps",
  FLOAT,
  0.0,
  "UPGrad/DualProj: if Σ_t ‖g_t‖² ≤ this, the gradients count as zero and the weights are the unprojected ones "
  "(0: only when they are all zero; TorchJD: 1e-4).",
  lower=0.0,
)

# A bound task enters when its multiplier μ_t < −TOLERANCE·Σ_k |A_tk|·|v_k| (relative to μ_t's rounding scale).
DEFAULT_TOLERANCE = 1e-12
# Relative amount added to the diagonal of the free block of each linear system (~450 ulps): keeps an exactly
# singular block (identical gradients) solvable; relative, so that a task with a tiny gradient is perturbed no
# more than a large one.
JITTER = 1e-13


class Projection(NamedTuple):
  """Solutions of a batch of problems (QP): weights v [B, T], and per problem the number of linear solves
  [B] (int32) and the KKT residual [B] (`kkt_residual`)."""

  weights: tf.Tensor
  iterations: tf.Tensor
  residual: tf.Tensor


def normalized_gramian(gramian: tf.Tensor, reg_eps: float, norm_eps: float) -> tf.Tensor:
  """A = G/tr(G) + reg_eps·I, or reg_eps·I when tr(G) ≤ norm_eps (module docstring)."""
  trace = tf.linalg.trace(gramian)
  zero = trace <= norm_eps
  scaled = tf.where(zero, tf.zeros_like(gramian), gramian / tf.where(zero, tf.ones_like(trace), trace))
  return scaled + reg_eps * tf.eye(gramian.shape[0], dtype=gramian.dtype)


def kkt_residual(matrix: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """[B] how far each v is from the KKT conditions of min_{v ≥ u} vᵀAv, with μ = A v; 0 at the solution.

  The max over tasks of u_t − v_t (primal feasibility), −μ_t (dual feasibility:
  a conflict with task t, in units of A = G/tr(G)) and, where v_t > u_t, |μ_t|
  (stationarity in the free tasks).
  """
  multipliers = tf.matmul(weights, matrix)  # A symmetric: row b is (A v_b)ᵀ
  slack = weights - targets
  stationarity = tf.where(slack > 0.0, tf.abs(multipliers), tf.zeros_like(multipliers))
  violations = tf.maximum(tf.maximum(-slack, -multipliers), stationarity)
  return tf.maximum(tf.reduce_max(violations, axis=-1), 0.0) + 0.0  # + 0.0: no −0.0 in the logs


def project_weights(
  matrix: tf.Tensor,
  targets: tf.Tensor,
  tolerance: float = DEFAULT_TOLERANCE,
  max_iterations: int | None = None,
) -> Projection:
  """Solves min_{v ≥ u} vᵀ A v for each row u of `targets` [B, T], A [T, T] (float64, symmetric PSD).

  `matrix` is normally `normalized_gramian(G, ...)`. Lawson–Hanson active set
  (module docstring), all B problems in one loop of at most `max_iterations`
  batched solves (default 3·T + 10; T and B static). A bound task t enters the
  free set when μ_t < −`tolerance`·(|A|·|v|)_t. A task that entered and could
  not move off its bound (numerically zero multiplier, or a gradient in the
  span of the free ones: the systems are then nearly singular) is not tried
  again, so the iterations cannot cycle. A solve that fails (NaN) stops that
  problem at its last feasible point. A non-finite `matrix` gives NaN weights.
  """
  num_tasks = matrix.shape[-1]
  if num_tasks is None or targets.shape[-1] != num_tasks or targets.shape[0] is None:
    raise ValueError(f"project_weights needs static shapes [T, T] and [B, T]; got {matrix.shape}, {targets.shape}")
  max_iterations = 3 * num_tasks + 10 if max_iterations is None else max_iterations
  dtype = matrix.dtype
  magnitude = tf.abs(matrix)
  offset = tf.matmul(targets, matrix)  # A u per problem: the multipliers at λ = 0
  jitter = JITTER * tf.linalg.diag_part(matrix)

  def entering(lam, free, barred):
    """Per problem: one-hot of the bound task with the most negative multiplier at v = u + λ, and whether any."""
    weights = targets + lam
    multipliers = tf.matmul(weights, matrix)
    threshold = -tolerance * tf.matmul(tf.abs(weights), magnitude)
    candidates = tf.logical_and(tf.logical_not(tf.logical_or(free, barred)), multipliers < threshold)
    most_negative = tf.argmin(tf.where(candidates, multipliers, tf.zeros_like(multipliers)), axis=-1)
    pick = tf.logical_and(tf.cast(tf.one_hot(most_negative, num_tasks), tf.bool), candidates)
    return pick, tf.reduce_any(candidates, axis=-1)

  def solve_free(free):
    """λ minimizing the objective with the bound tasks at λ = 0: A_PP λ_P = −(A u)_P, one batched solve."""
    mask = tf.cast(free, dtype)
    system = matrix * mask[:, :, None] * mask[:, None, :] + tf.linalg.diag(1.0 - mask + jitter * mask)
    return solve_positive_definite(system, -offset * mask)

  def body(iteration, lam, free, barred, done, counts):
    z = solve_free(free)
    finite = tf.reduce_all(tf.math.is_finite(z), axis=-1)
    interior = tf.reduce_all(tf.logical_or(z > 0.0, tf.logical_not(free)), axis=-1)
    # Interior: z is optimal on the free set; free the most conflicting bound task, or stop.
    enter, any_enter = entering(z, free, barred)
    # Otherwise: move from λ towards z until the first free λ_t reaches 0, and bind it (and any other at 0).
    blocking = tf.logical_and(free, z <= 0.0)
    ratio = tf.where(blocking, tf.math.divide_no_nan(lam, lam - z), tf.fill(tf.shape(lam), tf.constant(2.0, dtype)))
    moved = lam + tf.reduce_min(ratio, axis=-1, keepdims=True) * (z - lam)
    first = tf.cast(tf.one_hot(tf.argmin(ratio, axis=-1), num_tasks), tf.bool)
    leave = tf.logical_and(free, tf.logical_or(first, moved <= 0.0))
    moved = tf.where(leave, tf.zeros_like(moved), moved)
    # A task leaving with λ_t = 0 entered and could not move: in exact arithmetic impossible, so it is
    # a numerically zero multiplier; barred, it cannot enter again and cycle.
    stuck = tf.logical_and(leave, tf.equal(lam, 0.0))

    inside = interior[:, None]
    valid = tf.logical_and(tf.logical_not(done), finite)[:, None]  # a non-finite solve keeps the last λ and stops
    lam = tf.where(valid, tf.where(inside, z, moved), lam)
    new_free = tf.where(inside, tf.logical_or(free, enter), tf.logical_and(free, tf.logical_not(leave)))
    free = tf.where(valid, new_free, free)
    barred = tf.where(tf.logical_and(valid, tf.logical_not(inside)), tf.logical_or(barred, stuck), barred)
    counts += tf.cast(tf.logical_not(done), tf.int32)
    finished = tf.logical_or(tf.logical_and(interior, tf.logical_not(any_enter)), tf.logical_not(finite))
    return iteration + 1, lam, free, barred, tf.logical_or(done, finished), counts

  def cond(iteration, lam, free, barred, done, counts):
    del lam, free, barred, counts
    return tf.logical_and(iteration < max_iterations, tf.logical_not(tf.reduce_all(done)))

  batch = targets.shape[0]
  lam = tf.zeros([batch, num_tasks], dtype)
  nothing = tf.zeros([batch, num_tasks], tf.bool)
  free, any_enter = entering(lam, nothing, nothing)  # λ = 0 is optimal on the empty free set: no solve needed
  state = (tf.constant(0), lam, free, nothing, tf.logical_not(any_enter), tf.zeros([batch], tf.int32))
  _, lam, _, _, _, counts = tf.while_loop(cond, body, state, maximum_iterations=max_iterations)
  finite_input = tf.logical_and(tf.reduce_all(tf.math.is_finite(matrix)), tf.reduce_all(tf.math.is_finite(targets)))
  weights = tf.where(finite_input, targets + lam, tf.fill(tf.shape(lam), tf.constant(float("nan"), dtype)))
  return Projection(weights, counts, kkt_residual(matrix, targets, weights))


def solve_positive_definite(system: tf.Tensor, rhs: tf.Tensor) -> tf.Tensor:
  """x with system·x = rhs, batched ([B, T, T], [B, T]): Gauss–Jordan elimination without pivoting, unrolled.

  For the small symmetric positive definite systems here, pivoting is not needed
  (as in Cholesky), and the unrolled T steps compile under XLA into a few fused
  loops, ~10× faster than XLA's general LU at T = 10. Unlike TensorFlow's CPU
  MatrixSolve it never raises: a non-positive pivot (a singular or, from rounding,
  indefinite system) gives NaN, which the caller tests for.
  """
  num = system.shape[-1]
  eye = tf.eye(num, dtype=system.dtype)
  for k in range(num):
    pivot = system[:, k, k]
    pivot = tf.where(pivot > 0.0, pivot, tf.constant(float("nan"), system.dtype))
    row = system[:, k, :] / pivot[:, None]
    value = rhs[:, k] / pivot
    # Row i ≠ k loses system[i, k]·row; row k becomes row itself (factor pivot − 1 on it).
    factor = system[:, :, k] - eye[k]
    system = system - factor[:, :, None] * row[:, None, :]
    rhs = rhs - factor * value[:, None]
  return rhs

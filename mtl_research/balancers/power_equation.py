"""Newton's method for the power equation G·w = w^(−p) on the positive orthant (Nash-MTL, FairGrad).

Given the Gramian G = J·Jᵀ [T, T] of the task gradients (rows of J) and a
power p > 0, find weights w > 0 with

  (G w)_t = w_t^(−p)   for every task t,                                  (PE)

so that the update d = Jᵀw = Σ_t w_t·g_t improves every task at first order:
⟨g_t, d⟩ = (G w)_t = w_t^(−p) > 0. Nash-MTL (nash_mtl.py) is p = 1
(⟨g_t, d⟩ = 1/w_t); FairGrad (fairgrad.py) is p = 1/α.

Variational form. (PE) says ∇F(w) = 0 for

  F(w) = ½ wᵀG w − Σ_t φ_p(w_t),   φ_p' (w) = w^(−p):
  φ_1(w) = log w,   φ_p(w) = (w^(1−p) − 1)/(1 − p) otherwise

(the −1 makes φ_p continuous in p at 1, and keeps F's rounding small near
p = 1). F is strictly convex on w > 0 (its Hessian G + diag(p·w^(−p−1)) is
positive definite), so (PE) has at most one solution, and it has one exactly
when some direction improves every task: by Gordan's theorem, when no v ≥ 0,
v ≠ 0 has Jᵀv = 0. It has none when a gradient is zero, or when the point is
Pareto-stationary (0 is a convex combination of the gradients: two exactly
opposed tasks); F then decreases without bound along such a v.

Defined behaviour on degenerate input:
  * A zero gradient (G_tt ≤ ZERO_GRAMIAN, i.e. ‖g_t‖ ≤ 1e-30) gets weight 0
    and is left out of the equation: its term w_t·g_t of d is zero whatever
    w_t is, and no direction can improve it.
  * The equation is solved with a ridge ρ (`--power_equation_ridge`)
    relative to each task's own scale: G + ρ·diag(G) in place of G (ρ·I on
    the correlation matrix below). This keeps a solution at a
    Pareto-stationary point, with d ≈ 0 there (two exactly opposed tasks,
    p = 1: w_t = ρ^(−1/2)/‖g_t‖ for both, d = 0). Elsewhere it changes the
    equation's relative residual by ρ·u_t^(1+p)/b_t (u below): ~ρ for
    well-spread gradients, more only where the weights are large, i.e.
    nearly Pareto-stationary gradients (3e-4 for two tasks at cosine
    −1 + 5e-7, where the exact weights are ~1e3× those of orthogonal ones).
    Default 1e-10: below the tests' tolerances, and large enough to bound
    the weights at a Pareto-stationary point (~1e5/‖g_t‖ for p = 1): the
    step casts them to float32 to combine the gradients, so the opposed
    terms of d cancel only to ~1e5·6e-8 ≈ 6e-3 of a unit gradient.
    ρ = 0 is the papers' exact equation; at a Pareto-stationary point its
    iterates then grow (by ~2× per step for p = 1) until rounding stops the
    line search, ~20 steps, with d shrinking towards 0 and
    `solver_residual` ~1 saying that the equation was not solved.
  * One task (T = 1): w = ‖g‖^(−2/(1+p)) (times (1+ρ)^(−1/(1+p))).
  * Identical gradients (singular G) are not degenerate: (PE) is solvable
    (two identical tasks share w_t = 2^(−1/(1+p))·‖g‖^(−2/(1+p))).

Coordinates. With n_t = ‖g_t‖ = √G_tt and C = G/(n nᵀ) (the correlation
matrix: unit diagonal, so a task 100× larger than the others changes
nothing in it), w_t = κ·u_t/n_t turns (PE) into

  ((C + ρI) u)_t = b_t·u_t^(−p),   b_t = (n_t/n_max)^(p−1),   κ = n_max^((p−1)/(1+p)),

whose solution u is O(1) whatever the gradients' scale (for p = 1, b = 1
and κ = 1: Nash-MTL's u depends on the directions of the gradients only).
Hence the scale equivariance G → s²G ⇒ w → s^(−2/(1+p))·w.

Solver: Newton's method on F(u) = ½uᵀ(C + ρI)u − Σ_t b_t·φ_p(u_t) (the same
F in these coordinates). Each step solves the Hessian
C + ρI + diag(p·b·u^(−p−1)), Jacobi-scaled, by an unrolled Cholesky
factorization (T is small; XLA's general solvers cost several times more);
it is damped to keep u positive (at most 99.5% of the way to the boundary)
and by a backtracking (Armijo) line search whose LINE_SEARCH_STEPS candidate
lengths are evaluated at once (static shapes, no inner loop: it compiles
under XLA). Start: the solution for orthogonal gradients,
u_t = (b_t/(1+ρ))^(1/(1+p)), rescaled along its ray to minimize F (exact for
T = 1, for two tasks of Nash-MTL, and for identical or opposed pairs). Stop:
when every equation holds to `tolerance` relative to the size of its terms
((|C + ρI| u)_t + b_t·u_t^(−p): the accuracy float64 allows, even where
nearly opposed gradients cancel), when a step moves no u_t by more than
`step_tolerance` relative (the next error would be about its square), when
no step length decreases F (rounding), or at `max_iterations`. Typically
0–6 iterations for Nash-MTL, 2–10 for FairGrad with α in [0.5, 5], ~20 at a
Pareto-stationary point (u ~ ρ^(−1/2) for p = 1, reached by ~doubling u per
step); about 2 µs per iteration at T = 5 under XLA on one CPU core.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

from mtl_research.params import FLOAT, Param

# A task whose squared gradient norm is at most this (‖g_t‖ ≤ 1e-30) has a zero gradient: weight 0.
# Absolute, not relative to the other tasks: a small gradient is measured on its own, and its
# weight (~1/‖g_t‖) stays far inside float32, where the step combines the gradients.
ZERO_GRAMIAN = 1e-60
DEFAULT_RIDGE = 1e-10
DEFAULT_TOLERANCE = 1e-13  # |(A u)_t − b_t·u_t^(−p)| relative to (|A| u)_t + b_t·u_t^(−p): ~500 float64 roundings
DEFAULT_STEP_TOLERANCE = 1e-10
DEFAULT_MAX_ITERATIONS = 60
LINE_SEARCH_STEPS = 24  # candidate step lengths t_max·2^(−k), k < 24
ARMIJO = 1e-4  # sufficient decrease: F(u + tΔ) ≤ F(u) + ARMIJO·t·∇F·Δ
BOUNDARY = 0.995  # at most this fraction of the way to u_t = 0 in one step
# Increases of F below this fraction of the size of its terms count as none (near the solution the
# decrease is below F's rounding, and the full Newton step must still be taken).
ROUNDING = 1e-12
SHIFT = 1e-13  # added to the unit diagonal of the Jacobi-scaled Hessian before its solve

RIDGE_PARAM = Param(
  "power_equation_ridge",
  FLOAT,
  DEFAULT_RIDGE,
  "Nash-MTL/FairGrad: ridge ρ added to the gradients' correlation matrix (G + ρ·diag(G)) so that the weights "
  "exist at a Pareto-stationary point (0: the papers' exact equation, which has no solution there).",
  lower=0.0,
)


class Solution(NamedTuple):
  """Weights w [T] (float64; 0 for a zero gradient), Newton iterations (int32) and `residual` (float64)."""

  weights: tf.Tensor
  iterations: tf.Tensor
  residual: tf.Tensor


def active_tasks(gramian: tf.Tensor) -> tf.Tensor:
  """[T] bool: the tasks whose gradient is not zero (G_tt > ZERO_GRAMIAN)."""
  return tf.linalg.diag_part(gramian) > ZERO_GRAMIAN


def residual(gramian: tf.Tensor, weights: tf.Tensor, power: float) -> tf.Tensor:
  """max_t |(G w)_t·w_t^p − 1| over the tasks with a nonzero gradient (0 if none): (PE)'s relative error.

  Scale-free: the same for (s²G, s^(−2/(1+p))·w). Measured on G itself, without the ridge.
  """
  active = active_tasks(gramian)
  safe = tf.where(active, weights, tf.ones_like(weights))
  errors = tf.abs(tf.linalg.matvec(gramian, weights) * tf.pow(safe, power) - 1.0)
  return tf.reduce_max(tf.where(active, errors, tf.zeros_like(errors)))


def clip_norm(weights: tf.Tensor, gramian: tf.Tensor, max_norm: float) -> tuple[tf.Tensor, tf.Tensor]:
  """(weights scaled so that ‖d‖ = ‖Σ_t w_t g_t‖ = √(wᵀGw) ≤ max_norm, ‖d‖ before scaling); no clip if max_norm ≤ 0.

  The `max_norm` option of the Nash-MTL and FairGrad authors' code (torch's
  clip_grad_norm_ on the shared parameters' update), applied to the weights.
  """
  norm = tf.sqrt(tf.nn.relu(tf.tensordot(weights, tf.linalg.matvec(gramian, weights), 1)))
  if max_norm <= 0:
    return weights, norm
  scale = tf.where(norm > max_norm, max_norm / tf.where(norm > 0, norm, tf.ones_like(norm)), tf.ones_like(norm))
  return weights * scale, norm


def _phi(u: tf.Tensor, power: float) -> tf.Tensor:
  """φ_p(u) = log u (p = 1) or (u^(1−p) − 1)/(1 − p), elementwise."""
  if power == 1.0:
    return tf.math.log(u)
  return tf.math.expm1((1.0 - power) * tf.math.log(u)) / (1.0 - power)


def _spd_solve(matrix: tf.Tensor, rhs: tf.Tensor) -> tf.Tensor:
  """x with matrix·x = rhs, for a symmetric positive definite [T, T] matrix (static T ≤ ~10) and rhs [T].

  Cholesky factorization and the two triangular solves, unrolled over the T
  columns: T is small, and XLA's general solvers cost several times more per
  Newton step. Never raises: a matrix that is not positive definite (rounding
  on garbage input) gives NaN, which the caller treats as "no step".
  """
  num = matrix.shape[0]
  rows = tf.range(num)
  columns: list[tf.Tensor] = []  # L[:, j], zero above the diagonal
  for j in range(num):
    column = matrix[:, j]
    for previous in columns:
      column -= previous * previous[j]
    column = tf.where(rows >= j, column / tf.sqrt(column[j]), tf.zeros_like(column))
    columns.append(column)
  y = rhs  # L y = rhs, column by column
  solved: list[tf.Tensor] = []
  for j in range(num):
    y_j = y[j] / columns[j][j]
    y = tf.where(rows > j, y - columns[j] * y_j, y)
    solved.append(y_j)
  x = tf.stack(solved)  # Lᵀ x = y, from the last unknown up: x_j = (y_j − Σ_(k>j) L_kj x_k) / L_jj
  for j in reversed(range(num)):
    x_j = (x[j] - tf.reduce_sum(tf.where(rows > j, columns[j] * x, tf.zeros_like(x)))) / columns[j][j]
    x = tf.tensor_scatter_nd_update(x, [[j]], [x_j])
  return x


def solve(
  gramian: tf.Tensor,
  power: float,
  ridge: float = DEFAULT_RIDGE,
  tolerance: float = DEFAULT_TOLERANCE,
  step_tolerance: float = DEFAULT_STEP_TOLERANCE,
  max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> Solution:
  """Solves (G + ρ·diag(G)) w = w^(−p), w > 0, for the float64 Gramian [T, T] (static T); module docstring."""
  num_tasks = gramian.shape[0]
  if num_tasks is None or gramian.shape != (num_tasks, num_tasks):
    raise ValueError(f"power_equation.solve needs a static square Gramian; got {gramian.shape}")
  if not power > 0:
    raise ValueError(f"power_equation.solve needs a power p > 0; got {power}")
  dtype = tf.float64
  gramian = tf.cast(gramian, dtype)
  # A non-finite Gramian gives NaN weights (the step's guard then sees a non-finite update), not an error.
  finite = tf.reduce_all(tf.math.is_finite(gramian))
  gramian = tf.where(finite, gramian, tf.eye(num_tasks, dtype=dtype))
  gramian = 0.5 * (gramian + tf.transpose(gramian))  # exactly symmetric: the Hessian's solve assumes nothing else
  active = active_tasks(gramian)
  mask = tf.cast(active, dtype)
  norms = tf.where(active, tf.sqrt(tf.maximum(tf.linalg.diag_part(gramian), ZERO_GRAMIAN)), tf.ones([num_tasks], dtype))
  # Zero gradients become decoupled unit rows (their u is exact from the start; their weight is 0).
  pair = mask[:, None] * mask[None, :]
  correlation = pair * gramian / (norms[:, None] * norms[None, :]) + tf.linalg.diag(1.0 - mask)
  matrix = correlation + ridge * tf.eye(num_tasks, dtype=dtype)
  largest = tf.reduce_max(tf.where(active, norms, tf.zeros_like(norms)))
  largest = tf.where(largest > 0, largest, tf.ones_like(largest))
  coefficients = tf.where(active, tf.pow(norms / largest, power - 1.0), tf.ones_like(norms))
  exponent = 1.0 / (1.0 + power)

  def objective(points):
    """F at each row of points [K, T], and the size of the terms it sums (what its rounding scales with)."""
    quadratic = 0.5 * tf.reduce_sum(tf.matmul(points, matrix) * points, axis=-1)
    barrier = coefficients * _phi(points, power)
    size = 0.5 * tf.reduce_sum(tf.matmul(tf.abs(points), tf.abs(matrix)) * tf.abs(points), axis=-1)
    return quadratic - tf.reduce_sum(barrier, axis=-1), size + tf.reduce_sum(tf.abs(barrier), axis=-1)

  # Start: the exact solution for orthogonal gradients, then the best multiple of it (active tasks only).
  start = tf.pow(coefficients / (1.0 + ridge), exponent)
  curvature = tf.tensordot(start * mask, tf.linalg.matvec(matrix, start * mask), 1)
  pull = tf.reduce_sum(mask * coefficients * tf.pow(start, 1.0 - power))
  one = tf.constant(1.0, dtype)
  ray = tf.where(curvature > 0, tf.pow(pull / tf.where(curvature > 0, curvature, one), exponent), one)
  u = tf.where(active, ray * start, start)

  lengths = tf.pow(tf.constant(0.5, dtype), tf.range(LINE_SEARCH_STEPS, dtype=dtype))

  def body(iteration, u, done, count):
    del done  # the loop runs only while not done
    pull = coefficients * tf.pow(u, -power)
    gradient = tf.linalg.matvec(matrix, u) - pull
    # Solved to rounding: each equation holds to `tolerance` relative to the size of its terms.
    solved = tf.reduce_max(tf.abs(gradient) / (tf.linalg.matvec(tf.abs(matrix), u) + pull)) <= tolerance
    hessian = matrix + tf.linalg.diag(power * pull / u)
    # Jacobi-scaled (unit diagonal) and shifted by SHIFT, so that rounding can never make the solve
    # singular (it would raise, eagerly) when u is large and C singular (a Pareto-stationary problem).
    jacobi = tf.math.rsqrt(tf.linalg.diag_part(hessian))
    scaled = hessian * jacobi[:, None] * jacobi[None, :] + SHIFT * tf.eye(num_tasks, dtype=dtype)
    step = -jacobi * _spd_solve(scaled, jacobi * gradient)
    finite = tf.reduce_all(tf.math.is_finite(step))
    step = tf.where(finite, step, tf.zeros_like(step))
    # Positivity: at most BOUNDARY of the way to the nearest u_t = 0.
    to_boundary = tf.where(step < 0, u / tf.where(step < 0, -step, tf.ones_like(step)), 2.0 * tf.ones_like(step))
    longest = tf.minimum(one, BOUNDARY * tf.reduce_min(to_boundary))
    candidates = u[None, :] + (longest * lengths)[:, None] * step[None, :]
    value, size = objective(u[None, :])
    values, _ = objective(candidates)
    slope = tf.tensordot(gradient, step, 1)  # < 0: the Hessian is positive definite
    # Sufficient decrease, up to F's rounding (near the solution the decrease is below it).
    accept = values <= value + ARMIJO * longest * lengths * slope + ROUNDING * size[0]
    accept = tf.logical_and(accept, tf.math.is_finite(values))
    found = tf.logical_and(tf.reduce_any(accept), finite)
    length = longest * tf.gather(lengths, tf.argmax(tf.cast(accept, tf.int32)))
    moving = tf.logical_and(found, tf.logical_not(solved))
    u = tf.where(moving, u + length * step, u)
    count += tf.cast(moving, tf.int32)
    # Done: solved, or this step was tiny (Newton's next error is about its square), or no step decreases F.
    tiny = tf.reduce_max(tf.abs(step) / u) <= step_tolerance
    return iteration + 1, u, tf.logical_not(moving) | tiny, count

  def cond(iteration, u, done, count):
    del u, count
    return tf.logical_and(iteration < max_iterations, tf.logical_not(done))

  state = (tf.constant(0), u, tf.constant(False), tf.constant(0))
  _, u, _, count = tf.while_loop(cond, body, state, maximum_iterations=max_iterations)
  scale = tf.pow(largest, (power - 1.0) * exponent)  # κ
  weights = tf.where(active, scale * u / norms, tf.zeros_like(u))
  nan = tf.constant(math.nan, dtype)
  weights = tf.where(finite, weights, tf.fill([num_tasks], nan))
  return Solution(weights, count, tf.where(finite, residual(gramian, weights, power), nan))

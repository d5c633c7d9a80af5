"""Quadratic programs over the probability simplex, solved exactly from a Gramian.

The Gramian methods choose weights on the simplex Δ = {w : w ≥ 0, Σ_t w_t = 1}
from G = J·Jᵀ alone (J: the task gradients as rows, never formed here). A
point w of Δ stands for u = Jᵀw, a point of the convex hull C of the
gradients, and ‖u‖² = wᵀGw. Two exact active-set solvers:

  min_norm_point   u* = the point of C nearest the origin, w* = argmin_{w∈Δ} wᵀGw
                   (MGDA's problem): Wolfe's algorithm (P. Wolfe, "Finding the
                   nearest point in a polytope", Math. Programming 11, 1976),
                   written with G in place of the points.
  follow_path      the path w(s) = argmin_{w∈Δ} ½wᵀGw + s·ℓᵀw for s ≥ 0, from
                   s = 0 to the first s at which ‖u(s)‖ = ρ·s. With ℓ = G·v the
                   path is the projection u(s) = Π_C(−s·Jᵀv) of a point moving
                   along a ray; CAGrad's dual problem is solved where the ray
                   meets the norm condition (mtl_research/balancers/cagrad.py).

Each iteration of either solver solves one (T+1)×(T+1) KKT system
[[G_SS, 1], [1ᵀ, 0]] of the current support S (the other rows are the identity,
so the shapes stay static and both compile under XLA) and changes S by one
task: a few iterations for T ≤ 10 (the count is returned, for the diagnostics),
each exact to float64 rounding, instead of the hundreds of Frank-Wolfe steps of
the authors' code that stop at a 1e-5 change. The KKT system is nonsingular as
long as the gradients in S are affinely independent, which both methods keep
(a task whose gradient is a combination of the support's, such as a duplicate,
is never added: it cannot improve the objective).

Callers divide G by its largest diagonal element first (`unit_scale`), so the
tolerances below are relative to the largest squared gradient norm.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

# Wolfe's test for adding a vertex: it must lower ⟨u, g_t⟩ below ‖u‖² by more than this. Float64
# rounding of G·w with |G_ij| ≤ 1 is ~T·1e-16; anything below 1e-13 is not a real improvement.
VERTEX_TOLERANCE = 1e-13
# An affine minimizer's weight counts as positive above this, so a weight at rounding level is dropped
# rather than kept as an interior point of the face.
POSITIVE_WEIGHT = 1e-12
# ‖u‖² below this (‖u‖ < 1e-6 of the largest gradient, under float32's resolution of the gradients the
# Gramian was computed from) is the origin: it decides CAGrad's degenerate case (cagrad.py).
ZERO_NORM_SQ = 1e-12
# A path slope counts as negative below −this × (1 + ‖slope‖₁): rounding grows with the slope, and on a
# support whose affine hull holds every gradient (T > rank) the slack slopes are exactly 0 in exact
# arithmetic; noise must not add such tasks (it made the path cycle in tests with D < T).
SLOPE_TOLERANCE = 1e-12

_INF = float("inf")


@dataclasses.dataclass(frozen=True)
class SimplexPoint:
  """A solver's answer: `weights` [T] on the simplex, its `support` [T] (bool) and the int32 `iterations`."""

  weights: tf.Tensor
  support: tf.Tensor
  iterations: tf.Tensor


@dataclasses.dataclass(frozen=True)
class PathPoint:
  """Where `follow_path` stopped: w(s) = intercept + s·slope on the last support, at `s`.

  `found` is False only if the iteration cap was reached or the path ended
  without meeting the norm condition (then `s` is the last breakpoint).
  """

  intercept: tf.Tensor
  slope: tf.Tensor
  s: tf.Tensor
  iterations: tf.Tensor
  found: tf.Tensor


def num_tasks_of(gramian: tf.Tensor) -> int:
  num_tasks = gramian.shape[0]
  if num_tasks is None or gramian.shape.rank != 2 or gramian.shape[1] != num_tasks:
    raise ValueError(f"the Gramian must have a static square shape [T, T], not {gramian.shape}")
  return int(num_tasks)


def unit_scale(gramian: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(G / max_t G_tt, max_t G_tt): the solvers' tolerances are relative; an all-zero G stays zero."""
  scale = tf.reduce_max(tf.linalg.diag_part(gramian))
  positive = scale > 0
  return tf.where(positive, gramian / tf.where(positive, scale, 1.0), tf.zeros_like(gramian)), scale


def min_norm_gap(gramian: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """wᵀGw − min_t (Gw)_t: the Frank-Wolfe (duality) gap of min_{w∈Δ} wᵀGw, ≥ 0, 0 exactly at the optimum.

  At a feasible w it is a complete KKT residual: (Gw)_t ≥ wᵀGw for every t
  makes wᵀGw = Σ_t w_t (Gw)_t force equality wherever w_t > 0.
  """
  grad = tf.linalg.matvec(gramian, weights)
  return tf.reduce_sum(weights * grad) - tf.reduce_min(grad)


def _support_solve(gramian: tf.Tensor, support: tf.Tensor, rhs: tf.Tensor) -> tf.Tensor:
  """M⁻¹·rhs for M = (G + 11ᵀ)_SS, with the identity in the rows and columns of tasks outside S.

  The equality-constrained problems on a support reduce to M: if M·p = 1_S
  then G_SS·p = (1 − Σp)·1, so p/Σp is the affine minimizer of wᵀGw. M is
  positive definite exactly when the gradients in S are affinely independent
  (vᵀMv = ‖Jᵀv‖² + (Σv)²), which the solvers maintain; so elimination needs no
  pivoting. It is unrolled over the static T (Gauss-Jordan): a handful of
  fused vector operations, where XLA's general solver runs a loop per column
  (4.5 µs for T = 3, 13 µs for T = 10, per solve on a CPU core).
  """
  num_tasks = num_tasks_of(gramian)
  m = tf.cast(support, gramian.dtype)
  matrix = (gramian + 1.0) * m[:, None] * m[None, :] + tf.linalg.diag(1.0 - m)
  augmented = tf.concat([matrix, rhs], axis=1)
  for k in range(num_tasks):
    pivot_row = augmented[k] / augmented[k, k]
    unit = tf.one_hot(k, num_tasks, dtype=gramian.dtype)
    # Clears column k from every other row and replaces row k by the normalized pivot row.
    augmented = augmented - (augmented[:, k] - unit)[:, None] * pivot_row[None, :]
  return augmented[:, num_tasks:]


def min_norm_point(gramian: tf.Tensor, max_iterations: int | None = None) -> SimplexPoint:
  """argmin_{w∈Δ} wᵀGw by Wolfe's min-norm-point algorithm (module docstring).

  Starts at the vertex of the smallest gradient; each iteration either moves
  to the affine minimizer of the support and, if a vertex t has
  ⟨g_t, u⟩ < ‖u‖², adds the most improving one (a major cycle), or, if the
  affine minimizer leaves the simplex, steps toward it until a weight reaches
  0 and drops that task (a minor cycle). Finite in exact arithmetic; the cap
  (default 8T + 8) only guards against rounding.
  """
  num_tasks = num_tasks_of(gramian)
  dtype = gramian.dtype
  cap = max_iterations if max_iterations is not None else 8 * num_tasks + 8
  start = tf.argmin(tf.linalg.diag_part(gramian), output_type=tf.int32)
  weights = tf.one_hot(start, num_tasks, dtype=dtype)
  support = tf.cast(weights, tf.bool)
  inf = tf.constant(_INF, dtype)

  def body(iteration, weights, support, done):
    del done
    p = _support_solve(gramian, support, tf.cast(support, dtype)[:, None])[:, 0]
    affine = p / tf.reduce_sum(p)
    interior = tf.reduce_all(tf.logical_or(tf.logical_not(support), affine > POSITIVE_WEIGHT))
    # Major cycle: the affine minimizer is the new point; add the vertex that improves most, if any.
    grad = tf.linalg.matvec(gramian, affine)
    value = tf.reduce_sum(affine * grad)
    candidates = tf.where(support, inf, grad)
    best = tf.argmin(candidates, output_type=tf.int32)
    improves = tf.gather(candidates, best) < value - VERTEX_TOLERANCE
    added = tf.logical_or(
      support, tf.logical_and(tf.one_hot(best, num_tasks, on_value=True, off_value=False), improves)
    )
    # Minor cycle: step toward the affine minimizer until the first weight reaches 0; drop it.
    blocking = tf.logical_and(support, affine <= POSITIVE_WEIGHT)
    ratios = tf.where(blocking, weights / tf.where(blocking, weights - affine, 1.0), inf)
    first = tf.argmin(ratios, output_type=tf.int32)
    step = tf.clip_by_value(tf.gather(ratios, first), 0.0, 1.0)
    moved = weights + step * (affine - weights)
    dropped = tf.logical_and(
      support,
      tf.logical_or(moved <= POSITIVE_WEIGHT * 1e-3, tf.one_hot(first, num_tasks, on_value=True, off_value=False)),
    )
    moved = tf.where(dropped, tf.zeros_like(moved), moved)
    moved = moved / tf.reduce_sum(moved)
    return (
      iteration + 1,
      tf.where(interior, affine, moved),
      tf.where(interior, added, tf.logical_and(support, tf.logical_not(dropped))),
      tf.logical_and(interior, tf.logical_not(improves)),
    )

  iterations, weights, support, _ = tf.while_loop(
    lambda iteration, weights, support, done: tf.logical_not(done),
    body,
    (tf.constant(0), weights, support, tf.constant(False)),
    maximum_iterations=cap,
  )
  weights = tf.maximum(weights, 0.0)
  return SimplexPoint(weights / tf.reduce_sum(weights), support, iterations)


def follow_path(
  gramian: tf.Tensor, linear: tf.Tensor, radius_sq: tf.Tensor, start: SimplexPoint, max_iterations: int | None = None
) -> PathPoint:
  """Follows w(s) = argmin_{w∈Δ} ½wᵀGw + s·ℓᵀw from s = 0 to the first s with ‖u(s)‖² = ρ²·s².

  `start` is the solution at s = 0 (`min_norm_point`); `radius_sq` is ρ².
  The path is piecewise affine in s (a parametric QP): on a support S the
  KKT system gives w(s) = w⁰ + s·w¹ (one system, two right-hand sides) and the
  slacks (Gw(s))_t + s·ℓ_t − λ(s) of the tasks outside S, affine too. The
  next breakpoint is where a weight in S reaches 0 (drop it) or a slack
  reaches 0 (add the task); several at once (a degenerate start, u(0) = 0)
  take zero-length steps, one task each. Between breakpoints,
  q(s) = ‖u(s)‖² − ρ²s² is a quadratic, and the first root is taken in closed
  form. q changes sign once: h(s) = min_{w∈Δ} ℓᵀw + wᵀGw/(2s) + ρ²s/2 is
  convex in s > 0 (wᵀGw/s is a perspective, jointly convex in (w, s)) with
  h'(s) = (ρ² − ‖u(s)‖²/s²)/2, so ‖u(s)‖/s is non-increasing; q(0) = ‖u(0)‖²
  ≥ 0 and, for ρ > 0, q → −∞ since u stays in the hull. At most
  `max_iterations` (default 8T + 8) breakpoints.
  """
  num_tasks = num_tasks_of(gramian)
  dtype = gramian.dtype
  cap = max_iterations if max_iterations is not None else 8 * num_tasks + 8
  inf = tf.constant(_INF, dtype)
  task_one_hot = lambda i: tf.one_hot(i, num_tasks, on_value=True, off_value=False)  # noqa: E731

  def body(iteration, s, support, done, found, intercept, slope):
    del done, found, intercept, slope
    m = tf.cast(support, dtype)
    solution = _support_solve(gramian, support, tf.stack([m, linear * m], axis=1))
    p, q = solution[:, 0], solution[:, 1]
    # On S: G·w(s) + s·ℓ = λ(s)·1 and Σw = 1 give w(s) = (λ + 1)·p − s·q; Σw = 1 fixes λ.
    total_p, total_q = tf.reduce_sum(p), tf.reduce_sum(q)
    w0, w1 = p / total_p, p * (total_q / total_p) - q
    lambda0, lambda1 = 1.0 / total_p - 1.0, total_q / total_p
    current = w0 + s * w1
    g_current = tf.linalg.matvec(gramian, current)
    g_slope = tf.linalg.matvec(gramian, w1)
    slack = g_current + s * linear - (lambda0 + s * lambda1)
    slack_slope = g_slope + linear - lambda1

    # Breakpoints, as distances t ≥ 0 from s.
    tolerance = SLOPE_TOLERANCE * (1.0 + tf.reduce_sum(tf.abs(w1)))
    drops = tf.logical_and(support, w1 < -tolerance)
    adds = tf.logical_and(tf.logical_not(support), slack_slope < -tolerance)
    drop_at = tf.where(drops, tf.maximum(-current / tf.where(drops, w1, -1.0), 0.0), inf)
    add_at = tf.where(adds, tf.maximum(-slack / tf.where(adds, slack_slope, -1.0), 0.0), inf)
    events = tf.minimum(drop_at, add_at)
    nearest = tf.reduce_min(events)
    pivot = tf.argmin(events, output_type=tf.int32)

    # q(s + t) = α t² + 2β t + γ on this support; its first downward root t ≥ 0.
    norm_sq = tf.reduce_sum(current * g_current)
    at_origin = norm_sq <= ZERO_NORM_SQ  # u(s) = 0: then ⟨u, u¹⟩ = 0 as well, not rounding noise
    norm_sq = tf.where(at_origin, tf.zeros_like(norm_sq), norm_sq)
    cross = tf.where(at_origin, tf.zeros_like(norm_sq), tf.reduce_sum(current * g_slope))
    alpha = tf.reduce_sum(w1 * g_slope) - radius_sq
    beta = cross - radius_sq * s
    gamma = tf.maximum(norm_sq - radius_sq * s * s, 0.0)
    disc = beta * beta - alpha * gamma
    root_disc = tf.sqrt(tf.maximum(disc, 0.0))
    # Cancellation-free forms: for β < 0 the root is γ/(√disc − β) (none if disc < 0: q stays positive);
    # for β ≥ 0, q can only turn down if α < 0, at (β + √disc)/(−α).
    falling = tf.where(disc >= 0, gamma / tf.where(beta < 0, root_disc - beta, 1.0), inf)
    turning = tf.where(alpha < 0, (beta + root_disc) / tf.where(alpha < 0, -alpha, 1.0), inf)
    root = tf.where(beta < 0, falling, turning)

    has_event = tf.math.is_finite(nearest)
    # A root at a breakpoint waits for the pivot: at a degenerate start (u = 0 on a wrong support) a
    # spurious root at t = 0 would otherwise end the path.
    hit = tf.logical_or(root < nearest, tf.logical_and(tf.logical_not(has_event), tf.math.is_finite(root)))
    stuck = tf.logical_and(tf.logical_not(hit), tf.logical_not(has_event))
    switched = tf.math.logical_xor(support, task_one_hot(pivot))
    return (
      iteration + 1,
      tf.where(hit, s + root, tf.where(has_event, s + nearest, s)),
      tf.where(tf.logical_or(hit, stuck), support, switched),
      tf.logical_or(hit, stuck),
      hit,
      w0,
      w1,
    )

  zero = tf.constant(0.0, dtype)
  iterations, s, _, _, found, intercept, slope = tf.while_loop(
    lambda iteration, s, support, done, *_: tf.logical_not(done),
    body,
    (tf.constant(0), zero, start.support, radius_sq <= 0, tf.constant(False), start.weights, tf.zeros_like(linear)),
    maximum_iterations=cap,
  )
  return PathPoint(intercept, slope, s, iterations, found)

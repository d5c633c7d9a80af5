"""Validity tests for UPGrad and DualProj (Quinton & Rey, arXiv:2406.16232) and their dual-cone solver.

  π_J(Jᵀu) = Jᵀv,  v = argmin_{v ≥ u} vᵀ A v,  A = G/tr(G) + reg_eps·I   (Proposition 1)
  UPGrad:   w = (1/T) Σ_i v(u = e_i)        DualProj: w = v(u = 1/T)

The reference below solves each QP by enumerating every free set in float64
NumPy (least squares on the free tasks, the others at their bound, keeping the
KKT point of least objective): a different algorithm from the package's
active-set iterations, and it never calls the package's code.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import (
  dual_cone,
  dualproj,  # registers "dualproj"
  upgrad,  # registers "upgrad"
)
from mtl_research.config import OptimizerConfig
from mtl_research.train import components as components_lib

TORCHJD = {"reg_eps": 1e-4, "norm_eps": 1e-4}  # TorchJD's defaults (UPGrad, DualProj)
EXACT = {"reg_eps": 0.0, "norm_eps": 0.0}  # the paper's projection: this package's defaults


# --- independent float64 reference ---------------------------------------------------------------------


def reference_matrix(gramian: np.ndarray, reg_eps: float, norm_eps: float) -> np.ndarray:
  trace = np.trace(gramian)
  scaled = np.zeros_like(gramian) if trace <= norm_eps else gramian / trace
  return scaled + reg_eps * np.eye(len(gramian))


def reference_qp(matrix: np.ndarray, target: np.ndarray) -> np.ndarray:
  """argmin_{v ≥ u} vᵀAv by enumerating the free set F: A_FF v_F = −A_FB u_B, v_B = u_B; the KKT point
  (v_F ≥ u_F, (Av)_B ≥ 0, (Av)_F = 0, to rounding) of least objective."""
  num = len(target)
  best, best_value = None, 0.0
  for free in itertools.product([False, True], repeat=num):
    free = np.array(free)
    v = target.astype(np.float64).copy()
    if free.any():
      sub = matrix[np.ix_(free, free)]
      v[free] = np.linalg.lstsq(sub, -matrix[np.ix_(free, ~free)] @ target[~free], rcond=None)[0]
    mu = matrix @ v
    scale = np.abs(matrix) @ np.abs(v) + 1e-300
    if np.all(v >= target - 1e-12) and np.all(mu >= -1e-9 * scale) and np.all(np.abs(mu[free]) <= 1e-9 * scale[free]):
      value = v @ matrix @ v
      if best is None or value < best_value - 1e-15 * max(1.0, abs(best_value)):
        best, best_value = v, value
  assert best is not None, "no KKT point: the reference itself failed"
  return best


def reference_weights(method: str, gramian: np.ndarray, reg_eps: float, norm_eps: float) -> np.ndarray:
  matrix = reference_matrix(gramian, reg_eps, norm_eps)
  num = len(gramian)
  if method == "upgrad":
    return np.mean([reference_qp(matrix, np.eye(num)[i]) for i in range(num)], axis=0)
  return reference_qp(matrix, np.full(num, 1.0 / num))


PURE = {"upgrad": upgrad.upgrad_weights, "dualproj": dualproj.dualproj_weights}


def tf_weights(method: str, jacobian: np.ndarray, **kwargs) -> tuple[np.ndarray, dict]:
  gramian = tf.constant(jacobian @ jacobian.T, tf.float64)
  weights, diagnostics = PURE[method](gramian, **kwargs)
  return weights.numpy(), {k: float(v.numpy()) for k, v in diagnostics.items()}


# --- fixed Jacobians ------------------------------------------------------------------------------------


def _jacobians() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(15)
  g = rng.normal(size=8)
  orth = rng.normal(size=8)
  orth -= orth @ g / (g @ g) * g
  five = rng.normal(size=(5, 8))
  five[4] = -five[:4].sum(axis=0) + 0.3 * rng.normal(size=8)  # opposes the others
  third = rng.normal(size=8)
  third -= np.linalg.lstsq(np.stack([g, orth]).T, third, rcond=None)[0] @ np.stack([g, orth])
  scaled = rng.normal(size=(3, 6))
  scaled[2] = -100.0 * (scaled[0] + 0.2 * scaled[1] + 0.3 * rng.normal(size=6))  # one task 100× larger
  nearly = np.stack([g, g + 1e-4 * rng.normal(size=8), -g + 0.5 * orth])
  zero = rng.normal(size=(3, 5))
  zero[1] = 0.0
  zero[2] = -zero[0] + 0.1 * rng.normal(size=5)
  same = rng.normal(size=(3, 5))
  same[1] = same[0]
  same[2] = -0.8 * same[0] + rng.normal(size=5) * 0.3
  return {
    "torchjd_example": np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]),  # TorchJD's documented example
    "two_tasks": np.stack([g, -0.5 * g + orth]),
    "strong_conflict": np.stack([g, -0.99 * g + 0.05 * orth]),
    "three_tasks": np.stack([g, -0.3 * g + orth, -0.2 * g - 0.8 * orth + 0.5 * third]),
    # 0.44·g1 + 0.8·g2 + g3 = 0: Pareto stationary, the dual cone is {x ⟂ g_t} and every projection is 0.
    "pareto_stationary": np.stack([g, -0.3 * g + orth, -0.2 * g - 0.8 * orth]),
    "five_tasks": five,
    "one_100x": scaled,
    "nearly_parallel": nearly,
    "zero_gradient": zero,
    "identical_gradients": same,
    "one_task": g[None, :],
  }


JACOBIANS = _jacobians()
SINGULAR = {"zero_gradient", "identical_gradients"}  # weights not unique without reg_eps: compare directions


@pytest.mark.parametrize("numerics", ["exact", "torchjd"])
@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
@pytest.mark.parametrize("case", sorted(JACOBIANS))
def test_matches_reference(case, method, numerics):
  """Weights (where unique) and directions d = Jᵀw agree with the enumeration reference to 1e-5."""
  jacobian = JACOBIANS[case]
  eps = EXACT if numerics == "exact" else TORCHJD
  want = reference_weights(method, jacobian @ jacobian.T, **eps)
  got, diagnostics = tf_weights(method, jacobian, **eps)
  norms = np.linalg.norm(jacobian, axis=1)
  # ‖d − d_ref‖ against the scale of the sum that forms d (d itself may be ~0 when the tasks cancel).
  direction_scale = np.abs(want) @ norms
  np.testing.assert_allclose(got @ jacobian, want @ jacobian, rtol=0, atol=1e-5 * direction_scale)
  if numerics == "torchjd" or case not in SINGULAR:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  assert diagnostics["solver_residual"] < 1e-9
  if case not in ("one_task",) and method == "upgrad":
    # Every case but one task has a conflicting pair: UPGrad moves off the mean (so the comparison has teeth).
    assert np.abs(want - 1.0 / len(want)).max() > 1e-3


def test_torchjd_published_values():
  """TorchJD's published weights for G of [[-4, 1, 1], [6, 1, 1]] (tests/unit/aggregation/test_values.py,
  4 decimals) under its numerics, and the exact values (by hand: v⁽¹⁾ = (1, 22/38), v⁽²⁾ = (22/18, 1))."""
  jacobian = JACOBIANS["torchjd_example"]
  np.testing.assert_allclose(tf_weights("upgrad", jacobian, **TORCHJD)[0], [1.1109, 0.7894], atol=1e-4)
  np.testing.assert_allclose(tf_weights("dualproj", jacobian, **TORCHJD)[0], [0.6109, 0.5000], atol=1e-4)
  got, _ = tf_weights("upgrad", jacobian)
  np.testing.assert_allclose(got, [(1 + 22 / 18) / 2, (22 / 38 + 1) / 2], rtol=1e-12)
  np.testing.assert_allclose(got @ jacobian, [0.2923977, 1.9005848, 1.9005848], rtol=1e-6)
  np.testing.assert_allclose(tf_weights("dualproj", jacobian)[0], [11 / 18, 0.5], rtol=1e-12)


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_pareto_stationary_gives_zero_direction(method):
  """Gradients with a positive combination summing to 0: no direction conflicts with none, so d = 0."""
  jacobian = JACOBIANS["pareto_stationary"]
  weights, _ = tf_weights(method, jacobian)
  scale = np.abs(weights) @ np.linalg.norm(jacobian, axis=1)
  assert np.linalg.norm(weights @ jacobian) <= 1e-10 * scale


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_torchjd_regularization_conflicts_with_small_tasks(method):
  """Why reg_eps defaults to 0: with one task 100× larger, TorchJD's reg_eps = 1e-4 (relative to Σ‖g‖²) is as
  large as the small tasks' ‖g_t‖²/Σ‖g‖², and its direction conflicts with a task; the exact one does not."""
  jacobian = JACOBIANS["one_100x"]
  norms = np.linalg.norm(jacobian, axis=1)
  for eps, conflicts in ((EXACT, False), (TORCHJD, True)):
    d = tf_weights(method, jacobian, **eps)[0] @ jacobian
    cosines = (jacobian @ d) / (norms * np.linalg.norm(d))
    assert (cosines.min() < -0.1) == conflicts, (eps, cosines)


# --- properties on random Jacobians ---------------------------------------------------------------------


def _random_jacobians(count: int, seed: int) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  out = []
  for k in range(count):
    num, dim = int(rng.choice([3, 8])), int(rng.choice([2, 20]))  # dim 2 < T: dependent gradients
    jacobian = rng.normal(size=(num, dim)) * np.exp(rng.normal(size=(num, 1)))  # norms over ~e^±2
    if k % 3 == 0:  # nearly parallel: the solver's systems are nearly singular
      jacobian[1] = jacobian[0] * (1 + 1e-7) + 1e-7 * rng.normal(size=dim)
    if k % 4 == 0:  # identical: G singular
      jacobian[2] = jacobian[0]
    out.append(jacobian)
  return out


@functools.cache
def _traced(num: int):
  """A traced function (one per T) of the Gramian: the T UPGrad problems and DualProj's, solved as one batch,
  and both methods' weights."""

  @tf.function
  def solve(gramian):
    matrix = dual_cone.normalized_gramian(gramian, 0.0, 0.0)
    targets = tf.concat([tf.eye(num, dtype=tf.float64), tf.fill([1, num], tf.constant(1.0 / num, tf.float64))], 0)
    weights = {method: pure(gramian)[0] for method, pure in PURE.items()}
    return dual_cone.project_weights(matrix, targets), weights

  return solve


def test_projections_are_optimal_and_conflict_free():
  """Each QP's solution satisfies the projection's KKT conditions, checked on J itself: x = Jᵀv has
  J x ≥ 0 (no conflict), λ = v − u ≥ 0, and λ_t (J x)_t = 0; so UPGrad's and DualProj's d conflict with no task."""
  moved = 0
  for jacobian in _random_jacobians(40, seed=1):
    num = len(jacobian)
    projection, weights = _traced(num)(tf.constant(jacobian @ jacobian.T))
    targets = np.vstack([np.eye(num), np.full((1, num), 1.0 / num)])
    v = projection.weights.numpy()
    norms = np.linalg.norm(jacobian, axis=1)
    inner = (v @ jacobian) @ jacobian.T  # [problem, task]: ⟨π_J(Jᵀu), g_t⟩
    scale = (np.abs(v) @ norms)[:, None] * norms[None, :]  # rounding scale of ⟨Σ_k v_k g_k, g_t⟩
    lam = v - targets
    assert np.all(lam >= 0.0)
    moved += int(np.count_nonzero(lam.max(axis=1) > 0))
    assert np.all(inner >= -1e-10 * scale), (inner / scale).min()
    assert np.all(np.abs(lam * inner) <= 1e-10 * scale * (1 + np.abs(lam)))
    assert projection.residual.numpy().max() < 1e-9
    for method, w in weights.items():
      w = w.numpy()
      assert np.all((w @ jacobian) @ jacobian.T >= -1e-10 * (np.abs(w) @ norms) * norms), method
  assert moved > 100, moved  # most problems have a conflict to resolve: the checks have teeth


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_non_conflicting_gradients_give_the_mean(method):
  """All pairwise ⟨g_i, g_j⟩ ≥ 0 (rows in the positive orthant): both return the mean, without a solve."""
  rng = np.random.default_rng(2)
  for num in (1, 2, 3, 5, 8):
    jacobian = np.abs(rng.normal(size=(num, 7))) * np.exp(rng.normal(size=(num, 1)))
    weights, diagnostics = tf_weights(method, jacobian)
    np.testing.assert_array_equal(weights, np.full(num, 1.0 / num))
    assert diagnostics["solver_iterations"] == 0


def test_dualproj_keeps_a_non_conflicting_mean_upgrad_does_not():
  """A conflicting pair whose mean conflicts with no task: DualProj is the mean, UPGrad projects each gradient."""
  jacobian = np.array([[1.0, 0.0], [-0.2, 1.0]])  # ⟨g1, g2⟩ < 0, mean = (0.4, 0.5) agrees with both
  np.testing.assert_array_equal(tf_weights("dualproj", jacobian)[0], [0.5, 0.5])
  assert not np.allclose(tf_weights("upgrad", jacobian)[0], [0.5, 0.5])


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_scale_invariance_and_torchjd_threshold(method):
  """The paper's projection does not depend on the gradients' scale; TorchJD's norm_eps = 1e-4 is an absolute
  threshold on Σ‖g_t‖², below which its weights fall back to the plain mean."""
  jacobian = JACOBIANS["three_tasks"]
  base, _ = tf_weights(method, jacobian)
  for factor in (1e-6, 1e-3, 1e4):
    np.testing.assert_allclose(tf_weights(method, factor * jacobian)[0], base, rtol=1e-10)
  small = 1e-3 * jacobian  # Σ‖g‖² ~ 1e-5 < 1e-4
  assert np.trace(small @ small.T) < 1e-4
  np.testing.assert_array_equal(tf_weights(method, small, **TORCHJD)[0], np.full(3, 1 / 3))


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_sum_scale_is_num_tasks_times_mean(method):
  jacobian = JACOBIANS["five_tasks"]
  mean, _ = tf_weights(method, jacobian)
  total, _ = tf_weights(method, jacobian, scale="sum")
  np.testing.assert_allclose(total, 5 * mean, rtol=1e-12)


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_degenerate_inputs(method):
  """T = 1, a zero gradient, all gradients zero, identical gradients: finite, defined weights; NaN in → NaN out."""
  np.testing.assert_array_equal(tf_weights(method, np.array([[3.0, -4.0]]))[0], [1.0])
  np.testing.assert_array_equal(tf_weights(method, np.zeros((1, 2)))[0], [1.0])
  np.testing.assert_array_equal(tf_weights(method, np.zeros((3, 4)))[0], np.full(3, 1 / 3))  # u itself
  for case in ("zero_gradient", "identical_gradients"):
    for eps in (EXACT, TORCHJD):
      weights, diagnostics = tf_weights(method, JACOBIANS[case], **eps)
      assert np.all(np.isfinite(weights)) and np.all(weights >= 0), (case, eps)
      assert diagnostics["solver_residual"] < 1e-9
  # With reg_eps > 0 the weights are unique: identical gradients get equal weights.
  weights, _ = tf_weights(method, JACOBIANS["identical_gradients"], **TORCHJD)
  assert weights[0] == pytest.approx(weights[1], rel=1e-9)
  nan = np.full((3, 3), np.nan)
  assert np.all(np.isnan(PURE[method](tf.constant(nan))[0].numpy()))


def test_iteration_cap_returns_a_feasible_point():
  """Stopped before optimality, v ≥ u still holds and the residual says it is not optimal."""
  jacobian = JACOBIANS["five_tasks"]
  matrix = dual_cone.normalized_gramian(tf.constant(jacobian @ jacobian.T), 0.0, 0.0)
  full = dual_cone.project_weights(matrix, tf.eye(5, dtype=tf.float64))
  assert full.iterations.numpy().max() >= 2
  capped = dual_cone.project_weights(matrix, tf.eye(5, dtype=tf.float64), max_iterations=1)
  assert np.all(capped.weights.numpy() >= np.eye(5))
  assert capped.residual.numpy().max() > 1e-3 > 1e-9 > full.residual.numpy().max()


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_compiles_under_xla(method):
  """jit_compile=True gives the same weights as the graph, degenerate inputs included."""
  compiled_fn = tf.function(PURE[method], jit_compile=True)  # one compilation per T (3, 1)
  for case in ("one_100x", "three_tasks", "identical_gradients", "zero_gradient", "one_task"):
    jacobian = JACOBIANS[case]
    gramian = tf.constant(jacobian @ jacobian.T)
    compiled = compiled_fn(gramian)
    eager = PURE[method](gramian)
    np.testing.assert_allclose(compiled[0].numpy(), eager[0].numpy(), rtol=1e-10, atol=1e-12, err_msg=case)
    assert compiled[1]["solver_iterations"].numpy() == eager[1]["solver_iterations"].numpy()


# --- training -------------------------------------------------------------------------------------------

TASKS = (
  tasks_lib.TaskSpec("a", tasks_lib.REGRESSION),
  tasks_lib.TaskSpec("b", tasks_lib.REGRESSION),
  tasks_lib.TaskSpec("c", tasks_lib.REGRESSION),
)


def _conflicting_bundle():
  """Three regression tasks through one 4-unit trunk; b (3× the scale) pulls against a and c."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 4))
  labels = {
    "a": x[:, 0] + x[:, 1],
    "b": 3.0 * (x[:, 1] + x[:, 2] - x[:, 0]),
    "c": np.sin(2.0 * x[:, 3]) - x[:, 2],
  }
  return helpers.make_bundle(TASKS, x, labels, (400, 100, 100))


def _build(tmp_path, method):
  config = helpers.make_config(
    tmp_path / method,
    method,
    hidden_units=(4,),
    batch_size=32,
    train_steps=200,
    optimizer=OptimizerConfig(name="sgd", learning_rate=0.05),
  )
  bundle = _conflicting_bundle()
  return components_lib.build(config, bundle), bundle


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_training_steps_never_conflict(tmp_path, method):
  """At each of 40 steps the shared parameters' update d = Σ_t w_t g_t has ⟨d, g_t⟩ = (G w)_t ≥ 0 for every
  task (G: the Gramian the step used), so no task's loss rises at first order; the mean gradient would
  have conflicted with some task at most of these steps."""
  parts, _ = _build(tmp_path, method)
  mean_conflicts = 0
  for step in range(40):
    logs = helpers.run_loop(parts, 1)
    gramian = parts.balancer._gramian.numpy()  # the Gramian this step used
    weights = logs["weights"].astype(np.float64)  # float32: rounding ~1e-7 relative
    inner = gramian @ weights
    assert np.all(inner >= -1e-6 * (np.abs(gramian) @ np.abs(weights))), (step, inner)
    mean_conflicts += bool(np.any(gramian.sum(axis=1) < 0))
    assert logs["diagnostics"]["gramian/solver_residual"] < 1e-6
  assert mean_conflicts >= 20, mean_conflicts


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_training_reduces_every_task_loss(tmp_path, method):
  """150 SGD steps: each task's mean squared error on the whole training split falls by at least 40%."""
  parts, bundle = _build(tmp_path, method)
  features = {"numeric": tf.constant(bundle.train.features["numeric"])}

  def losses():
    outputs = parts.model(features, training=False)
    return np.array([np.mean((outputs[t.name].numpy()[:, 0] - bundle.train.labels[t.name]) ** 2) for t in TASKS])

  before = losses()
  helpers.run_loop(parts, 150)
  after = losses()
  assert np.all(after < 0.6 * before), (before, after)

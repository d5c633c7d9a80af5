"""Validity tests for IMTL-G (Liu et al., ICLR 2021) and Aligned-MTL (Senushkin et al., CVPR 2023).

  IMTL-G       g = Σ_t α_t·g_t, Σα = 1, gᵀu_1 = gᵀu_t (u_t = g_t/‖g_t‖);
               the paper's Eq. 6: α_{2:T} = g_1·Uᵀ·(D·Uᵀ)⁻¹, α_1 = 1 − Σ_{t≥2} α_t.
  Aligned-MTL  the aligned gradients σ_min·U·Wᵀ (J = U·S·Wᵀ, σ_min = the smallest kept singular value),
               summed: update = Σ_t (σ_min·U·Wᵀ)_t; the weights w solve Jᵀ·w = update.

The NumPy references below work on the Jacobian J itself, never on the package's
code or on the Gramian: IMTL-G through the paper's D/U form on the explicit
vectors (the package solves a symmetric system in the cosine matrix), Aligned-MTL
through an SVD of J and a least-squares solve (the package: an eigendecomposition
of G).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import aligned_mtl, imtl_g  # registers "aligned_mtl" and "imtl_g"
from mtl_research.balancers.base import Schedule, StepStats
from mtl_research.balancers.gramian import PARAMETERS, gramian_of
from mtl_research.config import OptimizerConfig
from mtl_research.train import components as components_lib

EPS32 = float(np.finfo(np.float32).eps)
DIM = 12  # parameters per fixed Jacobian


# --- fixed Jacobians ------------------------------------------------------------------------------------


def _random(seed: int, tasks: int, dim: int = DIM) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(tasks, dim))


def _conflicting() -> np.ndarray:
  j = _random(11, 3)
  j[1] = -0.95 * j[0] + 0.3 * np.linalg.norm(j[0]) / np.sqrt(DIM) * _random(12, 1)[0]  # cos(g_0, g_1) ≈ −0.95
  return j


def _nearly_parallel() -> np.ndarray:
  j = _random(21, 3)
  j[1] = j[0] + 0.03 * np.linalg.norm(j[0]) / np.sqrt(DIM) * _random(22, 1)[0]  # cos(g_0, g_1) ≈ 0.9995
  return j


def _one_100x() -> np.ndarray:
  j = _random(31, 3)
  j[0] *= 100.0
  return j


def _zero_gradient() -> np.ndarray:
  j = _random(41, 3)
  j[1] = 0.0
  return j


def _identical() -> np.ndarray:
  j = _random(51, 3)
  j[1] = j[0]
  return j


def _parallel_scaled() -> np.ndarray:
  j = _random(61, 2)
  j[1] = 3.0 * j[0]
  return j


def _dependent() -> np.ndarray:
  j = _random(71, 3)
  j[2] = j[0] + j[1]
  return j


JACOBIANS: dict[str, Callable[[], np.ndarray]] = {
  "two_tasks": lambda: _random(1, 2),
  "three_tasks": lambda: _random(2, 3),
  "five_tasks": lambda: _random(3, 5),
  "conflicting_pair": _conflicting,
  "nearly_parallel": _nearly_parallel,
  "one_task_100x": _one_100x,
  "zero_gradient": _zero_gradient,
  "identical_gradients": _identical,
  "parallel_3x": _parallel_scaled,
  "dependent_gradients": _dependent,
  "single_task": lambda: _random(81, 1),
}


def _close(got: np.ndarray, want: np.ndarray, rtol: float, what: str) -> None:
  """|got − want| ≤ rtol·max|want| elementwise (weights can be near 0 where others are not)."""
  scale = max(float(np.abs(want).max()), 1e-300)
  np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale, err_msg=what)


# --- independent float64 references ---------------------------------------------------------------------


def imtl_reference(jacobian: np.ndarray) -> np.ndarray:
  """α by the paper's Eq. 6 on the explicit gradients.

  The package's conventions for what the paper leaves undefined, built here
  another way: a zero gradient gets α = 0; gradients with one direction act as
  one task whose gradient is that direction times the harmonic mean of their
  norms, and split its α so that each contributes equally to g (α_t ∝ 1/‖g_t‖);
  every gradient zero: α = 1/T.
  """
  num_tasks = len(jacobian)
  norms = np.linalg.norm(jacobian, axis=1)
  groups: list[list[int]] = []
  for t in np.flatnonzero(norms > 0):
    for group in groups:
      if np.linalg.norm(jacobian[group[0]] / norms[group[0]] - jacobian[t] / norms[t]) < 1e-12:
        group.append(int(t))
        break
    else:
      groups.append([int(t)])
  if not groups:
    return np.full(num_tasks, 1.0 / num_tasks)
  harmonic = np.array([len(group) / np.sum(1.0 / norms[group]) for group in groups])
  grads = np.array([jacobian[group[0]] / norms[group[0]] * h for group, h in zip(groups, harmonic)])
  if len(grads) == 1:
    alpha = np.ones(1)
  else:
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    d = grads[0] - grads[1:]  # D = [g_1 − g_2, …, g_1 − g_T]ᵀ
    u = units[0] - units[1:]  # U = [u_1 − u_2, …, u_1 − u_T]ᵀ
    rest = np.linalg.solve((d @ u.T).T, grads[0] @ u.T)  # α_{2:T} = g_1·Uᵀ·(D·Uᵀ)⁻¹, as a column
    alpha = np.concatenate([[1.0 - rest.sum()], rest])
  weights = np.zeros(num_tasks)
  for group, h, a in zip(groups, harmonic, alpha):
    weights[group] = a * h / (len(group) * norms[group])
  return weights


def aligned_reference(jacobian: np.ndarray) -> dict[str, np.ndarray | float]:
  """The aligned gradients σ_min·U_R·W_Rᵀ from an SVD of J, their sum and the weights that give it."""
  num_tasks = len(jacobian)
  u, s, wt = np.linalg.svd(jacobian, full_matrices=False)
  kept = s**2 > s[0] ** 2 * num_tasks * EPS32  # λ > λ_max·T·ε₃₂, λ = s²
  if not kept.any():
    return {"weights": np.ones(num_tasks), "sigma_min": 0.0, "dropped": num_tasks}
  sigma_min = s[kept][-1]
  aligned = sigma_min * u[:, kept] @ wt[kept]  # the rows are the aligned task gradients
  update = aligned.sum(axis=0)
  # The minimum-norm solution of Jᵀ·w = update (singular values the rule drops count as zero).
  weights = np.linalg.lstsq(jacobian.T, update, rcond=np.sqrt(num_tasks * EPS32))[0]
  return {
    "weights": weights,
    "aligned": aligned,
    "update": update,
    "sigma_min": sigma_min,
    "dropped": int(num_tasks - kept.sum()),
  }


def _imtl(gramian: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
  weights, diagnostics = imtl_g.imtl_g_weights(tf.constant(gramian, tf.float64))
  return weights.numpy(), {k: float(v) for k, v in diagnostics.items()}


def _aligned(gramian: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
  weights, diagnostics = aligned_mtl.aligned_mtl_weights(tf.constant(gramian, tf.float64))
  return weights.numpy(), {k: float(v) for k, v in diagnostics.items()}


def _projections(jacobian: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """gᵀu_t for every task with a gradient, g = Σ_t w_t·g_t."""
  norms = np.linalg.norm(jacobian, axis=1)
  present = norms > 0
  return (jacobian[present] @ (jacobian.T @ weights)) / norms[present]


# --- IMTL-G ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(set(JACOBIANS) - {"dependent_gradients"}))  # that one: below
def test_imtl_matches_the_papers_closed_form(case):
  jacobian = JACOBIANS[case]()
  weights, diagnostics = _imtl(jacobian @ jacobian.T)
  _close(weights, imtl_reference(jacobian), 1e-7, case)
  assert weights.sum() == pytest.approx(1.0, abs=1e-12)
  assert all(np.isfinite(v) for v in diagnostics.values()), diagnostics


@pytest.mark.parametrize("seed", range(5))
def test_imtl_two_tasks_bisect_the_angle(seed):
  """With two tasks g ∝ u_1 + u_2 (the bisector): α = (‖g_2‖, ‖g_1‖)/(‖g_1‖ + ‖g_2‖), for any angle."""
  jacobian = _random(100 + seed, 2) * np.exp(np.random.default_rng(seed).normal(size=(2, 1)))
  norms = np.linalg.norm(jacobian, axis=1)
  weights, _ = _imtl(jacobian @ jacobian.T)
  np.testing.assert_allclose(weights, norms[::-1] / norms.sum(), rtol=1e-12)


@pytest.mark.parametrize("num_tasks", [2, 3, 4, 5, 8])
def test_imtl_projections_are_equal(num_tasks):
  """The defining property on random Jacobians of unequal scales: equal gᵀu_t (relative 1e-6), Σα = 1."""
  rng = np.random.default_rng(num_tasks)
  for _ in range(10):
    jacobian = rng.normal(size=(num_tasks, 40)) * np.exp(1.5 * rng.normal(size=(num_tasks, 1)))
    weights, diagnostics = _imtl(jacobian @ jacobian.T)
    projections = _projections(jacobian, weights)
    assert np.ptp(projections) <= 1e-6 * np.abs(projections).max(), projections
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert diagnostics["imtl_residual"] < 1e-6
    cosines = projections / np.linalg.norm(jacobian.T @ weights)
    assert diagnostics["imtl_cosine"] == pytest.approx(cosines.mean(), abs=1e-9)


def test_imtl_degenerate_conventions():
  """Zero gradient: α = 0 and the rest balanced; duplicated task: halves; none: 1/T; one task: exactly 1."""
  zero = _zero_gradient()
  weights, diagnostics = _imtl(zero @ zero.T)
  assert weights[1] == 0.0
  projections = _projections(zero, weights)
  assert np.ptp(projections) <= 1e-9 * np.abs(projections).max()
  assert diagnostics["imtl_residual"] < 1e-9

  g = _random(5, 1)[0]
  weights, _ = _imtl(np.outer([1.0, 1.0], [1.0, 1.0]) * (g @ g))  # two identical gradients
  np.testing.assert_allclose(weights, [0.5, 0.5], rtol=1e-12)
  weights, _ = _imtl(np.outer([1.0, 3.0], [1.0, 3.0]) * (g @ g))  # g_2 = 3·g_1: the bisector's weights
  np.testing.assert_allclose(weights, [0.75, 0.25], rtol=1e-12)

  for num_tasks in (1, 3):
    weights, diagnostics = _imtl(np.zeros([num_tasks, num_tasks]))
    np.testing.assert_array_equal(weights, np.full(num_tasks, 1.0 / num_tasks))
    assert diagnostics == {"imtl_residual": 0.0, "imtl_cosine": 0.0}

  single = _random(6, 1) * 1e3
  weights, diagnostics = _imtl(single @ single.T)
  np.testing.assert_array_equal(weights, [1.0])
  assert diagnostics["imtl_cosine"] == pytest.approx(1.0, abs=1e-12)


def test_imtl_dependent_gradients_get_the_least_squares_step():
  """g_3 = g_1 + g_2: equal projections exist only at 0; K⁺·1 is the least-squares, minimum-norm β instead.

  In β-space (β_t = α_t·‖g_t‖) K's null vector is z = (‖g_1‖, ‖g_2‖, −‖g_3‖) (Σ_t z_t·u_t = 0): the
  minimum-norm β is orthogonal to z, and the least-squares residual Kβ − c·1 lies along z.
  """
  jacobian = _dependent()
  norms = np.linalg.norm(jacobian, axis=1)
  weights, diagnostics = _imtl(jacobian @ jacobian.T)
  assert weights.sum() == pytest.approx(1.0, abs=1e-12)
  beta = weights * norms
  null = norms * np.array([1.0, 1.0, -1.0])
  assert abs(beta @ null) <= 1e-9 * np.linalg.norm(beta) * np.linalg.norm(null)
  projections = _projections(jacobian, weights)  # (Kβ)_t
  fit, residual, *_ = np.linalg.lstsq(np.stack([np.ones(3), null], axis=1), projections, rcond=None)
  assert residual[0] <= 1e-18 * projections @ projections, (fit, residual)
  assert fit[0] > 0 and diagnostics["imtl_residual"] > 1e-3  # a step, with unequal projections


def test_imtl_cosine_flags_a_step_that_ascends_every_task():
  """Σα = 1 fixes the scale, not the sign: here the paper's α gives gᵀu_t < 0 for every task."""
  jacobian = np.array([[0.2, 1.5, -1.5], [-1.7, -1.7, 2.0], [-0.03, -0.01, -0.08]])
  weights, diagnostics = _imtl(jacobian @ jacobian.T)
  _close(weights, imtl_reference(jacobian), 1e-9, "sign case")
  assert weights.sum() == pytest.approx(1.0, abs=1e-12)
  assert np.all(_projections(jacobian, weights) < 0)
  assert diagnostics["imtl_cosine"] < 0


# --- Aligned-MTL -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(JACOBIANS))
def test_aligned_matches_the_procrustes_reference(case):
  jacobian = JACOBIANS[case]()
  weights, diagnostics = _aligned(jacobian @ jacobian.T)
  want = aligned_reference(jacobian)
  _close(weights, want["weights"], 1e-7, case)
  _close(jacobian.T @ weights, want["update"], 1e-7, f"{case}: update")
  assert diagnostics["aligned_sigma_min"] == pytest.approx(want["sigma_min"], rel=1e-9)
  assert diagnostics["aligned_dropped"] == want["dropped"]


@pytest.mark.parametrize("num_tasks", [2, 3, 4, 5, 8])
def test_aligned_gradients_are_orthogonal_with_equal_norms(num_tasks):
  """B·J·(B·J)ᵀ = σ_min²·I with σ_min J's smallest singular value, and the update is the sum of B·J's rows."""
  rng = np.random.default_rng(10 + num_tasks)
  for _ in range(10):
    jacobian = rng.normal(size=(num_tasks, 40)) * np.exp(rng.normal(size=(num_tasks, 1)))
    gramian = jacobian @ jacobian.T
    balance, sigma_min, dropped = (t.numpy() for t in aligned_mtl.alignment_matrix(tf.constant(gramian)))
    aligned = balance @ jacobian
    assert sigma_min == pytest.approx(np.linalg.svd(jacobian, compute_uv=False)[-1], rel=1e-10)
    assert dropped == 0
    np.testing.assert_allclose(aligned @ aligned.T, sigma_min**2 * np.eye(num_tasks), rtol=0, atol=1e-6 * sigma_min**2)
    weights, _ = _aligned(gramian)
    _close(jacobian.T @ weights, aligned.sum(axis=0), 1e-9, "update = Σ aligned rows")


def test_aligned_preferences_weigh_the_aligned_gradients():
  """w = B·p: preference e_t gives the aligned gradient of task t alone."""
  jacobian = _random(7, 3)
  gramian = tf.constant(jacobian @ jacobian.T)
  balance = aligned_mtl.alignment_matrix(gramian)[0].numpy()
  for t in range(3):
    weights, _ = aligned_mtl.aligned_mtl_weights(gramian, tf.one_hot(t, 3, dtype=tf.float64))
    np.testing.assert_allclose(weights.numpy(), balance[:, t], rtol=1e-12)
  _close(jacobian.T @ balance[:, 0], aligned_reference(jacobian)["aligned"][0], 1e-9, "row 0")


def test_aligned_degenerate_conventions():
  """Zero gradient: weight 0; duplicated task: 1 each; none: B = I; one task: exactly 1."""
  zero = _zero_gradient()
  weights, diagnostics = _aligned(zero @ zero.T)
  assert abs(weights[1]) < 1e-12 * np.abs(weights).max()
  assert diagnostics["aligned_dropped"] == 1

  g = _random(5, 1)[0]
  weights, diagnostics = _aligned(np.outer([1.0, 1.0], [1.0, 1.0]) * (g @ g))
  np.testing.assert_allclose(weights, [1.0, 1.0], rtol=1e-12)
  assert diagnostics == pytest.approx({"aligned_sigma_min": np.sqrt(2 * g @ g), "aligned_dropped": 1.0})

  for num_tasks in (1, 3):
    weights, diagnostics = _aligned(np.zeros([num_tasks, num_tasks]))
    np.testing.assert_array_equal(weights, np.ones(num_tasks))
    assert diagnostics == {"aligned_sigma_min": 0.0, "aligned_dropped": float(num_tasks)}

  single = _random(6, 1) * 1e3
  weights, diagnostics = _aligned(single @ single.T)
  np.testing.assert_array_equal(weights, [1.0])
  assert diagnostics["aligned_sigma_min"] == pytest.approx(np.linalg.norm(single), rel=1e-12)


# --- XLA ----------------------------------------------------------------------------------------------------


def _ill_conditioned() -> np.ndarray:
  """Five gradients with singular values spread over 10^2.5 (cond(G) = 1e5), in random directions."""
  rng = np.random.default_rng(98)  # a draw where XLA's eigh plus the first-order correction alone is off by 7e-5
  left = np.linalg.qr(rng.normal(size=(5, 5)))[0]
  right = np.linalg.qr(rng.normal(size=(DIM, 5)))[0]
  return left @ np.diag(np.logspace(0.0, -2.5, 5)) @ right.T


@pytest.mark.parametrize("method", ["imtl_g", "aligned_mtl"])
def test_compiles_under_xla_with_the_same_weights(method):
  """One jit_compile=True function per method on the 3- and 5-task Jacobians: the eager weights to 1e-9.

  XLA's eigh alone leaves ~1e-7·‖G‖ of off-diagonal residue, which moved
  Aligned-MTL's weights by 7e-5 on `_ill_conditioned` even with spectral.py's
  first-order correction, without its Jacobi sweep (one shape per task count:
  two compilations).
  """
  function = {"imtl_g": imtl_g.imtl_g_weights, "aligned_mtl": aligned_mtl.aligned_mtl_weights}[method]
  compiled = tf.function(function, jit_compile=True)
  cases = {name: build for name, build in JACOBIANS.items() if len(build()) in (3, 5)}
  cases["ill_conditioned"] = _ill_conditioned
  for case, build in sorted(cases.items()):
    jacobian = build()
    gramian = tf.constant(jacobian @ jacobian.T)
    eager_weights, eager_diagnostics = function(gramian)
    xla_weights, xla_diagnostics = compiled(gramian)
    _close(xla_weights.numpy(), eager_weights.numpy(), 1e-9, case)
    for name, value in eager_diagnostics.items():
      assert float(xla_diagnostics[name]) == pytest.approx(float(value), rel=1e-6, abs=1e-9), (case, name)


# --- the balancers in a step --------------------------------------------------------------------------------

TASKS3 = tuple(tasks_lib.TaskSpec(name, tasks_lib.REGRESSION) for name in ("up", "down", "loud"))


def _step_stats(seed: int) -> tuple[StepStats, np.ndarray]:
  """Three tasks' float32 gradients of a [4, 3] kernel and a [3] bias (one 30× the others); J flattened."""
  rng = np.random.default_rng(seed)
  kernel, bias = tf.Variable(tf.zeros([4, 3])), tf.Variable(tf.zeros([3]))
  scales = (1.0, 0.5, 30.0)
  grads = tuple(
    (tf.constant(s * rng.normal(size=(4, 3)), tf.float32), tf.constant(s * rng.normal(size=3), tf.float32))
    for s in scales
  )
  stats = StepStats(
    losses=tf.constant([1.0, 2.0, 3.0]),
    task_grads=grads,
    scope_variables=(kernel, bias),
    step=tf.constant(0, tf.int64),
    gramian=gramian_of(grads),
    seed=tf.constant([0, 0], tf.int64),
  )
  jacobian = np.array([np.concatenate([k.numpy().ravel(), b.numpy()]) for k, b in grads], np.float64)
  return stats, jacobian


def _balancer(name: str):
  cls = {"imtl_g": imtl_g.IMTLG, "aligned_mtl": aligned_mtl.AlignedMTL}[name]
  return cls(TASKS3, {"gradient_scope": PARAMETERS}, Schedule(steps_per_epoch=10, total_steps=100))


def _flat(grads) -> np.ndarray:
  return np.concatenate([np.asarray(g, np.float64).ravel() for g in grads])


@pytest.mark.parametrize("seed", range(3))
def test_imtl_aggregate_has_equal_projections(seed):
  """The combined gradient the step applies has equal projections onto the actual unit task gradients."""
  stats, jacobian = _step_stats(seed)
  balancer = _balancer("imtl_g")
  combined = _flat(balancer.aggregate(stats))
  units = jacobian / np.linalg.norm(jacobian, axis=1, keepdims=True)
  projections = units @ combined
  assert np.ptp(projections) <= 1e-5 * np.abs(projections).max(), projections  # float32 sums
  assert balancer.weights().numpy().sum() == pytest.approx(1.0, abs=1e-6)
  summaries = {k: float(v) for k, v in balancer.summaries().items()}
  assert summaries["gramian/imtl_residual"] < 1e-6
  assert np.isfinite(summaries["gramian/condition"])


@pytest.mark.parametrize("seed", range(3))
def test_aligned_aggregate_is_the_sum_of_the_aligned_gradients(seed):
  stats, jacobian = _step_stats(seed)
  balancer = _balancer("aligned_mtl")
  combined = _flat(balancer.aggregate(stats))
  want = aligned_reference(jacobian)
  _close(combined, want["update"], 1e-5, "combined gradient")
  summaries = {k: float(v) for k, v in balancer.summaries().items()}
  assert summaries["gramian/aligned_sigma_min"] == pytest.approx(want["sigma_min"], rel=1e-5)
  assert summaries["gramian/aligned_dropped"] == 0.0


def _conflicting_bundle(rows: int = 256):
  """Three regression tasks on shared inputs: `down` pulls the shared features against `up`; `loud`'s targets are
  5× larger (25× the loss)."""
  rng = np.random.default_rng(7)
  x = rng.normal(size=(3 * rows, 6))
  signal = x[:, 0] + 0.5 * x[:, 1]
  labels = {
    "up": signal + 0.3 * np.tanh(x[:, 2]),
    "down": -signal + 0.3 * x[:, 3] ** 2,
    "loud": 5.0 * (x[:, 4] - 0.5 * x[:, 0]),
  }
  return helpers.make_bundle(TASKS3, x, labels, (rows, rows, rows)), x[:rows], labels


def _train_losses(model, x, labels) -> np.ndarray:
  outputs = model({"numeric": tf.constant(x, tf.float32)}, training=False)
  return np.array([np.mean((outputs[t.name].numpy()[:, 0] - labels[t.name][: len(x)]) ** 2) for t in TASKS3])


def _train(run_dir, method: str) -> tuple[np.ndarray, np.ndarray, components_lib.Components]:
  """60 steps of Adam(1e-2) on `_conflicting_bundle`: (train losses before, after, the run's components)."""
  bundle, x, labels = _conflicting_bundle()
  config = helpers.make_config(
    run_dir, method, hidden_units=(16,), batch_size=32, train_steps=60, optimizer=OptimizerConfig(learning_rate=1e-2)
  )
  parts = components_lib.build(config, bundle)
  before = _train_losses(parts.model, x, labels)
  helpers.run_loop(parts, 60)
  return before, _train_losses(parts.model, x, labels), parts


@pytest.fixture(scope="module")
def equal_weights_losses(tmp_path_factory) -> np.ndarray:
  return _train(tmp_path_factory.mktemp("fixed"), "fixed")[1]


@pytest.mark.parametrize("method", ["imtl_g", "aligned_mtl"])
def test_training_reduces_every_task_loss(tmp_path, method, equal_weights_losses):
  """60 steps on a conflicting problem with a task of 25× the loss scale.

  Every task's training loss at least halves, and neither method lets the large
  task dominate: the two unit-scale tasks end lower than under equal weights
  (measured: about half of equal weights' losses for both methods).
  """
  before, after, parts = _train(tmp_path, method)
  assert np.all(after < 0.5 * before), (before, after)
  assert np.all(after[:2] < 0.75 * equal_weights_losses[:2]), (after, equal_weights_losses)
  weights = parts.balancer.weights().numpy()
  summaries = {k: float(v) for k, v in parts.balancer.summaries().items()}
  assert np.all(np.isfinite(weights)) and all(np.isfinite(v) for v in summaries.values()), (weights, summaries)
  if method == "imtl_g":
    assert weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert summaries["gramian/imtl_residual"] < 1e-4 and summaries["gramian/imtl_cosine"] > 0
  else:
    assert summaries["gramian/aligned_dropped"] == 0.0 and summaries["gramian/aligned_sigma_min"] > 0.0

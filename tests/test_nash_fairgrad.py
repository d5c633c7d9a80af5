"""Validity tests for Nash-MTL (Navon et al., ICML 2022) and FairGrad (Ban & Ji, ICML 2024).

Both choose weights w > 0 of the task gradients g_t (the rows of J) from the power equation

  (G w)_t = w_t^(−p),   G = J·Jᵀ,   p = 1 (Nash-MTL: GᵀGα = 1/α),  p = 1/α (FairGrad: GᵀGw = w^(−1/α)),

and the shared parameters follow d = Jᵀw, so that ⟨g_t, d⟩ = w_t^(−p) > 0 for every task. The reference
below solves the same equations with another algorithm, written here from the papers' formulas:
Gauss–Seidel (exact minimization of F(w) = ½wᵀGw − Σ φ(w_t), φ' = w^(−p), one coordinate at a time,
each a monotone scalar equation), run to float64 convergence. A zero gradient gets weight 0 and is
left out (the package's documented rule).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import fairgrad, nash_mtl, power_equation  # registers "nash_mtl", "fairgrad"
from mtl_research.config import OptimizerConfig
from mtl_research.train import components as components_lib

# --- independent float64 reference ----------------------------------------------------------------------


def _coordinate_root(diagonal: float, rest: float, power: float) -> float:
  """The w > 0 with diagonal·w + rest = w^(−p) (the left side increases in w, the right decreases)."""
  if power == 1.0:  # diagonal·w² + rest·w − 1 = 0, the positive root without cancellation
    if rest >= 0:
      return 2.0 / (rest + np.sqrt(rest * rest + 4.0 * diagonal))
    return (-rest + np.sqrt(rest * rest + 4.0 * diagonal)) / (2.0 * diagonal)

  def h(x):  # in x = log w: increasing
    return diagonal * np.exp(x) + rest - np.exp(-power * x)

  lo, hi = -1.0, 1.0
  while h(lo) > 0:
    lo *= 2.0
  while h(hi) < 0:
    hi *= 2.0
  x = 0.5 * (lo + hi)
  for _ in range(200):  # Newton, kept inside the bracket (bisection when it leaves it)
    value = h(x)
    if value > 0:
      hi = x
    else:
      lo = x
    slope = diagonal * np.exp(x) + power * np.exp(-power * x)
    guess = x - value / slope
    nxt = guess if lo < guess < hi else 0.5 * (lo + hi)
    if abs(nxt - x) <= 1e-15 * max(1.0, abs(x)):
      x = nxt
      break
    x = nxt
  return float(np.exp(x))


def reference_weights(jacobian: np.ndarray, power: float, max_sweeps: int = 100_000) -> np.ndarray:
  """w > 0 with (G w)_t = w_t^(−p) on the nonzero gradients (0 on zero ones), by Gauss–Seidel."""
  gram = jacobian @ jacobian.T
  active = np.flatnonzero(np.diag(gram) > 0)
  sub = gram[np.ix_(active, active)]
  w = 1.0 / np.sqrt(np.diag(sub))
  for _ in range(max_sweeps):
    before = w.copy()
    for t in range(len(w)):
      rest = sub[t] @ w - sub[t, t] * w[t]
      w[t] = _coordinate_root(sub[t, t], rest, power)
    if np.max(np.abs(w - before) / w) < 1e-15:
      break
  out = np.zeros(len(gram))
  out[active] = w
  return out


def equation_residual(jacobian: np.ndarray, weights: np.ndarray, power: float) -> float:
  """max_t |(G w)_t·w_t^p − 1| over the nonzero gradients, from J directly."""
  active = np.linalg.norm(jacobian, axis=1) > 0
  improvement = jacobian @ (jacobian.T @ weights)  # ⟨g_t, d⟩
  return float(np.max(np.abs(improvement[active] * weights[active] ** power - 1.0), initial=0.0))


# --- fixed Jacobians ------------------------------------------------------------------------------------


def _jacobians() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(7)
  g = rng.normal(size=6)
  orthogonal = rng.normal(size=6)
  orthogonal -= (orthogonal @ g) / (g @ g) * g
  orthogonal /= np.linalg.norm(orthogonal)
  unit = g / np.linalg.norm(g)
  five = rng.normal(size=(5, 7))
  five[3] = -0.8 * five[0] + 0.3 * five[3]  # a conflicting pair among five
  return {
    "two_tasks": rng.normal(size=(2, 4)),
    "three_tasks": rng.normal(size=(3, 5)),
    "five_tasks": five,
    "conflicting_pair": np.stack([unit, -0.9 * unit + np.sqrt(1 - 0.81) * orthogonal]) * [[1.0], [3.0]],
    "nearly_parallel": np.stack([g, g + 1e-3 * orthogonal]),
    "one_100x": np.stack([100.0 * rng.normal(size=5), rng.normal(size=5), rng.normal(size=5)]),
    "zero_gradient": np.stack([rng.normal(size=5), np.zeros(5), rng.normal(size=5)]),
  }


JACOBIANS = _jacobians()
ALPHAS = (0.5, 2.0, 5.0)


def _tf_gramian(jacobian: np.ndarray) -> tf.Tensor:
  return tf.constant(jacobian @ jacobian.T, tf.float64)


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_nash_mtl_matches_the_reference(name):
  jacobian = JACOBIANS[name]
  want = reference_weights(jacobian, 1.0)
  assert equation_residual(jacobian, want, 1.0) < 1e-12  # the reference itself solved the equation
  got, diagnostics = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian))
  np.testing.assert_allclose(got.numpy(), want, rtol=1e-7, atol=0.0)
  assert float(diagnostics["solver_residual"]) < 1e-8
  assert float(diagnostics["update_norm"]) == pytest.approx(np.sqrt(np.count_nonzero(want)), rel=1e-8)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_fairgrad_matches_the_reference(name, alpha):
  jacobian = JACOBIANS[name]
  want = reference_weights(jacobian, 1.0 / alpha)
  assert equation_residual(jacobian, want, 1.0 / alpha) < 1e-12
  got, diagnostics = fairgrad.fairgrad_weights(_tf_gramian(jacobian), alpha=alpha)
  np.testing.assert_allclose(got.numpy(), want, rtol=1e-7, atol=0.0)
  assert float(diagnostics["solver_residual"]) < 1e-8


def test_two_tasks_nash_mtl_is_the_closed_form():
  # For T = 2 the equations give α_1‖g_1‖ = α_2‖g_2‖ = 1/√(1 + cos): d bisects the unit gradients.
  for jacobian in (JACOBIANS["two_tasks"], JACOBIANS["conflicting_pair"], JACOBIANS["nearly_parallel"]):
    norms = np.linalg.norm(jacobian, axis=1)
    cosine = jacobian[0] @ jacobian[1] / (norms[0] * norms[1])
    got, _ = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian))
    np.testing.assert_allclose(got.numpy(), 1.0 / (norms * np.sqrt(1.0 + cosine)), rtol=1e-8)


def test_nash_mtl_with_max_norm_one_reproduces_torchjds_documented_example():
  # TorchJD's NashMTL docstring example (the authors' solver, max_norm=1):
  # J = [[-4, 1, 1], [6, 1, 1]] → d ≈ (0.0542, 0.7061, 0.7061).
  jacobian = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
  weights, diagnostics = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian), max_norm=1.0)
  np.testing.assert_allclose(jacobian.T @ weights.numpy(), [0.0542, 0.7061, 0.7061], atol=6e-5)
  assert float(diagnostics["update_norm"]) == pytest.approx(np.sqrt(2.0), rel=1e-9)  # before the clip


# --- properties on random Jacobians ---------------------------------------------------------------------


def _random_jacobians(count: int = 6):
  rng = np.random.default_rng(11)
  for i in range(count):
    tasks = (2, 3, 5, 10, 4, 7)[i % 6]
    scales = np.exp(rng.normal(size=(tasks, 1)))  # norms spread over ~e^±2
    yield rng.normal(size=(tasks, tasks + 3)) * scales


def test_the_weights_solve_their_equations_and_are_positive():
  for jacobian in _random_jacobians():
    alpha, _ = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian))
    assert np.all(alpha.numpy() > 0)
    assert equation_residual(jacobian, alpha.numpy(), 1.0) <= 1e-6
    for fairness in (0.5, 2.0, 5.0):  # α = 1: test_fairgrad_with_alpha_one_is_nash_mtl
      w, _ = fairgrad.fairgrad_weights(_tf_gramian(jacobian), alpha=fairness)
      assert np.all(w.numpy() > 0)
      assert equation_residual(jacobian, w.numpy(), 1.0 / fairness) <= 1e-6, fairness


def test_fairgrad_with_alpha_one_is_nash_mtl():
  for jacobian in _random_jacobians():
    nash, _ = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian))
    fair, _ = fairgrad.fairgrad_weights(_tf_gramian(jacobian), alpha=1.0)
    np.testing.assert_allclose(fair.numpy(), nash.numpy(), rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-3, 7.0, 1e4])
def test_scale_equivariance(scale):
  # (s²G)(c·w) = (c·w)^(−p) needs s²·c^(1+p) = 1: c = s^(−2/(1+p)); Nash (p = 1): α/s; FairGrad: s^(−2α/(1+α)).
  for jacobian in list(_random_jacobians(2)) + [JACOBIANS["five_tasks"], JACOBIANS["zero_gradient"]]:
    nash, _ = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian))
    scaled, _ = nash_mtl.nash_mtl_weights(_tf_gramian(scale * jacobian))
    np.testing.assert_allclose(scaled.numpy(), nash.numpy() / scale, rtol=1e-9)
    for fairness in (0.5, 2.0):
      fair, _ = fairgrad.fairgrad_weights(_tf_gramian(jacobian), alpha=fairness)
      scaled, _ = fairgrad.fairgrad_weights(_tf_gramian(scale * jacobian), alpha=fairness)
      want = fair.numpy() * scale ** (-2.0 * fairness / (1.0 + fairness))
      np.testing.assert_allclose(scaled.numpy(), want, rtol=1e-9)


def test_nash_mtl_improves_every_task_of_a_conflicting_problem():
  jacobian = JACOBIANS["five_tasks"]
  gram = jacobian @ jacobian.T
  assert gram.min() < -0.5 * np.sqrt(gram[0, 0] * gram[3, 3])  # tasks 0 and 3 conflict
  mean = jacobian.mean(axis=0)
  assert np.min(jacobian @ mean) < 0  # the plain mean gradient hurts some task
  alpha, _ = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian))
  improvement = jacobian @ (jacobian.T @ alpha.numpy())  # ⟨g_t, d⟩
  np.testing.assert_allclose(improvement, 1.0 / alpha.numpy(), rtol=1e-8)
  assert np.all(improvement > 0)


def test_max_norm_clips_the_update_and_only_when_larger():
  jacobian = JACOBIANS["three_tasks"]
  raw, _ = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian))
  for max_norm, want_norm in ((1.0, 1.0), (0.5, 0.5), (10.0, np.sqrt(3.0))):
    clipped, diagnostics = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian), max_norm=max_norm)
    assert np.linalg.norm(jacobian.T @ clipped.numpy()) == pytest.approx(want_norm, rel=1e-9)
    np.testing.assert_allclose(clipped.numpy() / raw.numpy(), want_norm / np.sqrt(3.0), rtol=1e-9)
    assert float(diagnostics["update_norm"]) == pytest.approx(np.sqrt(3.0), rel=1e-9)
  w, diagnostics = fairgrad.fairgrad_weights(_tf_gramian(1e-4 * jacobian), alpha=2.0, max_norm=1.0)
  assert float(diagnostics["update_norm"]) > 1.0  # α > 1: small gradients, a large update
  assert np.linalg.norm(1e-4 * jacobian.T @ w.numpy()) == pytest.approx(1.0, rel=1e-9)


# --- degenerate input -----------------------------------------------------------------------------------


def test_one_task():
  g = np.array([[3.0, 4.0]])  # ‖g‖ = 5
  alpha, _ = nash_mtl.nash_mtl_weights(_tf_gramian(g))
  np.testing.assert_allclose(alpha.numpy(), [1.0 / 5.0], rtol=1e-9)  # d = g/‖g‖
  w, _ = fairgrad.fairgrad_weights(_tf_gramian(g), alpha=2.0)
  np.testing.assert_allclose(w.numpy(), [5.0 ** (-4.0 / 3.0)], rtol=1e-9)  # ‖g‖^(−2α/(1+α))


def test_identical_gradients_share_the_weight():
  g = np.array([1.0, -2.0, 0.5])
  alpha, diagnostics = nash_mtl.nash_mtl_weights(_tf_gramian(np.stack([g, g])))
  np.testing.assert_allclose(alpha.numpy(), [1.0 / (np.sqrt(2.0) * np.linalg.norm(g))] * 2, rtol=1e-9)
  assert float(diagnostics["solver_residual"]) < 1e-8


def test_zero_gradients_get_zero_weight():
  jacobian = JACOBIANS["zero_gradient"]
  alpha, _ = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian))
  without, _ = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian[[0, 2]]))
  assert alpha.numpy()[1] == 0.0
  np.testing.assert_allclose(alpha.numpy()[[0, 2]], without.numpy(), rtol=1e-12)
  zeros, diagnostics = fairgrad.fairgrad_weights(tf.zeros([3, 3], tf.float64))
  np.testing.assert_array_equal(zeros.numpy(), np.zeros(3))
  assert float(diagnostics["solver_residual"]) == 0.0


@pytest.mark.parametrize("ridge", [power_equation.DEFAULT_RIDGE, 0.0])
def test_a_pareto_stationary_point_gives_finite_weights_and_no_update(ridge):
  # Opposed gradients: no direction improves both, the equation has no solution; the ridge gives one.
  g = np.array([1.0, 2.0, -1.0])
  jacobian = np.stack([g, -g, np.array([0.5, 0.0, 0.5])])  # the third is orthogonal to g
  for weigh in (nash_mtl.nash_mtl_weights, fairgrad.fairgrad_weights):
    weights, diagnostics = weigh(_tf_gramian(jacobian), ridge=ridge)
    w = weights.numpy()
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    assert w[0] == pytest.approx(w[1], rel=1e-6)
    assert np.linalg.norm(jacobian[:2].T @ w[:2]) < 1e-5 * np.linalg.norm(g) * w[0]  # g's terms cancel
    assert float(diagnostics["solver_residual"]) > 0.9  # and the residual says the equation was not solved
    assert float(diagnostics["solver_iterations"]) < power_equation.DEFAULT_MAX_ITERATIONS
  if ridge:
    alpha, _ = nash_mtl.nash_mtl_weights(_tf_gramian(jacobian[:2]), ridge=ridge)
    # u = ρ^(−1/2) solves (C + ρI)u = 1/u when C_12 = −1; rounding leaves 1 + C_12 ~ 1e-16 against ρ.
    np.testing.assert_allclose(alpha.numpy(), ridge**-0.5 / np.linalg.norm(g), rtol=1e-6)


def test_a_non_finite_gramian_gives_nan_weights_not_an_error():
  gram = tf.constant([[1.0, np.nan], [np.nan, 1.0]], tf.float64)
  weights, diagnostics = nash_mtl.nash_mtl_weights(gram)
  assert np.all(np.isnan(weights.numpy())) and np.isnan(float(diagnostics["solver_residual"]))


# --- XLA ------------------------------------------------------------------------------------------------


def test_the_solvers_compile_under_xla_and_give_the_same_weights():
  # One compilation (XLA takes ~1 s per solver instance): Nash-MTL on five tasks, FairGrad with a zero gradient.
  five, zero = _tf_gramian(JACOBIANS["five_tasks"]), _tf_gramian(JACOBIANS["zero_gradient"])
  compiled = tf.function(
    lambda a, b: (nash_mtl.nash_mtl_weights(a)[0], fairgrad.fairgrad_weights(b, alpha=2.0)[0]), jit_compile=True
  )
  nash, fair = compiled(five, zero)
  np.testing.assert_allclose(nash.numpy(), nash_mtl.nash_mtl_weights(five)[0].numpy(), rtol=1e-12)
  np.testing.assert_allclose(fair.numpy(), fairgrad.fairgrad_weights(zero, alpha=2.0)[0].numpy(), rtol=1e-12)
  np.testing.assert_allclose(nash.numpy(), reference_weights(JACOBIANS["five_tasks"], 1.0), rtol=1e-7)


# --- training -------------------------------------------------------------------------------------------

TASKS = (tasks_lib.TaskSpec("up", tasks_lib.REGRESSION), tasks_lib.TaskSpec("down", tasks_lib.REGRESSION))
ROWS = 48


def _bundle():
  """Two regression tasks that pull the shared trunk in opposite directions."""
  rng = np.random.default_rng(5)
  x = rng.normal(size=(3 * ROWS, 4))
  labels = {"up": 2.0 * x[:, 0] + x[:, 1], "down": -2.0 * x[:, 0] + 0.5 * x[:, 2] + 1.0}
  return helpers.make_bundle(TASKS, x, labels, (ROWS, ROWS, ROWS))


def _build(tmp_path, balancer, learning_rate, steps, **overrides):
  config = helpers.make_config(
    tmp_path,
    balancer,
    hidden_units=(8,),
    batch_size=ROWS,  # full batch: every step sees the same rows
    train_steps=steps,
    optimizer=OptimizerConfig(name="sgd", learning_rate=learning_rate),
    **overrides,
  )
  return components_lib.build(config, _bundle())


def _jacobian(parts, bundle):
  """Per-task gradients of the shared variables on the whole train split (rows of J), float64."""
  loop = parts.train_loop
  features = {k: tf.constant(v) for k, v in bundle.train.features.items()}
  labels = {k: tf.constant(v) for k, v in bundle.train.labels.items()}
  shared = parts.model.shared_variables
  with tf.GradientTape(persistent=True) as tape:
    losses = loop.task_losses(labels, parts.model(features, training=True))
  rows = [np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, shared)]) for loss in losses]
  return np.stack(rows).astype(np.float64), shared


def test_a_nash_mtl_step_improves_each_task_by_one_over_its_weight(tmp_path):
  # One SGD step: the shared variables move by −lr·d; then ⟨g_t, d⟩ = 1/α_t for every task, α from the
  # reference on this step's Jacobian, although the two tasks' gradients conflict.
  learning_rate = 0.01
  parts = _build(tmp_path, "nash_mtl", learning_rate, 5)
  jacobian, shared = _jacobian(parts, _bundle())
  gram = jacobian @ jacobian.T
  assert gram[0, 1] < 0, "the tasks should conflict at initialization"
  before = np.concatenate([v.numpy().ravel() for v in shared])
  logs = parts.train_loop.run(1, rows=np.arange(ROWS, dtype=np.int32)[None])
  direction = (before - np.concatenate([v.numpy().ravel() for v in shared])) / learning_rate
  want = reference_weights(jacobian, 1.0)
  np.testing.assert_allclose(logs["weights"], want, rtol=1e-4)
  np.testing.assert_allclose(jacobian @ direction, 1.0 / want, rtol=1e-3)
  summaries = parts.balancer.summaries()
  assert float(summaries["gramian/update_norm"]) == pytest.approx(np.sqrt(2.0), rel=1e-4)
  assert float(summaries["gramian/solver_residual"]) < 1e-6


@pytest.mark.parametrize("balancer, overrides", [("nash_mtl", {}), ("fairgrad", {"fairgrad_max_norm": 1.0})])
def test_training_decreases_every_loss(tmp_path, balancer, overrides):
  parts = _build(tmp_path, balancer, 0.05, 40, **overrides)
  first = parts.train_loop.run(1)["losses"]
  last = helpers.run_loop(parts, 39)["losses"]
  assert np.all(last < 0.7 * first), (first, last)
  assert np.all(np.isfinite(parts.balancer.weights().numpy()))


def test_update_weights_every_k_reuses_the_weights_in_between(tmp_path):
  every = 3
  parts = _build(tmp_path, "nash_mtl", 0.05, 10, nash_mtl_update_weights_every=every)
  weights, iterations = [], []
  for _ in range(8):
    weights.append(parts.train_loop.run(1)["weights"])
    iterations.append(float(parts.balancer.summaries()["gramian/solver_iterations"]))
  for step in range(8):
    if step % every:
      np.testing.assert_array_equal(weights[step], weights[step - 1], err_msg=f"step {step}")
      assert iterations[step] == 0.0
    elif step:
      assert not np.allclose(weights[step], weights[step - 1], rtol=1e-6), f"step {step} should solve again"
  np.testing.assert_allclose(parts.balancer.alpha.numpy(), weights[-1], rtol=1e-6)  # the checkpointed state

"""Validity tests for MGDA (Sener & Koltun, NeurIPS 2018) and CAGrad (Liu et al., NeurIPS 2021).

  MGDA    w* = argmin_{w∈Δ} wᵀGw                                   d = Σ_t w*_t g_t
  CAGrad  w* = argmin_{w∈Δ} wᵀGb + √φ·√(wᵀGw),  φ = c²‖g0‖²,  b = 1/T   d = g0 + √φ·g_w*/‖g_w*‖

The references below are float64 NumPy, written from these formulas with other
algorithms than the package's (mtl_research/balancers/simplex.py: Wolfe's
active-set method and a parametric path):

  * MGDA: every support S is enumerated; on S the KKT system of the min-norm
    problem is solved by least squares, and the feasible KKT point of least
    norm is kept.
  * CAGrad: for s > 0 the projection of −s·g0 onto the gradients' hull is
    computed by the same enumeration, and s* with ‖u(s*)‖ = √φ·s* is found by
    200 bisection steps (‖u(s)‖/s is non-increasing). If s* = 0 (the min-norm
    point is 0 and the dual's minimum is 0) the paper's formula is 0/0; the
    package then returns the optimal direction nearest g0, the projection of g0
    onto {d : ⟨g_t, d⟩ ≥ 0 ∀t}, computed here by enumerating the active sets of
    its dual non-negative QP.

The reformulation is checked independently of both: by the primal property (d
in the ball ‖d − g0‖ ≤ c‖g0‖ and no point of the ball has a better worst-task
improvement) and by TorchJD's documented CAGrad example.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import cagrad, mgda, simplex  # registers "mgda" and "cagrad"
from mtl_research.config import OptimizerConfig
from mtl_research.train import components as components_lib

# --- float64 NumPy references ---------------------------------------------------------------------------


def ref_simplex_qp(gram: np.ndarray, linear: np.ndarray | None = None) -> np.ndarray:
  """argmin_{w∈Δ} ½wᵀGw + ℓᵀw by enumerating supports (least-squares KKT on each)."""
  num = len(gram)
  linear = np.zeros(num) if linear is None else linear
  scale = max(np.abs(gram).max(), np.abs(linear).max(), 1e-300)
  best = None
  for size in range(1, num + 1):
    for support in itertools.combinations(range(num), size):
      s = list(support)
      kkt = np.zeros((size + 1, size + 1))
      kkt[:size, :size] = gram[np.ix_(s, s)]
      kkt[:size, size] = 1.0
      kkt[size, :size] = 1.0
      rhs = np.concatenate([-linear[s], [1.0]])
      solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
      w = np.zeros(num)
      w[s] = solution[:size]
      if w.min() < -1e-12:
        continue
      w = np.maximum(w, 0.0)
      w /= w.sum()
      grad = gram @ w + linear
      if grad.min() < w @ grad - 1e-9 * scale:  # another vertex improves: not the optimum
        continue
      value = 0.5 * w @ gram @ w + linear @ w
      if best is None or value < best[0] - 1e-15 * scale:
        best = (value, w)
  assert best is not None
  return best[1]


def ref_mgda(gram, losses=None, normalization="none", update="normalized", scale="mean"):
  num = len(gram)
  norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
  losses = np.ones(num) if losses is None else np.asarray(losses, np.float64)
  n = {"none": np.ones(num), "l2": norms, "loss": losses, "loss+": losses * norms}[normalization]
  n = np.where(n > 0, n, 1.0)
  normalized = gram / np.outer(n, n)
  w = ref_simplex_qp(normalized) if np.diag(normalized).max() > 0 else np.full(num, 1.0 / num)
  w = w / n if update == "normalized" else w
  return w * (num if scale == "sum" else 1.0)


def ref_cone_projection_weights(gram: np.ndarray, mean_products: np.ndarray) -> np.ndarray:
  """μ ≥ 0 with g0 + Jᵀμ = Π_{⟨g_t,d⟩≥0}(g0): min ½μᵀGμ + μᵀ(Gb), μ ≥ 0, by enumerating active sets."""
  num = len(gram)
  best = None
  for size in range(num + 1):
    for support in itertools.combinations(range(num), size):
      s = list(support)
      mu = np.zeros(num)
      if s:
        mu[s] = np.linalg.lstsq(gram[np.ix_(s, s)], -mean_products[s], rcond=None)[0]
      if mu.min() < -1e-12 or (gram @ mu + mean_products).min() < -1e-10:
        continue
      mu = np.maximum(mu, 0.0)
      value = 0.5 * mu @ gram @ mu + mu @ mean_products
      if best is None or value < best[0] - 1e-15:
        best = (value, mu)
  assert best is not None
  return best[1]


def ref_cagrad(gram, c=0.5, rescale=0, scale="mean"):
  num = len(gram)
  gram = gram / max(np.diag(gram).max(), 1e-300)  # the weights do not depend on G's scale
  b = np.full(num, 1.0 / num)
  a = gram @ b
  radius = c * np.sqrt(max(b @ gram @ b, 0.0))
  divisor = {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale] / (num if scale == "sum" else 1.0)
  if radius == 0:
    return b / divisor

  def excess(s):  # ‖u(s)‖ − √φ·s, non-increasing in sign
    w = ref_simplex_qp(gram, s * a)
    return np.sqrt(max(w @ gram @ w, 0.0)) - radius * s, w

  if excess(1e-4)[0] <= 0:  # s* ≈ 0: the degenerate case (module docstring)
    return (b + ref_cone_projection_weights(gram, a)) / divisor
  lo, hi = 1e-4, 1.0
  while excess(hi)[0] > 0:
    hi *= 2
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if excess(mid)[0] > 0 else (lo, mid)
  assert hi > 1e-3, "s* too close to 0 for a clean reference: choose another case"
  return (b + excess(hi)[1] / hi) / divisor


# --- fixed Jacobians --------------------------------------------------------------------------------------


def _random(seed, num_tasks, dim=8):
  return np.random.default_rng(seed).normal(size=(num_tasks, dim))


def _strong_conflict():
  j = _random(1, 2)
  j[1] = -0.95 * j[0] + 0.05 * j[1]
  return j


def _nearly_parallel():
  j = _random(2, 3)
  j[1] = j[0] + 1e-3 * j[1]
  return j


def _one_large():
  j = _random(3, 3)
  j[2] *= 100.0
  return j


def _zero_gradient():
  j = _random(4, 3)
  j[1] = 0.0
  return j


def _zero_gradient_degenerate():
  # g0 = (−1/3, 1/6): task 0 conflicts with it (cos −0.89), so with c = 0.95 the hull of
  # {g_0, g_1, 0} has no point with ⟨g0, u⟩ + √φ‖u‖ < 0: s* = 0, d = Π(g0) = (0, 1/6).
  return np.array([[1.0, 0.0, 0.0], [-2.0, 0.5, 0.0], [0.0, 0.0, 0.0]])


def _duplicate():
  j = _random(5, 3)
  j[2] = j[0]
  return j


CASES = {
  "two_tasks": lambda: _random(0, 2),
  "three_tasks": lambda: _random(10, 3),
  "five_tasks": lambda: _random(11, 5),
  "strong_conflict": _strong_conflict,
  "nearly_parallel": _nearly_parallel,
  "one_task_100x": _one_large,
  "zero_gradient": _zero_gradient,
  "duplicate_gradients": _duplicate,
  "one_task": lambda: _random(6, 1),
}
# Cases whose weights are unique (G nonsingular, or every optimal w alike): compared as weights,
# the others through the direction d = Jᵀw, which is unique.
UNIQUE = ("two_tasks", "three_tasks", "five_tasks", "strong_conflict", "nearly_parallel", "one_task_100x", "one_task")


def _compare(jac, got, want, case, what):
  scale = np.linalg.norm(jac, axis=1).max()
  np.testing.assert_allclose(jac.T @ got, jac.T @ want, rtol=0, atol=1e-5 * scale, err_msg=f"{case}: {what} d")
  if case in UNIQUE:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8, err_msg=f"{case}: {what} weights")


def _mgda(jac, losses=None, **options):
  losses = None if losses is None else tf.constant(losses, tf.float32)
  weights, diagnostics = mgda.mgda_weights(tf.constant(jac @ jac.T), losses, **options)
  return weights.numpy(), {k: float(v) for k, v in diagnostics.items()}


def _cagrad(jac, **options):
  weights, diagnostics = cagrad.cagrad_weights(tf.constant(jac @ jac.T), **options)
  return weights.numpy(), {k: float(v) for k, v in diagnostics.items()}


MGDA_OPTIONS = [
  {},
  {"normalization": "l2"},
  {"normalization": "loss"},
  {"normalization": "loss+", "update": "raw"},
  {"normalization": "loss+", "scale": "sum"},
]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("options", MGDA_OPTIONS, ids=lambda o: "-".join(o.values()) or "default")
def test_mgda_matches_reference(case, options):
  jac = CASES[case]()
  losses = np.linspace(0.5, 2.0, len(jac)).astype(np.float32)  # float32, as the step's losses are
  got, diagnostics = _mgda(jac, losses, **options)
  want = ref_mgda(jac @ jac.T, losses, **options)
  _compare(jac, got, want, case, "MGDA")
  assert diagnostics["solver_residual"] < 1e-12
  # Solved, not stopped by the solver's cap of 8T + 8 iterations (a truncated solve reports the cap).
  assert 1 <= diagnostics["solver_iterations"] < 8 * len(jac) + 8


@pytest.mark.parametrize(
  "gradients, iterations, weights",
  [
    # One task: the start vertex, confirmed optimal in one major cycle.
    ([[2.0, 0.0]], 1, [1.0]),
    # The smaller gradient's vertex is optimal (⟨g2, g1⟩ = 2 ≥ ‖g1‖² = 1): one cycle, nothing improves.
    ([[1.0, 0.0], [2.0, 1.0]], 1, [1.0, 0.0]),
    # Conflicting (⟨g1, g2⟩ = −1): cycle 1 at vertex g1 adds g2 (⟨g2, g1⟩ = −1 < 1), cycle 2 solves the edge,
    # γ = ⟨g2 − g1, g2⟩ / ‖g1 − g2‖² = 2.25 / 4.25 on g1.
    ([[1.0, 0.0], [-1.0, 0.5]], 2, [2.25 / 4.25, 2.0 / 4.25]),
  ],
)
def test_min_norm_point_reports_the_cycles_it_ran(gradients, iterations, weights):
  """Wolfe's major cycles counted by hand; the solver capped at that count gives the same point."""
  jac = np.array(gradients)
  gramian = tf.constant(jac @ jac.T)
  point = simplex.min_norm_point(gramian)
  assert int(point.iterations) == iterations
  np.testing.assert_allclose(point.weights.numpy(), weights, rtol=1e-12, atol=1e-15)
  capped = simplex.min_norm_point(gramian, max_iterations=iterations)
  np.testing.assert_array_equal(capped.weights.numpy(), point.weights.numpy())


def test_mgda_two_tasks_matches_closed_form():
  """Sener & Koltun's Algorithm 1: γ = clip(⟨g2 − g1, g2⟩ / ‖g1 − g2‖², 0, 1), w = (γ, 1 − γ)."""
  for seed in range(5):
    g1, g2 = _random(20 + seed, 2)
    gamma = np.clip((g2 - g1) @ g2 / np.sum((g1 - g2) ** 2), 0.0, 1.0)
    got, _ = _mgda(np.stack([g1, g2]))
    np.testing.assert_allclose(got, [gamma, 1 - gamma], rtol=1e-10, atol=1e-12)


CAGRAD_OPTIONS = [
  {"c": 0.5},
  {"c": 0.2},
  {"c": 0.9, "rescale": 1},
  {"c": 0.5, "rescale": 2, "scale": "sum"},
  {"c": 3.0},
]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("options", CAGRAD_OPTIONS, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
def test_cagrad_matches_reference(case, options):
  jac = CASES[case]()
  got, diagnostics = _cagrad(jac, **options)
  want = ref_cagrad(jac @ jac.T, **options)
  _compare(jac, got, want, case, "CAGrad")
  assert diagnostics["solver_residual"] < 1e-10


def test_cagrad_degenerate_zero_gradient_returns_nearest_optimal_direction():
  jac = _zero_gradient_degenerate()
  got, diagnostics = _cagrad(jac, c=0.95)
  np.testing.assert_allclose(jac.T @ got, [0.0, 1.0 / 6.0, 0.0], atol=1e-12)
  _compare(jac, got, ref_cagrad(jac @ jac.T, c=0.95), "degenerate", "CAGrad")
  assert diagnostics["solver_residual"] < 1e-12
  # With a smaller ball the hull has improving points again: the ordinary formula, d on the sphere.
  got, _ = _cagrad(jac, c=0.5)
  g0 = jac.mean(axis=0)
  assert np.linalg.norm(jac.T @ got - g0) == pytest.approx(0.5 * np.linalg.norm(g0), rel=1e-9)
  _compare(jac, got, ref_cagrad(jac @ jac.T, c=0.5), "degenerate", "CAGrad c=0.5")


def test_cagrad_matches_torchjd_documented_example():
  """torchjd.aggregation.CAGrad(c=0.5) on J = [[-4, 1, 1], [6, 1, 1]] gives [0.1835, 1.2041, 1.2041] (its docs)."""
  jac = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
  got, _ = _cagrad(jac, c=0.5)
  np.testing.assert_allclose(jac.T @ got, [0.1835, 1.2041, 1.2041], atol=1e-4)


def test_all_zero_gradients_give_mean_weights():
  zero = np.zeros((3, 4))
  np.testing.assert_array_equal(_mgda(zero)[0], np.full(3, 1 / 3))
  np.testing.assert_array_equal(_cagrad(zero)[0], np.full(3, 1 / 3))


# --- the properties that define the methods, on random Jacobians ------------------------------------------


def _random_jacobians(count=25):
  rng = np.random.default_rng(123)
  for _ in range(count):
    num_tasks = int(rng.integers(2, 7))
    jac = rng.normal(size=(num_tasks, int(rng.integers(num_tasks, 13))))
    yield jac * np.exp(rng.normal(size=(num_tasks, 1)))  # norms spread over ~e^±2


def test_mgda_satisfies_kkt_conditions():
  """w ∈ Δ, (Gw)_t ≥ wᵀGw for all t, with equality where w_t > 0: the min-norm point's KKT conditions."""
  for jac in _random_jacobians():
    gram = jac @ jac.T
    w, _ = _mgda(jac)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-12)
    products, value = gram @ w, w @ gram @ w
    tol = 1e-10 * np.diag(gram).max()
    assert products.min() >= value - tol
    np.testing.assert_allclose(products[w > 1e-9], value, atol=tol)


def test_cagrad_maximizes_worst_improvement_within_the_ball():
  """‖d − g0‖ ≤ c‖g0‖, and min_t ⟨g_t, d⟩ ≥ min_t ⟨g_t, d'⟩ for random d' in the ball (g0 and its boundary too)."""
  rng = np.random.default_rng(7)
  for jac in _random_jacobians(12):
    for c in (0.2, 0.5, 0.9):
      w, _ = _cagrad(jac, c=c)
      d, g0 = jac.T @ w, jac.mean(axis=0)
      radius = c * np.linalg.norm(g0)
      assert np.linalg.norm(d - g0) <= radius * (1 + 1e-9)
      worst = (jac @ d).min()
      directions = rng.normal(size=(400, jac.shape[1]))
      directions /= np.linalg.norm(directions, axis=1, keepdims=True)
      lengths = np.concatenate([np.ones(200), rng.uniform(size=200) ** (1 / jac.shape[1])])
      others = g0 + radius * lengths[:, None] * directions
      others = np.vstack([others, g0])
      assert worst >= (others @ jac.T).min(axis=1).max() - 1e-12 * np.linalg.norm(jac, axis=1).max() ** 2


def test_cagrad_with_c_zero_is_the_mean_gradient():
  for jac in _random_jacobians(5):
    num = len(jac)
    np.testing.assert_allclose(_cagrad(jac, c=0.0)[0], np.full(num, 1 / num), atol=1e-15)
    np.testing.assert_allclose(_cagrad(jac, c=0.0, rescale=1, scale="sum")[0], np.ones(num), atol=1e-15)


def test_cagrad_rescale_and_scale_multiply_the_update():
  jac = _random(30, 4)
  base, _ = _cagrad(jac, c=0.7)
  np.testing.assert_allclose(_cagrad(jac, c=0.7, rescale=1)[0], base / (1 + 0.49), rtol=1e-12)
  np.testing.assert_allclose(_cagrad(jac, c=0.7, rescale=2)[0], base / 1.7, rtol=1e-12)
  np.testing.assert_allclose(_cagrad(jac, c=0.7, scale="sum")[0], base * 4, rtol=1e-12)


def test_cagrad_with_large_c_approaches_mgda():
  """The paper (§3.2): as c → ∞ the direction turns to MGDA's min-norm direction."""
  for jac in _random_jacobians(5):
    d_cagrad, d_mgda = jac.T @ _cagrad(jac, c=1e4)[0], jac.T @ _mgda(jac)[0]
    cosine = d_cagrad @ d_mgda / (np.linalg.norm(d_cagrad) * np.linalg.norm(d_mgda))
    assert cosine > 1 - 1e-6


# --- XLA -----------------------------------------------------------------------------------------------------


def test_solvers_compile_under_xla_and_agree():
  jac = _random(40, 5)
  jac[1] = -0.9 * jac[0] + 0.1 * jac[1]
  gram = tf.constant(jac @ jac.T)
  losses = tf.constant([0.5, 1.0, 1.5, 2.0, 2.5], tf.float32)
  compiled_mgda = tf.function(lambda g, loss: mgda.mgda_weights(g, loss, normalization="loss+")[0], jit_compile=True)
  compiled_cagrad = tf.function(lambda g: cagrad.cagrad_weights(g, c=0.5)[0], jit_compile=True)
  np.testing.assert_allclose(
    compiled_mgda(gram, losses).numpy(),
    mgda.mgda_weights(gram, losses, normalization="loss+")[0].numpy(),
    rtol=1e-9,
    atol=1e-14,
  )
  np.testing.assert_allclose(compiled_cagrad(gram).numpy(), cagrad.cagrad_weights(gram)[0].numpy(), rtol=1e-9)


# --- training ------------------------------------------------------------------------------------------------

TASKS2 = (tasks_lib.TaskSpec("left", tasks_lib.REGRESSION), tasks_lib.TaskSpec("right", tasks_lib.REGRESSION))
ROWS = np.arange(32, dtype=np.int32)
STEPS = 30


def _conflicting_bundle():
  """A one-unit trunk that both tasks want, for opposite signs of the same input: their trunk gradients conflict."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(96, 4))
  labels = {"left": 3 * x[:, 0] + x[:, 2], "right": -3 * x[:, 0] + x[:, 3]}
  return helpers.make_bundle(TASKS2, x, labels, (32, 32, 32))


def _build(tmp_path, bundle, balancer, lr=0.02, **overrides):
  config = helpers.make_config(
    tmp_path / balancer,
    balancer,
    hidden_units=(1,),
    batch_size=len(ROWS),
    train_steps=STEPS,
    seed=1,
    optimizer=OptimizerConfig(name="sgd", learning_rate=lr),
    **overrides,
  )
  return components_lib.build(config, bundle)


def _batch_losses(parts, bundle):
  """The tasks' mean squared errors on ROWS, from the model's outputs (not from the step)."""
  features = {"numeric": tf.constant(bundle.train.features["numeric"][ROWS])}
  outputs = parts.model(features, training=True)
  return np.array([np.mean((outputs[t.name].numpy()[:, 0] - bundle.train.labels[t.name][ROWS]) ** 2) for t in TASKS2])


def test_mgda_training_step_increases_no_task_loss(tmp_path):
  """SGD on one batch: under MGDA no task's loss rises at any step (⟨g_t, d⟩ ≥ 0 for all t);
  with equal weights one does, so the tasks do conflict."""
  bundle = _conflicting_bundle()
  rises = {}
  for balancer in ("fixed", "mgda"):
    parts = _build(tmp_path, bundle, balancer)
    losses = [_batch_losses(parts, bundle)]
    for _ in range(STEPS):
      parts.train_loop.run(1, rows=ROWS[None])
      losses.append(_batch_losses(parts, bundle))
      if balancer == "mgda":  # first order: the update's inner product with every task gradient
        gram, weights = parts.balancer._gramian.numpy(), parts.balancer.weights().numpy()
        assert (gram @ weights).min() >= -1e-6 * np.diag(gram).max()
    rises[balancer] = np.diff(np.array(losses), axis=0).max(axis=0)
  assert rises["fixed"].max() > 1e-3, rises
  assert rises["mgda"].max() <= 0.0, rises


def test_cagrad_step_improves_worst_task_more_than_mean_gradient(tmp_path):
  """From the same parameters, on the same batch: CAGrad's step lowers the worst task's loss at least as
  much as the mean gradient's (equal weights 1/T) at every step, strictly at conflicting ones, and its
  direction stays in the ball ‖d − g0‖ ≤ c‖g0‖."""
  bundle = _conflicting_bundle()
  cagrad_parts = _build(tmp_path, bundle, "cagrad")
  mean_parts = _build(tmp_path, bundle, "fixed", task_weights={"left": 0.5, "right": 0.5})
  margins = []
  for _ in range(STEPS):
    for mine, theirs in zip(cagrad_parts.model.variables, mean_parts.model.variables):
      theirs.assign(mine)
    before = _batch_losses(cagrad_parts, bundle)
    cagrad_parts.train_loop.run(1, rows=ROWS[None])
    mean_parts.train_loop.run(1, rows=ROWS[None])
    worst_cagrad = (_batch_losses(cagrad_parts, bundle) - before).max()
    worst_mean = (_batch_losses(mean_parts, bundle) - before).max()
    gram, weights = cagrad_parts.balancer._gramian.numpy(), cagrad_parts.balancer.weights().numpy()
    mean = np.full(2, 0.5)
    assert (weights - mean) @ gram @ (weights - mean) <= 0.25 * (mean @ gram @ mean) * (1 + 1e-5)
    conflicting = (gram @ mean).min() < 0
    margins.append((worst_mean - worst_cagrad, conflicting))
  margins = np.array(margins)
  assert margins[:, 0].min() >= 0, margins
  assert margins[:, 1].sum() >= STEPS // 2 and margins[margins[:, 1] == 1, 0].min() > 1e-4, margins

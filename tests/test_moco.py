"""MoCo (Fernando et al., ICLR 2023), `--balancer=moco`: Y and λ trajectories against a float64 NumPy reference
written from Algorithm 1 over 10 steps (both λ updates, with and without the code's normalization), the simplex
projection against a reference, λ's fixed point = MGDA's min-norm weights, a training run, exact resume."""

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
from mtl_research.balancers import moco
from mtl_research.train import components as components_lib

SHAPES = [(2, 3), (5,)]
DEFAULTS = dict(beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0)


def ref_project(v):
  """argmin_{w∈Δ} ‖w − v‖² by bisection on θ in Σ max(v − θ, 0) = 1 (not the sort formula)."""
  lo, hi = v.min() - 1.0, v.max()
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if np.maximum(v - mid, 0).sum() > 1 else (lo, mid)
  return np.maximum(v - 0.5 * (lo + hi), 0)


def ref_moco(jacobians, losses, beta, beta_sigma, gamma, gamma_sigma, rho, lambda_update="projection", normalize=False):
  num = jacobians[0].shape[0]
  y, lam, out = np.zeros_like(jacobians[0]), np.full(num, 1.0 / num), []
  for k, (jac, loss) in enumerate(zip(jacobians, losses), start=1):
    g = jac / (np.linalg.norm(jac, axis=1, keepdims=True) + 1e-8) * loss[:, None] if normalize else jac
    y = y - beta / k**beta_sigma * (y - g)
    moved = lam - gamma / k**gamma_sigma * ((y @ y.T + rho * np.eye(num)) @ lam)
    lam = ref_project(moved) if lambda_update == "projection" else np.exp(moved) / np.exp(moved).sum()
    out.append((y.copy(), lam.copy(), lam @ y))
  return out


def _split(vector):
  parts, start = [], 0
  for shape in SHAPES:
    size = int(np.prod(shape))
    parts.append(vector[..., start : start + size].reshape(vector.shape[:-1] + shape))
    start += size
  return parts


def _sequence(case, num_tasks):
  rng = np.random.default_rng({"random": 0, "conflict": 1, "100x": 2, "zero": 3}[case] + 7 * num_tasks)
  jacobians, losses = [], []
  for _ in range(10):
    jac = rng.normal(size=(num_tasks, 11))
    if case == "conflict":
      jac[1] = -0.9 * jac[0] + 0.1 * jac[1]
    elif case == "100x":
      jac[-1] *= 100.0
    elif case == "zero":
      jac[0] = 0.0
    jacobians.append(jac)
    losses.append(rng.uniform(0.2, 3.0, size=num_tasks))
  return jacobians, losses


@pytest.mark.parametrize("case", ["random", "conflict", "100x", "zero"])
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("lambda_update, normalize", list(itertools.product(moco.LAMBDA_UPDATES, (False, True))))
def test_ten_steps_match_the_reference(case, num_tasks, lambda_update, normalize):
  jacobians, losses = _sequence(case, num_tasks)
  options = dict(DEFAULTS, rho=0.01, lambda_update=lambda_update, normalize=normalize)
  want = ref_moco(jacobians, losses, **options)
  tracked = [tf.zeros((num_tasks, *shape)) for shape in SHAPES]
  lam = tf.fill([num_tasks], 1.0 / num_tasks)
  for step, (jac, loss) in enumerate(zip(jacobians, losses)):
    grads = [tuple(tf.constant(p, tf.float32) for p in _split(row)) for row in jac]
    tracked, lam, combined = moco.moco_step(
      tracked, lam, grads, tf.constant(loss, tf.float32), tf.constant(step, tf.int64), **options
    )
    ref_y, ref_lam, ref_update = want[step]
    scale = np.abs(ref_y).max()
    for got, ref in zip(tracked, _split(ref_y)):
      np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(lam.numpy(), ref_lam, rtol=1e-5, atol=1e-6)
    for got, ref in zip(combined, _split(ref_update)):
      np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-5 * scale)


def test_simplex_projection_matches_the_reference():
  rng = np.random.default_rng(0)
  for num in (1, 2, 3, 5, 8):
    for _ in range(20):
      v = rng.normal(size=num) * rng.choice([0.01, 1.0, 100.0])
      got = moco.project_to_simplex(tf.constant(v, tf.float64)).numpy()
      np.testing.assert_allclose(got, ref_project(v), atol=1e-10)
      assert got.min() >= 0 and abs(got.sum() - 1) < 1e-12


def _min_norm_weights(gram):
  """argmin_{w∈Δ} wᵀGw by enumerating supports (independent of MoCo's iteration)."""
  num, best = len(gram), None
  for size in range(1, num + 1):
    for support in itertools.combinations(range(num), size):
      s = list(support)
      kkt = np.block([[gram[np.ix_(s, s)], np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
      w = np.zeros(num)
      w[s] = np.linalg.lstsq(kkt, np.r_[np.zeros(size), 1.0], rcond=None)[0][:size]
      if w.min() >= -1e-12 and (best is None or w @ gram @ w < best @ gram @ best - 1e-15):
        best = np.maximum(w, 0)
  return best


def test_weights_converge_to_mgda_with_exact_tracking():
  """β = 1 (Y = this step's gradients), fixed gradients, constant γ: λ's projected gradient steps converge to
  the min-norm point of the gradients' hull, MGDA's weights (the property MoCo is built on)."""
  rng = np.random.default_rng(3)
  jac = rng.normal(size=(3, 11))
  jac[1] = -0.5 * jac[0] + 0.5 * jac[1]
  grads = [tuple(tf.constant(p, tf.float32) for p in _split(row)) for row in jac]
  tracked = [tf.zeros((3, *shape)) for shape in SHAPES]
  lam = tf.fill([3], 1.0 / 3)
  gamma = 0.5 / np.linalg.eigvalsh(jac @ jac.T).max()
  options = dict(beta=1.0, beta_sigma=0.0, gamma=gamma, gamma_sigma=0.0, rho=0.0)
  for step in range(3000):
    tracked, lam, _ = moco.moco_step(tracked, lam, grads, tf.ones([3]), tf.constant(step, tf.int64), **options)
  np.testing.assert_allclose(lam.numpy(), _min_norm_weights(jac @ jac.T), atol=1e-4)


TASKS = (tasks_lib.TaskSpec("a", tasks_lib.REGRESSION), tasks_lib.TaskSpec("b", tasks_lib.REGRESSION))


def test_training_weights_stay_on_the_simplex_and_both_tasks_learn(tmp_path):
  """On two tasks that compete for a narrow trunk, MoCo keeps λ on the simplex, moves it off the uniform start
  toward the min-norm combination of the tracked gradients (more weight on the smaller one), and both losses
  fall."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(700, 5))
  labels = {"a": np.tanh(x[:, 0] + x[:, 1]), "b": 3.0 * np.tanh(x[:, 0] - x[:, 2])}
  bundle = helpers.make_bundle(TASKS, x, labels, (500, 100, 100))
  config = helpers.make_config(tmp_path / "run", "moco", hidden_units=(4,), batch_size=32, train_steps=400)
  parts = components_lib.build(config, bundle)
  first = np.asarray(helpers.run_loop(parts, 10)["losses"])
  for _ in range(39):
    logs = helpers.run_loop(parts, 10)
    lam = np.asarray(logs["weights"])
    assert lam.min() >= 0 and abs(lam.sum() - 1) < 1e-5, lam
  norms = parts.balancer.summaries()["moco/tracked_norm"].numpy()
  # The min-norm combination leans on the task with the smaller tracked gradient.
  assert lam[np.argmin(norms)] > 0.55, (lam, norms)
  assert np.all(np.asarray(logs["losses"]) < 0.95 * first), (first, logs["losses"])

"""GradVac (Wang et al., ICLR 2021), `--balancer=gradvac`: against a NumPy reference that modifies the gradient
vectors themselves (Eq. 2) in the same drawn orders, with the targets' trajectory over 10 steps, both
granularities; its defining property (a modified cosine equals the target); training and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import gradient_surgery, gradient_vaccine
from mtl_research.train import components as components_lib


def ref_gradvac(jac, targets, orders, beta):
  """Eq. 2 on the vectors; returns (Σ_i g_i, new targets)."""
  targets = targets.copy()
  out = []
  for i in range(len(jac)):
    g = jac[i].copy()
    for j in orders[i]:
      if j == i:
        continue
      norm_g, norm_j = np.linalg.norm(g), np.linalg.norm(jac[j])
      cos = g @ jac[j] / (norm_g * norm_j) if norm_g > 0 and norm_j > 0 else 0.0
      target = targets[i, j]
      if cos < target and norm_j > 0 and abs(target) < 1:
        g = (
          g
          + norm_g
          * (target * np.sqrt(1 - cos**2) - cos * np.sqrt(1 - target**2))
          / (norm_j * np.sqrt(1 - target**2))
          * jac[j]
        )
      targets[i, j] = (1 - beta) * target + beta * cos
    out.append(g)
  return np.sum(out, axis=0), targets


def _jacobians(case, num_tasks):
  rng = np.random.default_rng({"random": 0, "conflict": 1, "100x": 2, "zero": 3, "parallel": 4}[case] + num_tasks)
  out = []
  for _ in range(10):
    jac = rng.normal(size=(num_tasks, 9))
    if case == "conflict":
      jac[1] = -0.9 * jac[0] + 0.1 * jac[1]
    elif case == "100x":
      jac[-1] *= 100.0
    elif case == "zero":
      jac[0] = 0.0
    elif case == "parallel":
      jac[1] = jac[0] + 1e-3 * jac[1]
    out.append(jac)
  return out


@pytest.mark.parametrize("case", ["random", "conflict", "100x", "zero", "parallel"])
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("beta", [0.5, 0.01])
def test_ten_steps_match_the_reference(case, num_tasks, beta):
  targets = np.zeros((num_tasks, num_tasks))
  tf_targets = tf.zeros((num_tasks, num_tasks), tf.float64)
  for step, jac in enumerate(_jacobians(case, num_tasks)):
    orders = gradient_surgery.draw_orders(tf.constant([2, step], tf.int64), num_tasks)
    weights, tf_targets, _ = gradient_vaccine.vaccinate(tf.constant(jac @ jac.T), tf_targets, orders, beta)
    want, targets = ref_gradvac(jac, targets, orders.numpy(), beta)
    np.testing.assert_allclose(tf_targets.numpy(), targets, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jac.T @ weights.numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_a_modified_cosine_equals_its_target():
  """Two tasks, target 0.5, current cosine below it: after the change cos(g_0', g_1) = 0.5 exactly (Eq. 2's
  purpose), and the pair whose cosine is above its target is left alone."""
  rng = np.random.default_rng(3)
  for _ in range(50):
    jac = rng.normal(size=(2, 6))
    targets = np.array([[0.0, 0.5], [0.5, 0.0]])
    orders = tf.constant([[0, 1], [1, 0]])
    weights, _, _ = gradient_vaccine.vaccinate(tf.constant(jac @ jac.T), tf.constant(targets), orders, 0.5)
    weights = weights.numpy()
    cos = jac[0] @ jac[1] / np.linalg.norm(jac[0]) / np.linalg.norm(jac[1])
    if cos < 0.5:
      # Row i's coefficients: g_0' = g_0 + c·g_1, g_1' = g_1 + c'·g_0; the sum's weights are (1 + c', 1 + c).
      c = weights[1] - 1.0
      g0 = jac[0] + c * jac[1]
      np.testing.assert_allclose(g0 @ jac[1] / np.linalg.norm(g0) / np.linalg.norm(jac[1]), 0.5, atol=1e-9)
    else:
      np.testing.assert_allclose(weights, [1.0, 1.0])


TASKS = (tasks_lib.TaskSpec("a", tasks_lib.REGRESSION), tasks_lib.TaskSpec("b", tasks_lib.REGRESSION))


@pytest.mark.parametrize("granularity", gradient_vaccine.GRANULARITIES)
def test_training_targets_track_the_cosines(tmp_path, granularity):
  """A narrow trunk two tasks pull apart: one target per group (all shared variables, or each), moved off their
  start (0) by the cosines the run saw; the checkpointed targets are those `update` committed."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 4))
  bundle = helpers.make_bundle(TASKS, x, {"a": x[:, 0] + x[:, 1], "b": x[:, 0] - x[:, 1]}, (400, 100, 100))
  config = helpers.make_config(
    tmp_path / "run", "gradvac", hidden_units=(1,), batch_size=32, train_steps=200, gradvac_granularity=granularity
  )
  parts = components_lib.build(config, bundle)
  for _ in range(20):
    logs = helpers.run_loop(parts, 10)
  targets = parts.balancer.targets.numpy()
  assert targets.shape[0] == (len(parts.model.shared_variables) if granularity == "per_variable" else 1)
  assert np.abs(targets).max() > 0.01, targets
  mean = float(parts.balancer.summaries()["gradvac/target_cosine"])
  off = ~np.eye(2, dtype=bool)
  np.testing.assert_allclose(mean, targets[:, off].mean(), rtol=1e-5)
  assert np.all(np.isfinite(np.asarray(logs["weights"])))


def test_beta_above_one_is_refused():
  from mtl_research.errors import UserError  # pylint: disable=g-import-not-at-top

  with pytest.raises(UserError, match="--gradvac_beta"):
    gradient_vaccine.GradVac(TASKS, helpers.balancer_params("gradvac", gradvac_beta=1.5), None)

"""ConFIG (Liu, Chu & Thuerey, ICLR 2025), `--balancer=config`: against a NumPy reference that solves
(Uᵀ)v = 1 by least squares on the unit vectors, its defining property (equal positive projections on every unit
gradient), and a training run."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import config_direction
from mtl_research.train import components as components_lib


def ref_config(jac):
  """v = lstsq(Uᵀ, 1) over the nonzero gradients; d = (Σ g_tᵀv̂)·v̂."""
  present = np.linalg.norm(jac, axis=1) > 0
  units = jac[present] / np.linalg.norm(jac[present], axis=1, keepdims=True)
  v = np.linalg.lstsq(units, np.ones(len(units)), rcond=None)[0]
  v_hat = v / np.linalg.norm(v)
  return (jac @ v_hat).sum() * v_hat


CASES = {
  "two": lambda r: r.normal(size=(2, 8)),
  "three": lambda r: r.normal(size=(3, 8)),
  "five": lambda r: r.normal(size=(5, 8)),
  "conflict": lambda r: (lambda j: np.stack([j[0], -0.9 * j[0] + 0.1 * j[1]]))(r.normal(size=(2, 8))),
  "parallel": lambda r: (lambda j: np.stack([j[0], j[0] + 1e-3 * j[1]]))(r.normal(size=(2, 8))),
  "100x": lambda r: r.normal(size=(3, 8)) * np.array([[1.0], [1.0], [100.0]]),
  "zero": lambda r: r.normal(size=(3, 8)) * np.array([[1.0], [0.0], [1.0]]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_the_reference(case):
  jac = CASES[case](np.random.default_rng(sorted(CASES).index(case)))
  weights, diagnostics = config_direction.config_weights(tf.constant(jac @ jac.T))
  want = ref_config(jac)
  tolerance = 1e-3 if case == "parallel" else 1e-7  # nearly parallel: K is ill-conditioned (cond ~ 1e7)
  np.testing.assert_allclose(jac.T @ weights.numpy(), want, rtol=tolerance, atol=tolerance * np.abs(want).max())
  if case == "zero":
    assert weights.numpy()[1] == 0.0


def test_projections_on_unit_gradients_are_equal_and_positive():
  rng = np.random.default_rng(7)
  for num in (2, 3, 4, 6):
    for _ in range(20):
      jac = rng.normal(size=(num, 10)) * rng.uniform(0.01, 100, size=(num, 1))
      weights, diagnostics = config_direction.config_weights(tf.constant(jac @ jac.T))
      d = jac.T @ weights.numpy()
      projections = (jac / np.linalg.norm(jac, axis=1, keepdims=True)) @ d
      assert projections.min() > 0
      np.testing.assert_allclose(projections, projections.mean(), rtol=1e-6)
      assert diagnostics["config_spread"].numpy() < 1e-6 and diagnostics["config_cosine"].numpy() > 0
      # The length: the sum of the gradients' projections on the direction.
      np.testing.assert_allclose(np.linalg.norm(d), (jac @ d).sum() / np.linalg.norm(d), rtol=1e-8)


TASKS = (tasks_lib.TaskSpec("a", tasks_lib.REGRESSION), tasks_lib.TaskSpec("b", tasks_lib.REGRESSION))


def test_training_steps_never_ascend_a_task_to_first_order(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 4))
  labels = {"a": x[:, 0] + x[:, 1], "b": x[:, 0] - x[:, 1]}  # one trunk unit cannot serve both
  bundle = helpers.make_bundle(TASKS, x, labels, (400, 100, 100))
  config = helpers.make_config(tmp_path / "run", "config", hidden_units=(1,), batch_size=32, train_steps=200)
  parts = components_lib.build(config, bundle)
  first = np.asarray(helpers.run_loop(parts, 1)["losses"])
  for _ in range(199):
    logs = helpers.run_loop(parts, 1)
    gram, weights = parts.balancer._gramian.numpy(), np.asarray(logs["weights"], np.float64)
    assert (gram @ weights).min() >= -1e-5 * np.diag(gram).max()
  assert np.sum(logs["losses"]) < 0.9 * first.sum(), (first, logs["losses"])

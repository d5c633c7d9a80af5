"""DB-MTL (Lin et al. 2023), `--balancer=db_mtl`: the EMA trajectory and each step's update against a
float64 NumPy reference written from the paper/authors' formulas over 10 steps, the defining property
(equal contribution norms), scale invariance, a training run, XLA and exact resume (test_balancer_resume)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import db_mtl
from mtl_research.train import components as components_lib

SHAPES = [(3, 2), (4,)]  # two shared variables


def ref_db_mtl(jacobians, losses, beta, sigma):
  """Flattened reference: ĝ ← β_k ĝ + (1−β_k) J/(L+ε); α = max‖ĝ‖/(‖ĝ‖+ε); update αᵀĝ. Per step (ĝ, α, update)."""
  average = np.zeros_like(jacobians[0])
  out = []
  for k, (jac, loss) in enumerate(zip(jacobians, losses), start=1):
    rate = beta / k**sigma
    average = rate * average + (1 - rate) * jac / (loss[:, None] + 1e-8)
    norms = np.linalg.norm(average, axis=1)
    alpha = norms.max() / (norms + 1e-8)
    out.append((average.copy(), alpha, alpha @ average))
  return out


def _split(vector):
  parts, start = [], 0
  for shape in SHAPES:
    size = int(np.prod(shape))
    parts.append(vector[..., start : start + size].reshape(vector.shape[:-1] + shape))
    start += size
  return parts


def _sequence(case, num_tasks, steps=10):
  rng = np.random.default_rng({"random": 0, "conflict": 1, "100x": 2, "zero": 3}[case] + 10 * num_tasks)
  size = sum(int(np.prod(s)) for s in SHAPES)
  jacobians, losses = [], []
  for _ in range(steps):
    jac = rng.normal(size=(num_tasks, size))
    if case == "conflict":
      jac[1] = -0.9 * jac[0] + 0.1 * jac[1]
    elif case == "100x":
      jac[-1] *= 100.0
    elif case == "zero":
      jac[0] = 0.0
    jacobians.append(jac)
    losses.append(rng.uniform(0.1, 5.0, size=num_tasks))
  return jacobians, losses


@pytest.mark.parametrize("case", ["random", "conflict", "100x", "zero"])
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("beta, sigma", [(0.9, 0.0), (0.5, 0.5)])
def test_ten_steps_match_the_reference(case, num_tasks, beta, sigma):
  jacobians, losses = _sequence(case, num_tasks)
  want = ref_db_mtl(jacobians, losses, beta, sigma)
  averages = [tf.zeros((num_tasks, *shape)) for shape in SHAPES]
  for step, (jac, loss) in enumerate(zip(jacobians, losses)):
    grads = [tuple(tf.constant(p, tf.float32) for p in _split(row)) for row in jac]
    averages, alpha, norms, combined = db_mtl.db_mtl_step(
      averages, grads, tf.constant(loss, tf.float32), tf.constant(step, tf.int64), beta, sigma
    )
    ref_average, ref_alpha, ref_update = want[step]
    scale = np.abs(ref_average).max()
    for got, ref in zip(averages, _split(ref_average)):
      np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(alpha.numpy(), ref_alpha, rtol=1e-5)
    np.testing.assert_allclose(norms.numpy(), np.linalg.norm(ref_average, axis=1), rtol=1e-5, atol=1e-7 * scale)
    for got, ref in zip(combined, _split(ref_update)):
      np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-5 * np.abs(ref_update).max())


def test_every_contribution_has_the_largest_norm_and_loss_scales_do_not_matter():
  rng = np.random.default_rng(5)
  grads = [tuple(tf.constant(p, tf.float32) for p in _split(rng.normal(size=(10,)) * s)) for s in (1.0, 50.0, 0.1)]
  losses = tf.constant([0.5, 20.0, 3.0])
  zeros = [tf.zeros((3, *shape)) for shape in SHAPES]
  averages, alpha, norms, _ = db_mtl.db_mtl_step(zeros, grads, losses, tf.constant(0, tf.int64), 0.9, 0.0)
  contributions = alpha.numpy() * norms.numpy()
  np.testing.assert_allclose(contributions, norms.numpy().max(), rtol=1e-5)
  # L_t → c·L_t (and so ∇L_t → c·∇L_t) leaves log L's gradient, hence the update, unchanged.
  scaled = [tuple(g * c for g in task) for task, c in zip(grads, (10.0, 0.01, 3.0))]
  _, _, _, again = db_mtl.db_mtl_step(
    zeros, scaled, losses * tf.constant([10.0, 0.01, 3.0]), tf.constant(0, tf.int64), 0.9, 0.0
  )
  _, _, _, first = db_mtl.db_mtl_step(zeros, grads, losses, tf.constant(0, tf.int64), 0.9, 0.0)
  for a, b in zip(again, first):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4)


TASKS = (tasks_lib.TaskSpec("small", tasks_lib.REGRESSION), tasks_lib.TaskSpec("large", tasks_lib.REGRESSION))


def test_training_the_small_scale_task_learns_as_well_as_the_large_one(tmp_path):
  """Targets on scales 1 and 100 (raw): under `fixed` the large task's gradient dominates the trunk and the
  small task's loss falls far less (relative to its start) than under DB-MTL, which balances the two."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(900, 6))
  labels = {"small": np.tanh(x[:, 0] - x[:, 1]), "large": 100.0 * np.tanh(x[:, 2] + x[:, 3])}
  bundle = helpers.make_bundle(TASKS, x, labels, (600, 150, 150))
  relative = {}
  for name in ("fixed", "db_mtl"):
    config = helpers.make_config(tmp_path / name, name, hidden_units=(16, 8), batch_size=32, train_steps=600)
    parts = components_lib.build(config, bundle)
    first = np.asarray(helpers.run_loop(parts, 20)["losses"])
    last = np.asarray(helpers.run_loop(parts, 580)["losses"])
    relative[name] = last / first
  assert relative["db_mtl"][0] < 0.8 * relative["fixed"][0], relative


def test_reported_weights_are_the_scaling_of_the_step(tmp_path):
  bundle = helpers.make_bundle(TASKS, *_toy())
  config = helpers.make_config(tmp_path / "run", "db_mtl", hidden_units=(8,), batch_size=16, train_steps=5)
  parts = components_lib.build(config, bundle)
  logs = helpers.run_loop(parts, 1)
  norms = parts.balancer.summaries()["db_mtl/ema_norm"].numpy()
  np.testing.assert_allclose(np.asarray(logs["weights"]), norms.max() / (norms + 1e-8), rtol=1e-6)
  assert len(parts.balancer.averages) == len(parts.model.shared_variables)


def _toy():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(96, 3))
  return x, {"small": x[:, 0], "large": 10 * x[:, 1]}, (64, 16, 16)

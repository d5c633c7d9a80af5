"""ExcessMTL (He et al., ICML 2024), `--balancer=excess_mtl`: accumulators, excess-risk estimates and weights
against a float64 NumPy reference written from the paper/authors' formulas over 10 steps, the weights' defining
properties, a noisy-task training run, exact resume (test_balancer_resume)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import excess_mtl
from mtl_research.train import components as components_lib

SHAPES = [(3, 2), (4,)]


def ref_excess_mtl(jacobians, step_size):
  num = jacobians[0].shape[0]
  acc, w, initial, out = np.zeros_like(jacobians[0]), np.ones(num), None, []
  for k, jac in enumerate(jacobians):
    acc = acc + jac**2
    excess = np.array([g @ (g / np.sqrt(h + 1e-7)) for g, h in zip(jac, acc)])
    if k == 0:
      initial = excess
    else:
      ratio = np.where(initial > 0, excess / np.where(initial > 0, initial, 1.0), 0.0)
      w = w * np.exp(step_size * ratio)
      w = num * w / w.sum()
    out.append((acc.copy(), w.copy(), w @ jac))
  return out


def _split(vector):
  parts, start = [], 0
  for shape in SHAPES:
    size = int(np.prod(shape))
    parts.append(vector[..., start : start + size].reshape(vector.shape[:-1] + shape))
    start += size
  return parts


@pytest.mark.parametrize("case", ["random", "conflict", "100x", "zero"])
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("step_size", [0.01, 0.5])
def test_ten_steps_match_the_reference(case, num_tasks, step_size):
  rng = np.random.default_rng({"random": 0, "conflict": 1, "100x": 2, "zero": 3}[case] + 5 * num_tasks)
  jacobians = []
  for _ in range(10):
    jac = rng.normal(size=(num_tasks, 10)) * rng.uniform(0.5, 2.0, size=(num_tasks, 1))
    if case == "conflict":
      jac[1] = -0.9 * jac[0] + 0.1 * jac[1]
    elif case == "100x":
      jac[-1] *= 100.0
    elif case == "zero":
      jac[0] = 0.0
    jacobians.append(jac)
  want = ref_excess_mtl(jacobians, step_size)
  acc = [tf.zeros((num_tasks, *shape)) for shape in SHAPES]
  w, initial = tf.ones([num_tasks]), tf.zeros([num_tasks])
  for step, jac in enumerate(jacobians):
    grads = [tuple(tf.constant(p, tf.float32) for p in _split(row)) for row in jac]
    acc, w, initial, _, combined = excess_mtl.excess_mtl_step(
      acc, w, initial, grads, tf.constant(step, tf.int64), step_size
    )
    ref_acc, ref_w, ref_update = want[step]
    for got, ref in zip(acc, _split(ref_acc)):
      np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6 * np.abs(ref_acc).max())
    np.testing.assert_allclose(w.numpy(), ref_w, rtol=1e-5)
    for got, ref in zip(combined, _split(ref_update)):
      np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-5 * np.abs(ref_update).max())


def test_weights_sum_to_t_and_the_larger_excess_gains():
  """Two tasks whose gradients keep their first-step size (task 0) or grow 3× (task 1): task 1's estimated
  excess risk relative to its start is larger, so its weight rises above 1; the weights always sum to T."""
  rng = np.random.default_rng(1)
  base = rng.normal(size=(2, 10))
  acc = [tf.zeros((2, *shape)) for shape in SHAPES]
  w, initial = tf.ones([2]), tf.zeros([2])
  for step in range(20):
    jac = base * np.array([[1.0], [1.0 if step == 0 else 3.0]])
    grads = [tuple(tf.constant(p, tf.float32) for p in _split(row)) for row in jac]
    acc, w, initial, ratio, _ = excess_mtl.excess_mtl_step(acc, w, initial, grads, tf.constant(step, tf.int64), 0.1)
    assert abs(float(tf.reduce_sum(w)) - 2.0) < 1e-5
  assert w.numpy()[1] > 1.05 and ratio.numpy()[1] > ratio.numpy()[0], (w.numpy(), ratio.numpy())


TASKS = (tasks_lib.TaskSpec("clean", tasks_lib.REGRESSION), tasks_lib.TaskSpec("noisy", tasks_lib.REGRESSION))


def test_training_does_not_upweight_a_noisy_task(tmp_path):
  """A learnable task and a task of pure label noise of a larger loss: ExcessMTL's weights follow excess risk, not
  loss, so the noisy task (no excess to remove once fitted to its mean) ends with the smaller weight."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(900, 6))
  labels = {"clean": np.tanh(x[:, 0] + x[:, 1] - x[:, 2]), "noisy": 2.0 * rng.normal(size=900)}
  bundle = helpers.make_bundle(TASKS, x, labels, (600, 150, 150))
  config = helpers.make_config(
    tmp_path / "run", "excess_mtl", hidden_units=(16, 8), batch_size=32, train_steps=500, excess_mtl_step_size=0.05
  )
  parts = components_lib.build(config, bundle)
  logs = helpers.run_loop(parts, 500)
  weights, losses = np.asarray(logs["weights"]), np.asarray(logs["losses"])
  assert losses[1] > losses[0], losses  # the noisy task has the larger loss ...
  assert weights[0] > weights[1], weights  # ... and the smaller weight

"""PCGrad (Yu et al., NeurIPS 2020), `--balancer=pcgrad`: against a NumPy reference that projects the gradient
vectors themselves in the same drawn orders, its defining properties, its draws, and a training run."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import gradient_surgery
from mtl_research.train import components as components_lib


def ref_pcgrad(jac, orders, reduction="sum"):
  """Algorithm 1 on the vectors: each g_i projected off every original g_j (j ≠ i) it conflicts with."""
  out = []
  for i, g in enumerate(jac):
    g = g.copy()
    for j in orders[i]:
      if j != i and g @ jac[j] < 0:
        g -= (g @ jac[j]) / (jac[j] @ jac[j]) * jac[j]
    out.append(g)
  total = np.sum(out, axis=0)
  return total / len(jac) if reduction == "mean" else total


def _jacobian(case):
  rng = np.random.default_rng(
    {"two": 0, "three": 1, "five": 2, "conflict": 3, "parallel": 4, "100x": 5, "zero": 6}[case]
  )
  num = {"three": 3, "five": 5}.get(case, 3 if case in ("100x", "zero") else 2)
  jac = rng.normal(size=(num, 7))
  if case == "conflict":
    jac[1] = -0.9 * jac[0] + 0.1 * jac[1]
  elif case == "parallel":
    jac[1] = jac[0] + 1e-3 * jac[1]
  elif case == "100x":
    jac[2] *= 100.0
  elif case == "zero":
    jac[1] = 0.0
  return jac


@pytest.mark.parametrize("case", ["two", "three", "five", "conflict", "parallel", "100x", "zero"])
@pytest.mark.parametrize("reduction", gradient_surgery.REDUCTIONS)
@pytest.mark.parametrize("step", [0, 1, 2])
def test_matches_the_reference_in_the_drawn_orders(case, reduction, step):
  jac = _jacobian(case)
  orders = gradient_surgery.draw_orders(tf.constant([3, step], tf.int64), len(jac))
  weights, _ = gradient_surgery.pcgrad_weights(tf.constant(jac @ jac.T), orders, reduction)
  want = ref_pcgrad(jac, orders.numpy(), reduction)
  np.testing.assert_allclose(jac.T @ weights.numpy(), want, rtol=1e-9, atol=1e-9 * np.abs(jac).max())


def test_two_conflicting_tasks_end_up_conflicting_with_neither():
  rng = np.random.default_rng(0)
  for _ in range(100):
    jac = rng.normal(size=(2, 6))
    if jac[0] @ jac[1] >= 0:
      jac[1] -= 2 * (jac[0] @ jac[1]) / (jac[0] @ jac[0]) * jac[0]  # make them conflict
    orders = gradient_surgery.draw_orders(tf.constant([1, 2], tf.int64), 2)
    weights, diagnostics = gradient_surgery.pcgrad_weights(tf.constant(jac @ jac.T), orders)
    d = jac.T @ weights.numpy()
    assert (jac @ d).min() >= -1e-9 * np.abs(jac).max() ** 2
    assert diagnostics["pcgrad_conflicts"].numpy() == 1 and diagnostics["pcgrad_projections"].numpy() == 2


def test_without_conflicts_it_is_the_plain_sum():
  jac = np.abs(np.random.default_rng(1).normal(size=(4, 5)))  # all inner products positive
  orders = gradient_surgery.draw_orders(tf.constant([0, 0], tf.int64), 4)
  weights, diagnostics = gradient_surgery.pcgrad_weights(tf.constant(jac @ jac.T), orders)
  np.testing.assert_array_equal(weights.numpy(), np.ones(4))
  assert diagnostics["pcgrad_projections"].numpy() == 0


def test_orders_are_per_task_permutations_fixed_by_seed_and_step():
  a = gradient_surgery.draw_orders(tf.constant([4, 10], tf.int64), 5).numpy()
  np.testing.assert_array_equal(a, gradient_surgery.draw_orders(tf.constant([4, 10], tf.int64), 5).numpy())
  assert all(sorted(row) == list(range(5)) for row in a)
  assert not np.array_equal(a, gradient_surgery.draw_orders(tf.constant([4, 11], tf.int64), 5).numpy())
  assert len({tuple(row) for row in a}) > 1  # each task draws its own order


TASKS = (tasks_lib.TaskSpec("a", tasks_lib.REGRESSION), tasks_lib.TaskSpec("b", tasks_lib.REGRESSION))


def test_training_steps_conflict_with_no_task_where_fixed_steps_do(tmp_path):
  """Two tasks that pull a narrow trunk apart: `fixed` takes steps whose direction ascends one task to first order
  (Gw has a negative entry); PCGrad's steps never do (two tasks: surgery removes each conflict)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 4))
  labels = {"a": x[:, 0] + x[:, 1], "b": x[:, 0] - x[:, 1]}  # one trunk unit cannot serve both
  bundle = helpers.make_bundle(TASKS, x, labels, (400, 100, 100))
  worst = {}
  for name in ("mgda", "pcgrad"):  # mgda's Gramian gives the fixed step's first-order change too: G·1
    config = helpers.make_config(tmp_path / name, name, hidden_units=(1,), batch_size=32, train_steps=100)
    parts = components_lib.build(config, bundle)
    values = []
    for _ in range(100):
      logs = helpers.run_loop(parts, 1)
      gram = parts.balancer._gramian.numpy()
      weights = np.ones(2) if name == "mgda" else np.asarray(logs["weights"], np.float64)
      values.append((gram @ weights).min() / np.diag(gram).max())
    worst[name] = min(values)
  assert worst["mgda"] < -1e-3, worst  # equal weights (the fixed step) ascend a task on some step
  assert worst["pcgrad"] >= -1e-5, worst

"""The Gramian engine (balancers/gramian.py and the step): G, Σ w·g, both scopes, the weights reported.

A stand-in method with a known rule checks the machinery every Gramian method
relies on: the step hands it G = J·Jᵀ of the right gradients, the shared
variables move by −lr·Σ_t w_t·g_t (parameter scope) or −lr·Σ_t w_t·∇L_t with w
chosen from the representation's gradients (representation scope), the heads by
−lr·∇Σ_t L_t, and the weights logged are the ones the step used.
"""

from __future__ import annotations

from conftest import build_config, make_bundle
import numpy as np
import pytest
import tensorflow as tf

from mtl_research import tasks
from mtl_research.balancers import gramian
from mtl_research.balancers.base import Schedule
from mtl_research.train import components as components_lib
from mtl_research.train.train_loop import TrainLoop, balancer_seed

SPECS = (tasks.TaskSpec("price", tasks.REGRESSION), tasks.TaskSpec("kind", tasks.CLASSIFICATION, 3))
LEARNING_RATE = 0.05


class DiagonalShare(gramian.GramianBalancer):
  """w_t = T·G_tt / trace(G): a rule of the Gramian simple enough to recompute in NumPy."""

  diagnostic_names = ("trace",)

  def weigh(self, gram, losses, step, seed):
    del losses, step, seed
    trace = tf.linalg.trace(gram)
    return gramian.Weighting(self.num_tasks * tf.linalg.diag_part(gram) / trace, {"trace": trace})


def test_gramian_of_matches_numpy_with_sparse_and_missing_gradients():
  rng = np.random.default_rng(0)
  dense = [rng.normal(size=(3, 4)) for _ in range(2)]
  rows = rng.normal(size=(2, 5))
  sparse = [tf.IndexedSlices(tf.constant(rows[:1]), tf.constant([2]), tf.constant([4, 5])) for _ in range(2)]
  sparse[1] = tf.IndexedSlices(tf.constant(rows[1:]), tf.constant([0]), tf.constant([4, 5]))
  only_second = rng.normal(size=(6,))  # a variable task 0 does not reach (None), of another shape
  task_grads = [
    (tf.constant(dense[0]), sparse[0], None),
    (tf.constant(dense[1]), sparse[1], tf.constant(only_second)),
  ]
  embedding = np.zeros((2, 4, 5))
  embedding[0, 2], embedding[1, 0] = rows[0], rows[1]
  third = np.stack([np.zeros(6), only_second])
  jacobian = np.concatenate([np.stack(dense).reshape(2, -1), embedding.reshape(2, -1), third], axis=1)
  np.testing.assert_allclose(gramian.gramian_of(task_grads).numpy(), jacobian @ jacobian.T, rtol=1e-12)
  combined = gramian.combine(tf.constant([0.25, 2.0], tf.float64), task_grads)
  np.testing.assert_allclose(combined[0].numpy(), 0.25 * dense[0] + 2.0 * dense[1], rtol=1e-12)
  np.testing.assert_allclose(combined[1].numpy(), 0.25 * embedding[0] + 2.0 * embedding[1], rtol=1e-12)
  np.testing.assert_allclose(combined[2].numpy(), 2.0 * only_second, rtol=1e-12)


def _loop(scope: str) -> tuple[TrainLoop, object]:
  config = build_config(optimizer={"name": "sgd", "learning_rate": LEARNING_RATE})
  bundle = make_bundle(SPECS, num_train=128)
  parts = components_lib.build(config, bundle)
  old = parts.train_loop
  balancer = DiagonalShare(SPECS, {gramian.SCOPE_PARAM.name: scope}, Schedule(4, 20))
  loop = TrainLoop(parts.model, balancer, parts.optimizer, old.data, old.order, parts.global_step, 1)
  return loop, bundle


def _expected_step(loop: TrainLoop, bundle, rows: np.ndarray, scope: str):
  """(variables after one SGD step, weights) computed outside the step, in float64 where it matters."""
  model = loop.model
  features = {name: tf.constant(value[rows]) for name, value in bundle.train.features.items()}
  labels = {name: tf.constant(value[rows]) for name, value in bundle.train.labels.items()}
  shared = model.shared_variables
  shared_ids = {id(v) for v in shared}
  heads = [v for v in model.trainable_variables if id(v) not in shared_ids]
  with tf.GradientTape(persistent=True) as tape:
    outputs, representation = model.forward(features, training=True)
    losses = loop.task_losses(labels, outputs)
    total = tf.add_n(losses)
  if scope == gramian.PARAMETERS:
    jacobian = np.stack(
      [np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, shared)]) for loss in losses]
    ).astype(np.float64)
  else:
    jacobian = np.stack([tape.gradient(loss, representation).numpy().ravel() for loss in losses]).astype(np.float64)
  gram = jacobian @ jacobian.T
  weights = len(losses) * np.diag(gram) / np.trace(gram)
  per_task = [tape.gradient(loss, shared) for loss in losses]
  head_grads = tape.gradient(total, heads)
  after = {}
  for i, variable in enumerate(shared):
    step = sum(weights[t] * per_task[t][i].numpy().astype(np.float64) for t in range(len(losses)))
    after[variable.path] = variable.numpy() - LEARNING_RATE * step
  for variable, grad in zip(heads, head_grads):
    after[variable.path] = variable.numpy() - LEARNING_RATE * grad.numpy()
  return after, weights, np.trace(gram)


@pytest.mark.parametrize("scope", [gramian.PARAMETERS, gramian.REPRESENTATION])
def test_the_shared_variables_follow_the_weighted_gradients_and_the_heads_their_own(scope):
  loop, bundle = _loop(scope)
  rows = loop.order.batches(0, 1)
  want, weights, trace = _expected_step(loop, bundle, rows[0], scope)
  logs = loop.run(1, rows=rows)
  np.testing.assert_allclose(logs["weights"], weights, rtol=1e-5)  # this step's weights, not the previous ones
  np.testing.assert_allclose(loop.balancer.summaries()["gramian/trace"].numpy(), trace, rtol=1e-5)
  for variable in loop.model.trainable_variables:
    np.testing.assert_allclose(variable.numpy(), want[variable.path], rtol=1e-5, atol=1e-6, err_msg=variable.path)


def test_the_representation_gramian_is_a_ts_inner_products_over_the_batch():
  # The Gramian of ∇_Z L_t is small ([T, T]) whatever the width: what makes the scope cheap.
  loop, bundle = _loop(gramian.REPRESENTATION)
  rows = loop.order.batches(0, 1)
  _, _, trace = _expected_step(loop, bundle, rows[0], gramian.REPRESENTATION)
  loop.run(1, rows=rows)
  gram = loop.balancer._gramian.numpy()  # pylint: disable=protected-access
  assert gram.shape == (2, 2) and np.allclose(gram, gram.T) and np.trace(gram) == pytest.approx(trace, rel=1e-5)


class Draw(DiagonalShare):
  """Reports one uniform number drawn from the step's stateless seed."""

  def update(self, stats):
    return {"draw": tf.random.stateless_uniform([], seed=stats.seed)}


def test_a_balancers_random_draws_depend_on_the_seed_and_the_step_only():
  def draws(seed: int, start: int) -> list[float]:
    loop, _ = _loop(gramian.PARAMETERS)
    loop.balancer = Draw(SPECS, {}, Schedule(4, 20))
    loop.seed = seed
    loop.global_step.assign(start)
    loop._use(False)  # pylint: disable=protected-access  (retrace with the new balancer)
    return [float(loop.run(1)["diagnostics"]["draw"]) for _ in range(3)]

  first = draws(7, 0)
  assert first == draws(7, 0)  # deterministic
  assert first[1:] == draws(7, 1)[:2]  # a run resumed at step 1 draws what the run it continues drew
  assert first != draws(8, 0)
  expected = tf.random.stateless_uniform([], seed=balancer_seed(7, tf.constant(2, tf.int64)))
  assert first[2] == pytest.approx(float(expected))

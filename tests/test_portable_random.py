"""portable_random: the same bits eagerly, in a graph and under XLA; uniform and independent enough for masks."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtl_research.balancers import portable_random


def test_eager_graph_and_xla_draw_the_same_bits():
  seed = tf.Variable([5, 3], dtype=tf.int64)  # not a compile-time constant, as in the train loop

  def draw():
    return portable_random.uniform(seed.read_value(), [3, 5], offset=7)

  eager = draw().numpy()
  np.testing.assert_array_equal(tf.function(draw)().numpy(), eager)
  np.testing.assert_array_equal(tf.function(draw, jit_compile=True)().numpy(), eager)

  # TensorFlow's own stateless op does not have this property (why this module exists); if it ever does,
  # this module can go.
  def philox():
    return tf.random.stateless_uniform([1, 4], seed=seed.read_value(), alg="philox")

  assert not np.array_equal(philox().numpy(), tf.function(philox, jit_compile=True)().numpy())


def test_offsets_continue_the_stream():
  seed = tf.constant([1, 2], tf.int64)
  whole = portable_random.uniform(seed, [6, 4]).numpy()
  np.testing.assert_array_equal(portable_random.uniform(seed, [2, 4], offset=12).numpy(), whole[3:5])


@pytest.mark.parametrize("seed", [(0, 0), (1, 2), (2**31 - 1, 123456)])
def test_uniform_on_the_unit_interval(seed):
  """200,000 draws: 20 bins each within 5σ of the expected count (binomial σ ≈ 95); mean and variance."""
  u = portable_random.uniform(tf.constant(seed, tf.int64), [200_000]).numpy()
  assert u.min() >= 0.0 and u.max() < 1.0
  counts = np.histogram(u, bins=20, range=(0.0, 1.0))[0]
  assert np.all(np.abs(counts - 10_000) < 5 * np.sqrt(10_000 * 0.95)), counts
  assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / 200_000)
  assert abs(u.var() - 1 / 12) < 0.002


def test_neighbouring_seeds_and_elements_are_uncorrelated():
  """Consecutive steps (seed[1] and seed[1] + 1) and consecutive elements: |correlation| < 5/√n."""
  n = 100_000
  a = portable_random.uniform(tf.constant([3, 10], tf.int64), [n]).numpy()
  b = portable_random.uniform(tf.constant([3, 11], tf.int64), [n]).numpy()
  c = portable_random.uniform(tf.constant([4, 10], tf.int64), [n]).numpy()
  bound = 5 / np.sqrt(n)
  for x, y in ((a, b), (a, c), (a[:-1], a[1:])):
    assert abs(np.corrcoef(x, y)[0, 1]) < bound


def test_permutation_is_uniform_over_orders():
  """6,000 permutations of 3 (from consecutive steps' seeds): each of the 6 orders within 5σ of 1,000 (σ ≈ 29)."""
  draw = tf.function(lambda step: portable_random.permutation(tf.stack([tf.constant(9, tf.int64), step]), 3))
  orders = [tuple(draw(tf.constant(step, tf.int64)).numpy()) for step in range(6000)]
  counts = {order: orders.count(order) for order in set(orders)}
  assert len(counts) == 6 and all(abs(c - 1000) < 5 * 29 for c in counts.values()), counts

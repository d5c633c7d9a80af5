"""Uniform random numbers that are the same bits eagerly, in a TensorFlow graph and under XLA.

TensorFlow's `tf.random.stateless_uniform` (Philox named or not) draws other
numbers inside an XLA program than its graph kernel draws for the same seed
(measured: seed [5, 3], shape [1, 4], 0.903 0.631 0.787 0.507 in a graph, 0.859
0.775 0.648 0.272 under `jit_compile=True`, when the seed is not a compile-time
constant). The train loop runs under XLA on one device and as a graph under a
tf.distribute strategy, so a balancer drawing with it would draw one sequence
alone and another with replicas. The draws here are a counter-based hash of
(seed, element index) in uint32 integer arithmetic, which every mode computes
exactly alike: element i is lowbias32(lowbias32(i ⊕ h(seed₀)) ⊕ h(seed₁)), where
lowbias32 is C. Wellons's xorshift-multiply integer hash (two rounds of
x ^= x >> s; x *= c), and its top 24 bits give a float32 in [0, 1). The
indices may start at an offset, so a replica draws its own rows of a draw made
for the global batch without drawing the rest. Statistical quality is ample for
masks and orders (tests/test_portable_random.py checks uniformity and
independence between neighbouring seeds); it is not for cryptography.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

_GOLDEN = 0x9E3779B9
_SECOND = 0x85EBCA6B


def _lowbias32(x: tf.Tensor) -> tf.Tensor:
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
  x = x * tf.constant(0x7FEB352D, tf.uint32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
  x = x * tf.constant(0x846CA68B, tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def uniform(seed: tf.Tensor, shape: Sequence[int], offset: tf.Tensor | int = 0) -> tf.Tensor:
  """float32 U[0, 1) of static `shape`: elements `offset` .. `offset` + size − 1 of the stream of `seed`.

  `seed` is an integer [2] (a step's stateless seed); drawing shape [r, d] at
  offset k·d gives rows k .. k + r − 1 of a draw of shape [n, d] at offset 0.
  """
  size = 1
  for dim in shape:
    size *= int(dim)
  key = tf.cast(tf.math.floormod(tf.cast(seed, tf.int64), 2**32), tf.uint32)
  first = _lowbias32(tf.bitwise.bitwise_xor(key[0], tf.constant(_GOLDEN, tf.uint32)))
  second = _lowbias32(key[1] + tf.constant(_SECOND, tf.uint32))
  index = tf.cast(tf.range(size, dtype=tf.int64) + tf.cast(offset, tf.int64), tf.uint32)
  bits = _lowbias32(tf.bitwise.bitwise_xor(_lowbias32(tf.bitwise.bitwise_xor(index, first)), second))
  top = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32)
  return tf.reshape(top * (1.0 / 16777216.0), list(shape))


def permutation(seed: tf.Tensor, n: int) -> tf.Tensor:
  """A uniformly random permutation of 0 .. n − 1 (int32) from `seed`: the order of n uniform keys."""
  return tf.argsort(uniform(seed, [n]), stable=True)

"""Our Adam/AdamW compute the per-step scalars once; results must equal Keras's bitwise."""

import numpy as np
import pytest
import tensorflow as tf

from mtl_research.optim import adam

keras = tf.keras


def _train(optimizer, steps=6):
  """A few updates of two variables from fixed gradients, inside a tf.function."""
  rng = np.random.default_rng(0)
  variables = [
    keras.Variable(rng.normal(size=(4, 3)).astype("float32")),
    keras.Variable(rng.normal(size=(3,)).astype("float32")),
  ]
  optimizer.build(variables)
  grads = [[tf.constant(rng.normal(size=v.shape), tf.float32) for v in variables] for _ in range(steps)]

  @tf.function
  def apply(gs):
    optimizer.apply_gradients(zip(gs, variables))

  for gs in grads:
    apply(gs)
  return [v.numpy() for v in variables] + [s.numpy() for s in optimizer.variables]


@pytest.mark.parametrize(
  "ours,theirs",
  [
    (lambda: adam.Adam(1e-2), lambda: keras.optimizers.Adam(1e-2)),
    (
      lambda: adam.Adam(keras.optimizers.schedules.CosineDecay(1e-2, 10)),
      lambda: keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-2, 10)),
    ),
    (lambda: adam.AdamW(1e-2, weight_decay=0.1), lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1)),
  ],
)
def test_bitwise_equal_to_keras(ours, theirs):
  for mine, reference in zip(_train(ours()), _train(theirs())):
    np.testing.assert_array_equal(mine, reference)


def test_variables_actually_move():
  rng_values = _train(adam.Adam(1e-2), steps=0)
  moved = _train(adam.Adam(1e-2), steps=3)
  assert not np.allclose(rng_values[0], moved[0])

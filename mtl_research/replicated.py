"""Variables kept identical on every replica under tf.distribute."""

from __future__ import annotations

import tensorflow as tf


def state_variable(initial, name: str, trainable: bool = False) -> tf.Variable:
  """A state variable (a balancer's, an optimizer's slot) whose first replica's write is kept.

  Every replica computes the same update from all-reduced values, so keeping
  the first replica's write needs no communication and the copies cannot drift.
  """
  return tf.Variable(initial, trainable=trainable, name=name, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

"""The model's optimizer and learning-rate schedule, from an OptimizerConfig."""

from __future__ import annotations

import tensorflow as tf

from mtl_research.config import LrSchedule, OptimizerConfig, OptimizerName
from mtl_research.optim import adam

keras = tf.keras


def learning_rate(config: OptimizerConfig, total_steps: int):
  """A constant rate, a cosine decay to 0 over the run, or a step decay."""
  if config.schedule == LrSchedule.COSINE:
    return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(total_steps, 1))
  if config.schedule == LrSchedule.STEP:
    every = config.decay_steps or max(total_steps // 3, 1)
    return keras.optimizers.schedules.ExponentialDecay(
      config.learning_rate, decay_steps=every, decay_rate=config.decay_rate, staircase=True
    )
  return config.learning_rate


def build(config: OptimizerConfig, total_steps: int) -> tf.keras.optimizers.Optimizer:
  rate = learning_rate(config, total_steps)
  if config.name == OptimizerName.SGD:
    return keras.optimizers.SGD(rate, momentum=config.momentum)
  if config.name == OptimizerName.ADAMW:
    return adam.AdamW(rate, weight_decay=config.weight_decay)
  return adam.Adam(rate)


def current_learning_rate(optimizer: tf.keras.optimizers.Optimizer) -> float:
  return float(optimizer.learning_rate.numpy())

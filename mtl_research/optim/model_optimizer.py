"""The model's optimizer and learning-rate schedule, from an OptimizerConfig."""

from __future__ import annotations

import tensorflow as tf

from mtl_research.config import LrSchedule, OptimizerConfig, OptimizerName
from mtl_research.optim import adam

keras = tf.keras


def learning_rate(config: OptimizerConfig, total_steps: int):
  """A constant rate, a cosine decay to 0 over the run, or a step decay.

  A schedule that reads `total_steps` must be declared in `run_length_dependence`.
  """
  if config.schedule == LrSchedule.COSINE:
    return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(total_steps, 1))
  if config.schedule == LrSchedule.STEP:
    every = config.decay_steps or max(total_steps // 3, 1)
    return keras.optimizers.schedules.ExponentialDecay(
      config.learning_rate, decay_steps=every, decay_rate=config.decay_rate, staircase=True
    )
  return config.learning_rate


def run_length_dependence(config: OptimizerConfig) -> str | None:
  """The flags that make the learning rate at a step depend on the run's total steps, or None.

  Declared here, next to `learning_rate`, because a run whose past depends on
  its length cannot be extended (run_dir.py): its first 500 steps under a
  cosine decay over 500 are not those of a run of 1000. tests/test_extend.py
  checks the declaration against `learning_rate` for every schedule.
  """
  if config.schedule == LrSchedule.COSINE:
    return f"--lr_schedule={config.schedule}"
  if config.schedule == LrSchedule.STEP and not config.decay_steps:
    return f"--lr_schedule={config.schedule} with --lr_decay_steps=0 (a third of the run)"
  return None


def build(config: OptimizerConfig, total_steps: int) -> tf.keras.optimizers.Optimizer:
  rate = learning_rate(config, total_steps)
  if config.name == OptimizerName.SGD:
    return keras.optimizers.SGD(rate, momentum=config.momentum)
  if config.name == OptimizerName.ADAMW:
    return adam.AdamW(rate, weight_decay=config.weight_decay)
  return adam.Adam(rate)


def current_learning_rate(optimizer: tf.keras.optimizers.Optimizer) -> float:
  return float(optimizer.learning_rate.numpy())

"""tf.data pipelines: shuffled index batches for training, row batches for evaluation.

Training does not push rows through tf.data one by one. The pipeline yields
batches of row *indices* — one stateless shuffle per epoch, keyed by
(seed, epoch), cut into batches and prefetched — and the train step gathers the
rows from tensors that already sit on the device. This keeps per-element tf.data
work off a 2-core CPU (the step runs several times faster than with
`from_tensor_slices(...).shuffle().batch()` on the tutorial model, measured by
scripts/benchmark.py) and makes the input a pure function of the step, so a
resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from mtl_research.data.bundle import Split


PREFETCH_BATCHES = 4


class DeviceSplit:
  """A split held as tensors, from which the train step gathers its batches.

  `replicated` (under a tf.distribute strategy's scope): held in non-trainable
  variables instead, which the strategy copies to every replica's device, so
  no replica reads its rows from another device.
  """

  def __init__(self, split: Split, replicated: bool = False):
    hold = (lambda v: tf.Variable(v, trainable=False)) if replicated else tf.constant
    self.features = {k: hold(v) for k, v in split.features.items()}
    self.labels = {k: hold(v) for k, v in split.labels.items()}
    self.num_rows = len(split)

  def gather(self, indices: tf.Tensor) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    return ({k: tf.gather(v, indices) for k, v in self.features.items()},
            {k: tf.gather(v, indices) for k, v in self.labels.items()})


def steps_per_epoch(num_rows: int, batch_size: int) -> int:
  """Full batches per epoch; the shuffled remainder is dropped so shapes stay static."""
  return num_rows // batch_size


def epoch_permutation(num_rows: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
  """The row order of `epoch`: a stateless shuffle keyed by (seed, epoch)."""
  key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
  return tf.random.experimental.stateless_shuffle(tf.range(num_rows, dtype=tf.int32), seed=key)


def train_indices(num_rows: int, batch_size: int, seed: int, start_step: int = 0) -> tf.data.Dataset:
  """An endless dataset of int32 index batches [batch_size], starting at `start_step`.

  Batch k of the whole run is always the same rows for the same (seed, batch
  size), whatever step the pipeline was started from.
  """
  per_epoch = steps_per_epoch(num_rows, batch_size)
  usable = per_epoch * batch_size

  def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
    perm = epoch_permutation(num_rows, seed, epoch)[:usable]
    return tf.data.Dataset.from_tensor_slices(tf.reshape(perm, [per_epoch, batch_size]))

  first_epoch, offset = divmod(start_step, per_epoch)
  dataset = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch_batches)
  # Producing an index batch is nearly free, so a small fixed buffer suffices;
  # autotuning would only add a background thread competing for 2 cores.
  options = tf.data.Options()
  options.autotune.enabled = False
  return dataset.skip(offset).prefetch(PREFETCH_BATCHES).with_options(options)


def eval_batches(split: Split, batch_size: int) -> tf.data.Dataset:
  """The whole split in order, in batches (the last one may be short)."""
  rows = (dict(split.features), dict(split.labels))
  return tf.data.Dataset.from_tensor_slices(rows).batch(batch_size).prefetch(tf.data.AUTOTUNE)



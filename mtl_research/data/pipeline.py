"""Which rows each training step sees, and the device-resident split they are gathered from.

Training does not push rows through tf.data. Each step's batch is a set of row
*indices*, a pure function of (seed, step): epoch e is a stateless shuffle of
the rows keyed by (seed, e), cut into full batches, and step k takes batch
k mod steps_per_epoch of epoch k // steps_per_epoch. The trainer hands the
compiled loop the indices of all its steps as one [steps, batch] tensor, and
the step gathers its rows from tensors that already sit on the device. Nothing
of the input lives inside the compiled program (an XLA program cannot hold an
iterator), nothing needs checkpointing, and a resumed run, the careful replay
of the non-finite guard and every replica of a distributed run see exactly the
rows an uninterrupted single-device run sees.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtl_research.data.bundle import Split


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
    return (
      {k: tf.gather(v, indices) for k, v in self.features.items()},
      {k: tf.gather(v, indices) for k, v in self.labels.items()},
    )


def steps_per_epoch(num_rows: int, batch_size: int) -> int:
  """Full batches per epoch; the shuffled remainder is dropped so shapes stay static."""
  return num_rows // batch_size


def epoch_permutation(num_rows: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
  """The row order of `epoch`: a stateless shuffle keyed by (seed, epoch)."""
  key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
  return tf.random.experimental.stateless_shuffle(tf.range(num_rows, dtype=tf.int32), seed=key)


class TrainOrder:
  """The index batches of every training step of one run (see the module docstring).

  Each epoch's permutation is computed once, with TensorFlow's stateless
  shuffle on the CPU (the same kernel whatever device trains), and kept while
  its steps are being served.
  """

  def __init__(self, num_rows: int, batch_size: int, seed: int):
    self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
    self.steps_per_epoch = steps_per_epoch(num_rows, batch_size)
    if self.steps_per_epoch < 1:
      raise ValueError(f"{num_rows} rows hold no batch of {batch_size}")
    self._epochs: dict[int, np.ndarray] = {}

  def _epoch(self, epoch: int) -> np.ndarray:
    """[steps_per_epoch, batch_size] int32 rows of `epoch`."""
    if epoch not in self._epochs:
      with tf.device("/cpu:0"):
        perm = epoch_permutation(self.num_rows, self.seed, tf.constant(epoch, tf.int64)).numpy()
      usable = self.steps_per_epoch * self.batch_size
      # Two epochs at most are in use at once (a loop crossing a boundary).
      self._epochs = {e: rows for e, rows in self._epochs.items() if e == epoch - 1}
      self._epochs[epoch] = perm[:usable].reshape(self.steps_per_epoch, self.batch_size)
    return self._epochs[epoch]

  def batches(self, start: int, count: int) -> np.ndarray:
    """[count, batch_size] int32: the rows of steps start, start + 1, ..., start + count − 1."""
    parts, step, end = [], start, start + count
    while step < end:
      epoch, offset = divmod(step, self.steps_per_epoch)
      take = min(end - step, self.steps_per_epoch - offset)
      parts.append(self._epoch(epoch)[offset : offset + take])
      step += take
    if not parts:
      return np.zeros([0, self.batch_size], np.int32)
    return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

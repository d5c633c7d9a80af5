"""What the train step does differently when R > 1 replicas share the global batch.

Each replica computes its per-task losses as partial sums (its rows divided
by the *global* batch size), so summing them over replicas gives the global
losses. The step then follows three rules, all no-ops for one replica:

1. Balancers see global values. `losses` are all-reduced for the value and
   keep each replica's own gradient path (value = global, gradient = local),
   so `objective(losses)` is the global objective even when it is not linear
   in the losses, and the model gradients Keras sums over replicas are those
   of one device with the global batch. Per-task gradients for a balancer's
   `gradient_scope` are all-reduced before `update`/`aggregate` see them:
   GradNorm's norms are norms of global-batch gradients, not averages of
   per-replica norms.
2. Gradients that every replica computes alike (those of a balancer's joint
   variables, taken at the global losses, and an aggregating balancer's
   combined gradient) are divided by R, because Keras sums gradients over
   replicas in `apply_gradients`.
3. Decisions are global: a non-finite value on any replica counts everywhere,
   so all replicas skip (or apply) the same batch.
"""

from __future__ import annotations

import tensorflow as tf


class CrossReplica:
  """The cross-replica arithmetic of one train step (see the module docstring)."""

  def __init__(self, replicas: int):
    self.replicas = replicas
    self.active = replicas > 1

  def local_rows(self, batch: tf.Tensor) -> tf.Tensor:
    """This replica's slice of a global batch of row indices: replica r takes rows [r·b, (r+1)·b).

    Every replica (on every worker) receives the same global batch, so the
    replicas together see exactly the rows one device would.
    """
    if not self.active:
      return batch
    size = batch.shape[0] // self.replicas
    first = self.first_row(batch.shape[0])
    return batch[first : first + size]

  def first_row(self, global_batch: int) -> tf.Tensor | int:
    """The global batch's index of this replica's first row (`local_rows`); 0 on one replica."""
    if not self.active:
      return 0
    return tf.distribute.get_replica_context().replica_id_in_sync_group * (global_batch // self.replicas)

  def sum(self, value):
    """All-reduced sum over replicas (a nest of tensors); identity on one replica."""
    if not self.active:
      return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)

  def global_losses(self, local: tf.Tensor) -> tf.Tensor:
    """The global losses as a value, with the gradient of this replica's `local` share."""
    if not self.active:
      return local
    return self.sum(tf.stop_gradient(local)) + (local - tf.stop_gradient(local))

  def divide_among_replicas(self, grads: list) -> list:
    """Each replica's part of gradients that all replicas computed alike."""
    if not self.active:
      return grads
    return [None if g is None else g / self.replicas for g in grads]

  def all_true(self, flag: tf.Tensor) -> tf.Tensor:
    """True iff `flag` holds on every replica."""
    if not self.active:
      return flag
    return self.sum(tf.cast(flag, tf.float32)) >= self.replicas

"""The compiled train loop: `steps_per_loop` steps per call, no Python in between.

The loop takes the step count as a tensor and iterates with `tf.range`, so one
trace serves every call. Each step gathers its batch from the device-resident
split, computes per-task losses averaged over the global batch
(`tf.nn.compute_average_loss`, correct under tf.distribute), and computes only
the per-task gradients the balancer's `gradient_scope` asks for.
"""

from __future__ import annotations

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Balancer, GradientScope, StepStats
from mtl_research.data.pipeline import DeviceSplit
from mtl_research.models.base import MultiTaskModel
from mtl_research.train import guard
from mtl_research.train.cross_replica import CrossReplica


def flatten(tensors) -> tf.Tensor:
  return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def conflict_stats(task_grads: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
  """Pairwise cosine [T, T] and norms [T] of flattened per-task gradients."""
  stacked = tf.stack(task_grads)
  norms = tf.norm(stacked, axis=1)
  unit = stacked / tf.maximum(norms, 1e-12)[:, None]
  return tf.matmul(unit, unit, transpose_b=True), norms


SINGLE_THREADED = "single_threaded"
EXECUTORS = ("auto", "default", SINGLE_THREADED)


def resolve_executor(executor: str, distributed: bool = False) -> str:
  """`auto`: TensorFlow's single-threaded executor on a CPU-only machine without tf.distribute.

  The step of a small model is hundreds of tiny ops; running them on the
  calling thread avoids a thread-pool hand-off per op, which on 2 cores is both
  faster and far steadier (scripts/benchmark.py). GPUs and tf.distribute need
  asynchronous kernels, which that executor does not run, so they keep TF's default.
  """
  if executor == "auto":
    return "default" if distributed or tf.config.list_physical_devices("GPU") else SINGLE_THREADED
  return executor


class TrainStep:
  """Owns the compiled loop that trains `model` under `balancer`."""

  def __init__(self, model: MultiTaskModel, balancer: Balancer, optimizer, data: DeviceSplit,
               global_batch_size: int, step: tf.Variable, log_grad_conflict: bool = False,
               executor: str = "default", nan_policy: str = guard.STOP,
               strategy: tf.distribute.Strategy | None = None):
    self.model = model
    self.balancer = balancer
    self.optimizer = optimizer
    self.data = data
    self.global_batch_size = global_batch_size
    self.step = step
    self.log_grad_conflict = log_grad_conflict
    self.task_specs = model.task_specs
    # The default strategy's `run` is a plain call: one code path serves both.
    self.strategy = strategy or tf.distribute.get_strategy()
    self.cross = CrossReplica(int(self.strategy.num_replicas_in_sync))
    self.executor = resolve_executor(executor, distributed=strategy is not None)
    if nan_policy not in guard.NAN_POLICIES:
      raise ValueError(f"nan_policy must be one of {guard.NAN_POLICIES}, not {nan_policy!r}")
    self.nan_policy = nan_policy
    # The fast loop's running sum of losses (≥ 0, so finite iff every loss was); not checkpointed.
    self.loss_sum = tf.Variable(0.0, trainable=False, name="loop_loss_sum",
                                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    self.loop = tf.function(self._loop)
    self.careful_loop = tf.function(self._careful_loop)

  @property
  def trained_variables(self) -> list[tf.Variable]:
    """Everything the model optimizer updates; build the optimizer on this list."""
    return list(self.model.trainable_variables) + list(self.balancer.joint_variables)

  @property
  def state_variables(self) -> list[tf.Variable]:
    """The model's and the balancer's variables, each once: what must stay finite."""
    seen, result = set(), []
    for variable in list(self.model.variables) + list(self.balancer.variables):
      if id(variable) not in seen:
        seen.add(id(variable))
        result.append(variable)
    return result

  def _scope_variables(self) -> tuple[tf.Variable, ...]:
    scope = self.balancer.gradient_scope
    if scope == GradientScope.LAST_SHARED:
      return (self.model.last_shared_kernel,)
    if scope == GradientScope.SHARED:
      return tuple(self.model.shared_variables)
    return ()

  def task_losses(self, labels, outputs) -> list[tf.Tensor]:
    """Per-task scalar losses, each averaged over the global batch.

    A list, not a stacked tensor: per-task gradients must start from these
    scalars, because slicing a stack after the tape closes is not recorded.
    """
    return [
        tf.nn.compute_average_loss(
            tasks_lib.per_example_loss(task, labels[task.name], outputs[task.name]),
            global_batch_size=self.global_batch_size)
        for task in self.task_specs
    ]

  def _regularization(self) -> tf.Tensor:
    if not self.model.losses:
      return tf.constant(0.0)
    return tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))

  def _gradients(self, tape, objective, regularization, stats: StepStats) -> tuple[list, list]:
    """Gradients for every trained variable: from the objective, or aggregated."""
    variables = self.trained_variables
    if not self.balancer.aggregates:
      return self._share_joint(tape.gradient(objective, variables), variables), variables
    scope_ids = {id(v) for v in stats.scope_variables}
    others = [v for v in variables if id(v) not in scope_ids]
    grads = tape.gradient(objective, others, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    shared = self.cross.share(self.balancer.aggregate(stats))
    # The aggregated gradient replaces the task terms only; regularization still applies.
    reg = tape.gradient(regularization, list(stats.scope_variables),
                        unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return (self._share_joint(grads, others) + [s + r for s, r in zip(shared, reg)],
            others + list(stats.scope_variables))

  def _share_joint(self, grads: list, variables: list) -> list:
    """Joint-variable gradients are taken at the global losses: alike on every replica."""
    if not self.cross.active:
      return grads
    joint = {id(v) for v in self.balancer.joint_variables}
    return [self.cross.share([g])[0] if id(v) in joint else g for g, v in zip(grads, variables)]

  def _conflict(self, features, labels) -> tuple[tf.Tensor, tf.Tensor]:
    shared = self.model.shared_variables
    with tf.GradientTape(persistent=True) as tape:
      # training=False: a diagnostic must not draw dropout masks, or turning it
      # on would change the random numbers, and so the results, of training.
      losses = self.task_losses(labels, self.model(features, training=False))
    grads = [flatten(tape.gradient(loss, shared, unconnected_gradients=tf.UnconnectedGradients.ZERO))
             for loss in losses]
    return conflict_stats(self.cross.sum(grads))

  def _apply_careful(self, ok: tf.Tensor, apply, diagnostics_wanted: bool) -> dict[str, tf.Tensor]:
    """Runs `apply` (model and balancer update) if `ok` or the policy is stop.

    Returns the balancer's diagnostics; those of a skipped step are NaN.
    """
    if self.nan_policy == guard.STOP:
      return apply()  # a failing step ends the run; applying it changes nothing that is kept
    if not diagnostics_wanted:
      tf.cond(ok, lambda: tf.group(tf.nest.flatten(apply())), tf.no_op)
      return {}
    # cond_v2 traces the true branch first, so the skipped branch can mirror its outputs.
    structure = {}

    def applied() -> dict[str, tf.Tensor]:
      structure["diagnostics"] = apply()
      return structure["diagnostics"]

    def skipped() -> dict[str, tf.Tensor]:
      return tf.nest.map_structure(lambda t: tf.fill(tf.shape(t), tf.constant(float("nan"), t.dtype)),
                                   structure["diagnostics"])

    return tf.cond(ok, applied, skipped)

  def train_step(self, indices: tf.Tensor, diagnose: tf.Tensor | None = None, careful: bool = False) -> dict:
    """One update on the rows `indices`.

    Inner steps of a loop (`diagnose` None) compute nothing for reporting,
    because stateful reads inside the loop are never pruned; the loop's last
    step adds its logs. The fast path (`careful` False) only adds this step's
    losses to `loss_sum`, and its last step reports whether the loop stayed
    `healthy`. The careful path tests every step's inputs, applies
    `nan_policy` to them, and reports `ok` (inputs and resulting variables
    finite); see mtl_research/train/guard.py.
    """
    features, labels = self.data.gather(indices)
    scope_variables = self._scope_variables()
    needs_tape_again = bool(scope_variables) or self.balancer.aggregates
    with tf.GradientTape(persistent=needs_tape_again) as tape:
      task_losses = self.task_losses(labels, self.model(features, training=True))
      losses = self.cross.global_losses(tf.stack(task_losses))
      # Keras 3 computes model.losses when read, so read it once, on the tape.
      regularization = self._regularization()
      objective = self.balancer.objective(losses) + regularization
    task_grads = None
    if scope_variables:
      task_grads = self.cross.sum(tuple(tuple(tape.gradient(loss, scope_variables)) for loss in task_losses))
    stats = StepStats(losses, task_grads, scope_variables, self.step.read_value())
    result = {"losses": losses, "step": stats.step}
    if diagnose is not None:
      # Under a strategy each replica's objective holds only its share of the regularization.
      logged = objective - regularization + self.cross.sum(regularization) if self.cross.active else objective
      result.update(weights=self.balancer.weights(), objective=logged)
      if self.log_grad_conflict and self.cross.active:
        # All-reduces cannot run inside tf.cond: compute at every loop's end.
        result["conflict_cos"], result["conflict_norm"] = self._conflict(features, labels)
      elif self.log_grad_conflict:
        num = len(self.task_specs)
        result["conflict_cos"], result["conflict_norm"] = tf.cond(
            diagnose, lambda: self._conflict(features, labels),
            lambda: (tf.zeros([num, num]), tf.zeros([num])))
    grads, variables = self._gradients(tape, objective, regularization, stats)

    def apply() -> dict[str, tf.Tensor]:
      self.optimizer.apply_gradients(zip(grads, variables))
      return self.balancer.update(stats)

    if careful:
      inputs_ok = self.cross.all_true(guard.all_finite(objective, losses, grads))
      diagnostics = self._apply_careful(inputs_ok, apply, diagnose is not None)
      # Finite inputs can still make a non-finite update (a balancer's own
      # arithmetic overflowing): a step is good only if its result is finite too.
      result["ok"] = tf.logical_and(inputs_ok, guard.variables_finite(self.state_variables))
    else:
      self.loss_sum.assign_add(tf.reduce_sum(losses))
      diagnostics = apply()
    self.step.assign_add(1)
    if diagnose is not None:
      result["diagnostics"] = {**diagnostics, **self.balancer.summaries()}
      if not careful:
        # Read after the update: a non-finite gradient anywhere in the loop
        # has left a non-finite variable behind (optimizer arithmetic keeps NaN).
        result["healthy"] = tf.logical_and(tf.math.is_finite(self.loss_sum),
                                           guard.variables_finite(self.state_variables))
    return result

  def run(self, iterator, num_steps: int, diagnose: bool = False, careful: bool = False) -> dict:
    """Runs `num_steps` steps through a compiled loop; returns the last step's logs.

    The fast loop's logs hold `healthy`; the careful loop's hold `guard`
    (a GuardState as a dict).
    """
    loop = self.careful_loop if careful else self.loop
    args = (iterator, tf.constant(num_steps, tf.int32), tf.constant(diagnose))
    if self.executor == SINGLE_THREADED:
      with tf.experimental.function_executor_type("SINGLE_THREADED_EXECUTOR"):
        return loop(*args)
    return loop(*args)

  def _loop(self, iterator, num_steps: tf.Tensor, diagnose: tf.Tensor) -> dict:
    """Runs `num_steps` (≥ 1) steps; returns the logs of the last one.

    The last step is written outside the tf.range loop so its logs can be
    returned without loop-carried state; only it computes diagnostics.
    """
    self.loss_sum.assign(0.0)
    for _ in tf.range(num_steps - 1):
      self.strategy.run(self.train_step, args=(next(iterator),))
    return self._first_replica(self.strategy.run(self.train_step, args=(next(iterator), diagnose)))

  def _first_replica(self, values):
    """Values every replica computed alike, from the first (local) replica."""
    return tf.nest.map_structure(lambda v: self.strategy.experimental_local_results(v)[0], values)

  def _careful_step(self, indices: tf.Tensor, diagnose: tf.Tensor | None = None) -> dict:
    return self.train_step(indices, diagnose, careful=True)

  def _careful_loop(self, iterator, num_steps: tf.Tensor, diagnose: tf.Tensor) -> dict:
    """`_loop` testing every step; carries the guard's record and returns it as `guard`."""
    state = guard.initial_state(len(self.task_specs))
    for _ in tf.range(num_steps - 1):
      result = self._first_replica(self.strategy.run(self._careful_step, args=(next(iterator),)))
      state = guard.record(state, result["ok"], result["step"], result["losses"])
    logs = self._first_replica(self.strategy.run(self._careful_step, args=(next(iterator), diagnose)))
    logs["guard"] = guard.record(state, logs["ok"], logs["step"], logs["losses"])._asdict()
    return logs

"""The compiled train loop: up to `steps_per_call` steps per call, no Python in between.

A call receives the row indices of its steps as one [steps_per_call, batch]
int32 tensor (data/pipeline.py) and the number of steps to run as a tensor,
and iterates with an explicit `tf.while_loop`: one trace, and under XLA one
compiled program, serve every call, whatever its length. (`for _ in
tf.range(n)` would hand XLA `n` as the loop's maximum trip count, a
compile-time constant: one compilation per distinct loop length.) Every step
of a call, the last one included, runs the same loop body, so under XLA a
step's arithmetic never depends on where loop boundaries fall: a resumed or a
shorter run computes the same bits as an uninterrupted or longer one. The body
carries the step's logs (losses, weights, objective, the balancer's
diagnostics), and the loop returns those of the last step; what only reads
state (balancer summaries, the health test, gradient-conflict statistics) is
computed once after the loop.

Each step gathers its batch from the device-resident split, computes per-task
losses averaged over the global batch (`tf.nn.compute_average_loss`, correct
under tf.distribute), and computes only the per-task gradients the balancer's
`gradient_scope` asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import functools
import time

import numpy as np
import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Balancer, GradientScope, StepStats
from mtl_research.balancers.gramian import gramian_of
from mtl_research.config import Executor, NanPolicy, values
from mtl_research.data.pipeline import DeviceSplit, TrainOrder
from mtl_research.errors import UserError
from mtl_research.models.base import MultiTaskModel
from mtl_research.train import compilation, guard
from mtl_research.train.cross_replica import CrossReplica


def flatten(tensors) -> tf.Tensor:
  return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def gradients(tape: tf.GradientTape, target, variables, output_gradients=None) -> list:
  """`tape.gradient` of `target` for `variables`, zeros (of each variable's own shape and dtype) where unconnected.

  Not `unconnected_gradients=ZERO`: TensorFlow then makes the zeros with the
  variable's `dtype`, which a Keras 3 variable gives as a string ("float32"),
  and fails (for example the L2 penalty's gradient of a bias, which it does not reach).
  """
  variables = list(variables)
  grads = tape.gradient(target, variables, output_gradients=output_gradients)
  return [tf.zeros(v.shape, tf.as_dtype(v.dtype)) if g is None else g for g, v in zip(grads, variables)]


def conflict_stats(task_grads: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
  """Pairwise cosine [T, T] and norms [T] of flattened per-task gradients."""
  stacked = tf.stack(task_grads)
  norms = tf.norm(stacked, axis=1)
  unit = stacked / tf.maximum(norms, 1e-12)[:, None]
  return tf.matmul(unit, unit, transpose_b=True), norms


def resolve_executor(executor: str, distributed: bool = False, jit_compile: bool = False) -> str:
  """`auto`: TensorFlow's single-threaded executor for the graph loop on a CPU-only machine.

  The graph loop's step of a small model is hundreds of tiny ops; running them
  on the calling thread avoids a thread-pool hand-off per op, which on 2 cores
  is both faster and far steadier (scripts/benchmark.py). Under XLA the loop is
  one kernel, so the executor has nothing to schedule. GPUs and tf.distribute
  need asynchronous kernels, which that executor does not run, so they keep TF's default.
  """
  if executor == Executor.AUTO:
    cpu_only = not tf.config.list_physical_devices("GPU")
    return Executor.SINGLE_THREADED if cpu_only and not distributed and not jit_compile else Executor.DEFAULT
  return executor


# Keeps the balancers' random streams apart from the input order's, which is keyed by (seed, epoch).
_BALANCER_STREAM = 1 << 40


def balancer_seed(seed: int, step: tf.Tensor) -> tf.Tensor:
  """The stateless seed [2] (int64) a balancer draws its random numbers of `step` from.

  A function of --seed and the step only: every replica draws the same numbers,
  and a resumed run draws those of the run it continues.
  """
  return tf.stack([tf.constant(seed + _BALANCER_STREAM, tf.int64), tf.cast(step, tf.int64)])


def _row(block: tf.Tensor, i: tf.Tensor) -> tf.Tensor:
  """Row `i` of `block`. A gather, not `block[i]`: XLA compiles a slice's bounds as constants,
  so `block[num_steps - 1]` would make the loop length part of the program (one per length)."""
  return tf.gather(block, i)


def call(function, executor: str, *args):
  """`function(*args)` under `executor`; its results as NumPy (which also waits for it to finish)."""
  if executor == Executor.SINGLE_THREADED:
    with tf.experimental.function_executor_type("SINGLE_THREADED_EXECUTOR"):
      logs = function(*args)
  else:
    logs = function(*args)
  return tf.nest.map_structure(lambda t: t.numpy(), logs)


class CallLogs:
  """The logs of a run of several loop calls: the last call's, with means over all of them.

  The fast loop's result holds `healthy` (every call healthy), the careful
  loop's `guard` (the record of all of them, as a dict).
  """

  def __init__(self, num_tasks: int, careful: bool):
    self.num_tasks = num_tasks
    self.careful = careful
    self.logs: dict = {}
    self.healthy = True
    self.record: guard.GuardState | None = None
    self.loss_sum, self.objective_sum, self.counted = 0.0, 0.0, 0.0  # the calls' means, weighted back into sums

  def add(self, logs: dict) -> None:
    """Adds one call's NumPy logs."""
    self.logs = logs
    if logs["steps_counted"] > 0:
      self.loss_sum = self.loss_sum + logs["mean_losses"] * logs["steps_counted"]
      self.objective_sum += float(logs["mean_objective"] * logs["steps_counted"])
      self.counted += float(logs["steps_counted"])
    if self.careful:
      part = guard.GuardState(**logs["guard"])
      self.record = part if self.record is None else guard.merge(self.record, part)
    else:
      self.healthy = self.healthy and bool(logs["healthy"])

  def result(self) -> dict:
    """The last call's logs with the means (NaN when every batch was skipped) and the health or record."""
    logs = dict(self.logs)
    if self.counted > 0:
      logs["mean_losses"] = np.asarray(self.loss_sum / self.counted, np.float32)
      logs["mean_objective"] = np.float32(self.objective_sum / self.counted)
    else:  # every batch skipped: no mean
      logs["mean_losses"] = np.full(self.num_tasks, np.nan, np.float32)
      logs["mean_objective"] = np.float32(np.nan)
    logs["steps_counted"] = self.counted
    if self.careful:
      assert self.record is not None  # at least one call was added
      logs["guard"] = self.record._asdict()
    else:
      logs["healthy"] = np.bool_(self.healthy)
    return logs


# The name scopes the step opens around each component's ops, so that an op XLA
# cannot compile is traced back to the component that contains it.
SCOPES = ("input", "model", "balancer", "optimizer")


class TrainLoop:
  """Owns the compiled loop that trains `model` under `balancer`."""

  def __init__(
    self,
    model: MultiTaskModel,
    balancer: Balancer,
    optimizer,
    data: DeviceSplit,
    order: TrainOrder,
    global_step: tf.Variable,
    steps_per_call: int,
    log_grad_conflict: bool = False,
    executor: str = Executor.DEFAULT,
    nan_policy: str = NanPolicy.STOP,
    strategy: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
    seed: int = 0,
  ):
    self.model = model
    self.seed = seed
    self.balancer = balancer
    self.optimizer = optimizer
    self.data = data
    self.order = order
    self.global_batch_size = order.batch_size
    self.global_step = global_step
    self.steps_per_call = steps_per_call
    self.log_grad_conflict = log_grad_conflict
    self.task_specs = model.task_specs
    self.distributed = strategy is not None
    # The default strategy's `run` is a plain call: one code path serves both.
    self.strategy = strategy or tf.distribute.get_strategy()
    self.cross = CrossReplica(int(self.strategy.num_replicas_in_sync))
    self.requested_executor = executor
    if nan_policy not in values(NanPolicy):
      raise ValueError(f"nan_policy must be one of {values(NanPolicy)}, not {nan_policy!r}")
    self.nan_policy = nan_policy
    # The fast loop's running sum of losses (≥ 0, so finite iff every loss was); not checkpointed.
    self.loss_sum = tf.Variable(
      0.0, trainable=False, name="loop_loss_sum", aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA
    )
    self._diagnostic_specs = None
    self._use(jit_compile)

  def _use(self, jit_compile: bool) -> None:
    """(Re)creates the loop functions, compiled with XLA or as TensorFlow graphs."""
    self.jit_compile = jit_compile
    self.executor = resolve_executor(self.requested_executor, self.distributed, jit_compile)
    # No AutoGraph: the step writes its control flow as tf.while_loop / tf.cond /
    # tf.where, and converting the source of every function it calls (the
    # model, the balancer, Keras's optimizer) took 2.5 s of a 3 s trace.
    self.loop = tf.function(self._loop, jit_compile=jit_compile, autograph=False)
    self.careful_loop = tf.function(self._careful_loop, jit_compile=jit_compile, autograph=False)
    self.compiled = False
    self.compile_seconds = 0.0  # of the last `compile`

  @property
  def mode(self) -> str:
    return "XLA" if self.jit_compile else "graph"

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

  def scope_variables(self) -> tuple[tf.Variable, ...]:
    """The variables whose per-task gradients the balancer's scope asks for (REPRESENTATION: the shared ones)."""
    scope = self.balancer.gradient_scope
    if scope == GradientScope.LAST_SHARED:
      return tuple(self.model.gradnorm_variables)
    if scope in (GradientScope.SHARED, GradientScope.REPRESENTATION):
      return tuple(self.model.shared_variables)
    return ()

  @property
  def _representation_scope(self) -> bool:
    return self.balancer.gradient_scope == GradientScope.REPRESENTATION

  def task_losses(self, labels, outputs) -> list[tf.Tensor]:
    """Per-task scalar losses, each averaged over the global batch.

    A list, not a stacked tensor: per-task gradients must start from these
    scalars, because slicing a stack after the tape closes is not recorded.
    """
    return [
      tf.nn.compute_average_loss(
        tasks_lib.per_example_loss(task, labels[task.name], outputs[task.name]),
        global_batch_size=self.global_batch_size,
      )
      for task in self.task_specs
    ]

  def _regularization(self) -> tuple[tf.Tensor, tf.Tensor]:
    """(the model's regularization, this replica's share of it)."""
    if not self.model.losses:
      zero = tf.constant(0.0)
      return zero, zero
    total = tf.add_n(self.model.losses)
    return total, tf.nn.scale_regularization_loss(total)

  def _gradients(
    self, tape, objective, regularization, stats: StepStats, local_task_grads=None, representation=None
  ) -> tuple[list, list]:
    """Gradients for every trained variable: from the objective, or aggregated.

    `local_task_grads`: this replica's per-task gradients of the scope
    variables, when the step computed them. The objective's gradient for
    those variables is then assembled from them by the chain rule,
    ∇_W objective = Σ_t (∂objective/∂L_t)·∇_W L_t (+ regularization), instead
    of a backward pass that would compute every ∇_W L_t again inside the sum:
    with the loop under XLA the step is bound by its matrix products, and for
    GradNorm this saves one of them per step (BUILD.md, the step).
    """
    variables = self.trained_variables
    if self._representation_scope:
      return self._through_representation(tape, objective, regularization, stats, representation)
    if not self.balancer.aggregates:
      if local_task_grads is None:
        return self._share_joint(tape.gradient(objective, variables), variables), variables
      return self._assembled(tape, objective, regularization, stats, local_task_grads)
    scope_ids = {id(v) for v in stats.scope_variables}
    others = [v for v in variables if id(v) not in scope_ids]
    grads = gradients(tape, objective, others)
    with tf.name_scope("balancer"):
      shared = self.cross.divide_among_replicas(self.balancer.aggregate(stats))
    # The aggregated gradient replaces the task terms only; regularization still applies.
    return self._share_joint(grads, others) + self._plus_regularization(
      tape, regularization, stats.scope_variables, shared
    ), others + list(stats.scope_variables)

  def _through_representation(self, tape, objective, regularization, stats: StepStats, representation) -> tuple:
    """REPRESENTATION scope: the shared variables follow the gradient of Z that `aggregate` returns.

    One backward pass through the trunk from Z (`output_gradients`); the
    heads and the balancer's joint variables follow `objective`. Each replica
    back-propagates its own rows' gradient (its losses are normalized by the
    global batch), so the optimizer's sum over replicas is the global gradient.
    """
    shared_ids = {id(v) for v in stats.scope_variables}
    others = [v for v in self.trained_variables if id(v) not in shared_ids]
    grads = self._share_joint(gradients(tape, objective, others), others)
    with tf.name_scope("balancer"):
      (gradient_of_z,) = self.balancer.aggregate(stats)
    shared = list(stats.scope_variables)
    through = gradients(
      tape, representation, shared, output_gradients=tf.stop_gradient(tf.cast(gradient_of_z, representation.dtype))
    )
    return grads + self._plus_regularization(tape, regularization, shared, through), others + shared

  def _plus_regularization(self, tape, regularization, variables, grads: list) -> list:
    """`grads` of `variables` plus the regularization's gradient.

    Only when there is some: the gradient of a constant would be zeros of each
    variable's dtype, which a Keras 3 variable gives as a string.
    """
    if not self.model.losses:
      return list(grads)
    reg = gradients(tape, regularization, variables)
    return [g + r for g, r in zip(grads, reg)]

  def _assembled(self, tape, objective, regularization, stats: StepStats, local_task_grads) -> tuple[list, list]:
    """The objective's gradients, those of the (dense) scope variables from `local_task_grads`."""
    # IndexedSlices (an embedding's rows) keep their sparse gradient from the tape.
    dense = [
      i for i in range(len(stats.scope_variables)) if all(isinstance(grads[i], tf.Tensor) for grads in local_task_grads)
    ]
    dense_ids = {id(stats.scope_variables[i]) for i in dense}
    others = [v for v in self.trained_variables if id(v) not in dense_ids]
    grads = self._share_joint(tape.gradient(objective, others), others)
    # ∂objective/∂L_t, taken at the global losses (under a strategy each replica's
    # task gradients are its own share, so Keras's sum over replicas is global).
    coefficients = tape.gradient(objective, stats.losses)
    assembled = [tf.add_n([coefficients[t] * grads_t[i] for t, grads_t in enumerate(local_task_grads)]) for i in dense]
    scope = [stats.scope_variables[i] for i in dense]
    return grads + self._plus_regularization(tape, regularization, scope, assembled), others + scope

  def _share_joint(self, grads: list, variables: list) -> list:
    """Joint-variable gradients are taken at the global losses: alike on every replica."""
    if not self.cross.active:
      return grads
    joint = {id(v) for v in self.balancer.joint_variables}
    return [self.cross.divide_among_replicas([g])[0] if id(v) in joint else g for g, v in zip(grads, variables)]

  def _losses_after(self, features, labels) -> tf.Tensor:
    """[T] global losses of this step's rows under the updated model, for `needs_losses_after_update`.

    In training mode, as the step's own losses were (the authors of FAMO, who
    need them, recompute them so): the two differ by the update alone. Under
    tf.distribute each replica recomputes its rows and the losses are all-reduced.
    """
    with tf.name_scope("model"):
      outputs = self.model(features, training=True)
    return tf.stop_gradient(self.cross.global_losses(tf.stack(self.task_losses(labels, outputs))))

  def _conflict(self, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Cosines and norms of the per-task gradients on the shared variables, on `rows`."""
    features, labels = self.data.gather(rows)
    shared = self.model.shared_variables
    with tf.GradientTape(persistent=True) as tape:
      # training=False: a diagnostic must not draw dropout masks, or turning it
      # on would change the random numbers, and so the results, of training.
      losses = self.task_losses(labels, self.model(features, training=False))
    grads = [flatten(gradients(tape, loss, shared)) for loss in losses]
    return conflict_stats(self.cross.sum(grads))

  def _apply_careful(self, ok: tf.Tensor, apply) -> dict[str, tf.Tensor]:
    """Runs `apply` (model and balancer update) if `ok` or the policy is stop.

    Returns the balancer's diagnostics; those of a skipped step are NaN.
    """
    if self.nan_policy == NanPolicy.STOP:
      return apply()  # a failing step ends the run; applying it changes nothing that is kept
    # cond_v2 traces the true branch first, so the skipped branch can mirror its outputs.
    structure = {}

    def applied() -> dict[str, tf.Tensor]:
      structure["diagnostics"] = apply()
      return structure["diagnostics"]

    def skipped() -> dict[str, tf.Tensor]:
      return tf.nest.map_structure(
        lambda t: tf.fill(tf.shape(t), tf.constant(float("nan"), t.dtype)), structure["diagnostics"]
      )

    return tf.cond(ok, applied, skipped)

  def train_step(self, indices: tf.Tensor, careful: bool = False) -> dict:
    """One update on the rows `indices`; returns its logs.

    The logs: the global `losses` [T], the `step` index, the `weights` [T]
    the step used, the logged `objective` (with all of the regularization)
    and the balancer's `diagnostics`. The fast path (`careful` False) also adds
    the losses to `loss_sum`; the careful path tests the step's inputs, applies
    `nan_policy` to them, and reports `ok` (inputs and resulting variables
    finite); see mtl_research/train/guard.py.
    """
    with tf.name_scope("input"):
      features, labels = self.data.gather(indices)
    scope_variables = self.scope_variables()
    needs_tape_again = bool(scope_variables) or self.balancer.aggregates
    representation = None
    step = self.global_step.read_value()
    seed = balancer_seed(self.seed, step)
    with tf.name_scope("balancer"):
      self.balancer.begin_step(step, seed)
    with tf.GradientTape(persistent=needs_tape_again) as tape:
      with tf.name_scope("model"):
        if self._representation_scope:
          outputs, representation = self.model.forward(features, training=True)
        else:
          outputs = self.model(features, training=True)
      task_losses = self.task_losses(labels, outputs)
      losses = self.cross.global_losses(tf.stack(task_losses))
      # Keras 3 computes model.losses when read, so read it once, on the tape.
      with tf.name_scope("model"):
        total_regularization, regularization = self._regularization()
      with tf.name_scope("balancer"):
        task_objective = self.balancer.objective(losses)
      objective = task_objective + regularization
    task_grads = local_task_grads = gramian = None
    if representation is not None:
      # ∇_Z L_t of this replica's rows: the rows of the global batch are split between replicas,
      # so the global Gramian is the sum of the replicas' own.
      task_grads = tuple((tape.gradient(loss, representation),) for loss in task_losses)
      if self.balancer.needs_gramian:
        gramian = self.cross.sum(gramian_of(task_grads))
    elif scope_variables:
      local_task_grads = tuple(tuple(gradients(tape, loss, scope_variables)) for loss in task_losses)
      task_grads = self.cross.sum(local_task_grads)
      if self.balancer.needs_gramian:
        gramian = gramian_of(task_grads)
    stats = StepStats(
      losses,
      task_grads,
      scope_variables,
      step,
      gramian,
      seed,
      self.cross.first_row(self.global_batch_size),
      self.cross.sum,
      self.cross.replicas,
      representation,
    )
    grads, variables = self._gradients(tape, objective, regularization, stats, local_task_grads, representation)
    with tf.name_scope("balancer"):
      weights = self.balancer.weights()  # after `aggregate`: the weights this step used
    # Under a strategy each replica's objective holds only its share of the regularization.
    logged = task_objective + total_regularization if self.cross.active else objective
    result = {"losses": losses, "step": stats.step, "weights": weights, "objective": logged}

    def apply() -> dict[str, tf.Tensor]:
      with tf.name_scope("optimizer"):
        self.optimizer.apply_gradients(zip(grads, variables))
      seen = stats
      if self.balancer.needs_losses_after_update:
        seen = dataclasses.replace(stats, losses_after=self._losses_after(features, labels))
      with tf.name_scope("balancer"):
        return self.balancer.update(seen)

    if careful:
      inputs_ok = self.cross.all_true(guard.all_finite(objective, losses, grads))
      result["diagnostics"] = self._apply_careful(inputs_ok, apply)
      # Finite inputs can still make a non-finite update (a balancer's own
      # arithmetic overflowing): a step is good only if its result is finite too.
      result["ok"] = tf.logical_and(inputs_ok, guard.variables_finite(self.state_variables))
    else:
      self.loss_sum.assign_add(tf.reduce_sum(losses))
      result["diagnostics"] = apply()
    self.global_step.assign_add(1)
    return result

  # --- the loops ---------------------------------------------------------------------------

  def _first_replica(self, values):
    """Values every replica computed alike, from the first (local) replica."""
    return tf.nest.map_structure(lambda v: self.strategy.experimental_local_results(v)[0], values)

  def _step_at(self, block: tf.Tensor, i: tf.Tensor, careful: bool) -> dict:
    return self.train_step(self.cross.local_rows(_row(block, i)), careful)

  def _balancer_diagnostics(self) -> dict:
    """Zeros shaped like the balancer's diagnostics, the loop's initial logs.

    Their structure is learned by tracing `balancer.update` alone (a few ops,
    never run), once per TrainLoop.
    """
    if self._diagnostic_specs is None:
      scope = self.scope_variables()
      num_tasks = len(self.task_specs)
      # (Under the representation scope `update` sees ∇_Z L_t, whose batch size the probe does not know.)
      per_variable = bool(scope) and not self._representation_scope
      grad_specs = (
        tuple(tuple(tf.TensorSpec(v.shape, v.dtype) for v in scope) for _ in range(num_tasks)) if per_variable else None
      )

      def update(losses, task_grads, step):
        return self.balancer.update(
          StepStats(losses, task_grads, scope, step, seed=balancer_seed(self.seed, step), losses_after=losses)
        )

      def probe(losses, task_grads, step):
        return self._first_replica(self.strategy.run(update, args=(losses, task_grads, step)))

      traced = tf.function(probe, autograph=False).get_concrete_function(
        tf.TensorSpec([num_tasks], tf.float32), grad_specs, tf.TensorSpec([], tf.int64)
      )
      self._diagnostic_specs = tf.nest.map_structure(
        lambda t: tf.TensorSpec(t.shape, t.dtype), traced.structured_outputs
      )
    return tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), self._diagnostic_specs)

  def per_task_diagnostics(self) -> list[str]:
    """Names of the balancer's diagnostics (`update`'s and `summaries`') that hold one value per task."""
    values = {**self._balancer_diagnostics(), **self.balancer.summaries()}
    return [name for name, value in values.items() if value.shape.rank == 1]

  def initial_carry(self, careful: bool) -> tuple:
    """What the loop carries from before its first step: (last logs, guard record, sums).

    The sums: losses [T], objective and the number of steps counted (applied).
    """
    num_tasks = len(self.task_specs)
    logs = {
      "losses": tf.zeros([num_tasks]),
      "step": tf.constant(-1, tf.int64),
      "weights": tf.zeros([num_tasks]),
      "objective": tf.constant(0.0),
      "diagnostics": self._balancer_diagnostics(),
    }
    if careful:
      logs["ok"] = tf.constant(True)
    sums = (tf.zeros([num_tasks]), tf.constant(0.0), tf.constant(0.0))
    return logs, guard.initial_state(num_tasks), sums

  def advance(self, block: tf.Tensor, i: tf.Tensor, carry: tuple, careful: bool = False) -> tuple:
    """Runs step `i` of `block`; the loop's carry (`initial_carry`) after it.

    The body of this loop's `tf.while_loop`, and of a pack's (train/pack_loop.py),
    which runs several loops' steps in one program.
    """
    _, record, sums = carry
    step_fn = functools.partial(self._step_at, careful=careful)
    logs = self._first_replica(self.strategy.run(step_fn, args=(block, i)))
    counted = tf.constant(1.0)
    if careful:
      record = guard.record(record, logs["ok"], logs["step"], logs["losses"])
      counted = tf.cast(logs["ok"], tf.float32)
    losses = tf.where(counted > 0, logs["losses"], 0.0)
    objective = tf.where(counted > 0, logs["objective"], 0.0)
    return logs, record, (sums[0] + losses, sums[1] + objective, sums[2] + counted)

  @staticmethod
  def with_means(carry: tuple) -> tuple[dict, guard.GuardState]:
    """(the last step's logs with the loop's `mean_losses` [T], `mean_objective` and `steps_counted`, the record).

    The means are over the steps that were applied (a skipped batch's values are left out).
    """
    logs, record, sums = carry
    logs = dict(logs)
    # NaN when no step was applied (every batch skipped): no mean, not a mean of zero.
    count = tf.where(sums[2] > 0, sums[2], np.nan)
    logs["mean_losses"], logs["mean_objective"], logs["steps_counted"] = sums[0] / count, sums[1] / count, sums[2]
    return logs, record

  def _steps(self, block: tf.Tensor, num_steps: tf.Tensor, careful: bool) -> tuple[dict, guard.GuardState]:
    """Runs steps 0 .. num_steps − 1 of `block`; (the last step's logs and means, the guard's record)."""

    def body(i, *carry):
      return (i + 1, *self.advance(block, i, carry, careful))

    _, *carry = tf.while_loop(lambda i, *_: i < num_steps, body, (tf.constant(0), *self.initial_carry(careful)))
    return self.with_means(tuple(carry))

  def _model_summaries(self, block: tf.Tensor, last: tf.Tensor) -> dict:
    """The architecture's `summaries` on the last step's rows (training=False: no dropout mask drawn), replica mean."""

    def local(b, i):
      features, _ = self.data.gather(self.cross.local_rows(_row(b, i)))
      with tf.name_scope("model"):
        values = self.model.summaries(features)
      if not self.cross.active or not values:
        return values
      return {name: total / self.cross.replicas for name, total in self.cross.sum(values).items()}

    return self._first_replica(self.strategy.run(local, args=(block, last)))

  def _loop_end(self, logs: dict, block: tf.Tensor, num_steps: tf.Tensor, diagnose: tf.Tensor) -> dict:
    """Adds what only reads state: the balancer's summaries and the conflict statistics."""
    last = tf.maximum(num_steps - 1, 0)
    logs["diagnostics"] = {**logs["diagnostics"], **self.balancer.summaries(), **self._model_summaries(block, last)}
    if not self.log_grad_conflict:
      return logs
    if self.cross.active:
      # All-reduces cannot run inside tf.cond: computed at every loop's end.
      conflict = self._first_replica(
        self.strategy.run(lambda b, i: self._conflict(self.cross.local_rows(_row(b, i))), args=(block, last))
      )
    else:
      num = len(self.task_specs)
      conflict = tf.cond(
        diagnose, lambda: self._conflict(_row(block, last)), lambda: (tf.zeros([num, num]), tf.zeros([num]))
      )
    logs["conflict_cos"], logs["conflict_norm"] = conflict
    return logs

  def _loop(self, block: tf.Tensor, num_steps: tf.Tensor, diagnose: tf.Tensor) -> dict:
    """Runs `num_steps` (≥ 0) steps; returns the logs of the last one and `healthy`.

    `healthy` is read after the updates: a non-finite gradient anywhere in the
    loop has left a non-finite variable behind (optimizer arithmetic keeps NaN),
    and a non-finite loss a non-finite `loss_sum`.
    """
    self.loss_sum.assign(0.0)
    logs, _ = self._steps(block, num_steps, careful=False)
    return self.fast_loop_end(logs, block, num_steps, diagnose)

  def fast_loop_end(self, logs: dict, block: tf.Tensor, num_steps: tf.Tensor, diagnose: tf.Tensor) -> dict:
    """The fast loop's result after its steps: `healthy` and what only reads state (`_loop_end`)."""
    logs["healthy"] = tf.logical_and(tf.math.is_finite(self.loss_sum), guard.variables_finite(self.state_variables))
    return self._loop_end(logs, block, num_steps, diagnose)

  def _careful_loop(self, block: tf.Tensor, num_steps: tf.Tensor, diagnose: tf.Tensor) -> dict:
    """`_loop` testing every step; returns the guard's record as `guard` (a GuardState as a dict)."""
    logs, record = self._steps(block, num_steps, careful=True)
    logs["guard"] = record._asdict()
    return self._loop_end(logs, block, num_steps, diagnose)

  # --- calling the loops ---------------------------------------------------------------------

  def _call(self, loop, rows: np.ndarray, diagnose: bool) -> dict:
    """One call of `loop` on the batches `rows` (at most steps_per_call of them); NumPy logs."""
    block = np.zeros([self.steps_per_call, self.global_batch_size], np.int32)
    block[: len(rows)] = rows
    return call(loop, self.executor, tf.constant(block), tf.constant(len(rows), tf.int32), tf.constant(diagnose))

  def compile(self, fall_back: bool = False, components: Mapping[str, str] | None = None) -> str:
    """Traces and, under XLA, compiles the fast loop now, running no step; returns a line saying so.

    If XLA cannot compile the loop: with `fall_back`, the graph loop is used
    instead and the line says which component forced it (`components` maps
    SCOPES to what the user chose, e.g. {"balancer": "--balancer=gradnorm"});
    otherwise UserError.
    """
    tick = time.perf_counter()
    try:
      self._call(self.loop, np.zeros([0, self.global_batch_size], np.int32), False)
    except tf.errors.InvalidArgumentError as error:
      if not self.jit_compile or not compilation.is_compile_error(error):
        raise
      cause = compilation.culprit(error, components or {})
      if not fall_back:
        raise UserError(
          f"--jit_compile=on: XLA cannot compile the train loop: {cause}; use --jit_compile=auto or off."
        ) from None
      self._use(False)
      line = self.compile()
      self.compile_seconds = time.perf_counter() - tick
      return f"XLA cannot compile {cause}: using the graph loop. {line}"
    self.compiled = True
    self.compile_seconds = time.perf_counter() - tick
    verb = "Compiled the train loop with XLA" if self.jit_compile else "Traced the train loop (graph)"
    return f"{verb} in {self.compile_seconds:.2f} s."

  def run(self, num_steps: int, diagnose: bool = False, careful: bool = False, rows: np.ndarray | None = None) -> dict:
    """Runs `num_steps` (≥ 1) steps from the current step; returns the last step's logs (NumPy)
    and the means over all `num_steps` (`mean_losses`, `mean_objective`).

    `rows` [num_steps, batch] replaces the training order's batches (tests).
    More steps than `steps_per_call` take several calls of the same loop:
    the fast loop's logs hold `healthy` (every call healthy), the careful
    loop's `guard` (the record of all of them, as a dict).
    """
    if num_steps < 1:
      raise ValueError(f"num_steps must be at least 1, not {num_steps}")
    if rows is None:
      rows = self.order.batches(int(self.global_step.numpy()), num_steps)
    if len(rows) != num_steps:
      raise ValueError(f"{len(rows)} batches of rows for {num_steps} steps")
    loop = self.careful_loop if careful else self.loop
    calls = CallLogs(len(self.task_specs), careful)
    for begin in range(0, num_steps, self.steps_per_call):
      end = min(begin + self.steps_per_call, num_steps)
      calls.add(self._call(loop, rows[begin:end], diagnose and end == num_steps))
    logs = calls.result()
    self.compiled = True
    return logs

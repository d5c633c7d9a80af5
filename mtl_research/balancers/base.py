"""The interface between the train step and a loss balancer.

The step asks a balancer three questions and never tests its name:

1. `gradient_scope`: which per-task gradients must I compute for you?
   NONE (loss weighting: uncertainty, DWA, ...), LAST_SHARED (the variables of
   the last shared layer, the architecture's `gradnorm_variables`: GradNorm),
   SHARED (every shared variable: PCGrad, MGDA, CAGrad, ...) or REPRESENTATION (the shared representation Z, the trunk's
   output: MGDA-UB, GradDrop; `aggregate` then returns the gradient of Z that
   the step back-propagates through the trunk, one backward pass). The step
   computes only those, and their Gramian if `needs_gramian`. A balancer that
   keeps state shaped like its scope's variables creates it in `build`.
2. `objective(losses)`: the scalar whose gradient the model follows. Variables
   in `joint_variables` (for example uncertainty's log-variances) are trained by
   the model's optimizer on the same objective.
3. If `aggregates` is True, `aggregate(stats)` returns the gradient of the
   shared variables instead (gradient surgery); the rest of the model still
   follows `objective`.

Before the objective, every step calls `begin_step(step, seed)`: a balancer whose
objective depends on the step or on random draws (RLW's weights, DWA's epoch
means, STCH's warm-up) prepares it there, from its state and (step, seed) alone.

After the model update the step calls `update(stats)`, where a balancer updates
state it trains by its own rule (GradNorm's weights, its initial losses) and
returns the diagnostics it computed on the way (a balancer that sets
`needs_losses_after_update`, FAMO, finds there the losses of the same batch
after the update, `StepStats.losses_after`: the step computes that second
forward pass only for it); `summaries()` adds scalars read
from its state. `weights()` reports the current effective per-task weights.
All state lives in tf.Variables attached to the balancer (a tf.Module), so it
is checkpointed with the model. A balancer whose rule reads the run's length
declares it (`uses_run_length`), so that such a run is never extended.

Under tf.distribute (BUILD.md, "Distribution") the step hands every replica
the same global-batch quantities: `objective` is evaluated at the all-reduced
losses, and `StepStats` holds all-reduced losses and task gradients (except
under the REPRESENTATION scope, whose ∇_Z L_t are each replica's own rows:
`StepStats.replica_sum` and `row_offset` are there for them). A
balancer therefore computes the same values on every replica, and needs only
two rules: create state with `state_variable` (the first replica's write is
kept, so copies cannot drift), and train its own variables with plain
assignments such as `optim.state_adam.StateAdam`, not a Keras optimizer (Keras sums
gradients over replicas, and cannot run inside `tf.cond`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import enum
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.replicated import state_variable  # noqa: F401  (re-exported: balancers create state with it)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The run's length, for balancers whose rule refers to steps or epochs.

  A balancer whose rule reads `total_steps` (a warm-up over a fraction of the
  run, weights annealed to its end) must set `Balancer.uses_run_length`.
  `steps_per_epoch` does not depend on the length.
  """

  steps_per_epoch: int
  total_steps: int


class GradientScope(enum.Enum):
  NONE = "none"
  LAST_SHARED = "last_shared"  # the model's `gradnorm_variables`
  SHARED = "shared"
  # The shared representation Z (the trunk's output): `task_grads` holds each task's ∇_Z L_t.
  REPRESENTATION = "representation"


def _identity(value: Any) -> Any:
  return value


@dataclasses.dataclass(frozen=True)
class StepStats:
  """What the step measured this step, handed to `aggregate` and `update`.

  Attributes:
    losses: [T] per-task losses, each averaged over the global batch.
    task_grads: for each task, the gradients of its loss with respect to the
      variables of `gradient_scope` (in `scope_variables` order); None if the
      balancer's scope is NONE.
    scope_variables: the variables `task_grads` refer to (under the
      REPRESENTATION scope: the shared variables, which follow the gradient of
      Z that `aggregate` returns; `task_grads` then holds each task's ∇_Z L_t
      on this replica's rows, one tensor [rows, ...] per task).
    step: int64 count of steps completed before this one.
    gramian: [T, T] float64 Gram matrix of the per-task gradients over the
      global batch, if the balancer `needs_gramian` (else None).
    seed: int64 [2], the stateless seed of this step's random draws (a task
      order, a mask, random weights: `portable_random.uniform(seed, ...)`, the same bits under XLA and in a graph), from
      --seed and the step alone: the same on every replica and on resume.
    row_offset: int32, the global batch's index of this replica's first row
      (0 on one device): under the REPRESENTATION scope a per-row draw of the
      global batch's shape, sliced from here, matches one device's draw.
    replica_sum: sums a nest of tensors over the replicas (the identity on
      one device): REPRESENTATION-scope quantities are per replica's rows.
    replicas: the number of replicas R (a Python int: shapes may depend on it);
      this replica holds rows [row_offset, row_offset + rows) of R·rows.
    representation: REPRESENTATION scope: Z itself, this replica's rows (for
      methods that read the activations' signs, such as GradDrop); else None.
    losses_after: [T] the global losses of the same batch after the model
      update (in `update` only, and only if the balancer
      `needs_losses_after_update`); else None.
  """

  losses: tf.Tensor
  task_grads: tuple[tuple[tf.Tensor, ...], ...] | None
  scope_variables: tuple[tf.Variable, ...]
  step: tf.Tensor
  gramian: tf.Tensor | None = None
  seed: tf.Tensor | None = None
  row_offset: tf.Tensor | int = 0
  replica_sum: Callable[[Any], Any] = _identity
  replicas: int = 1
  representation: tf.Tensor | None = None
  losses_after: tf.Tensor | None = None


class Balancer(tf.Module):
  """Base class: combines per-task losses (or gradients) into one update."""

  gradient_scope: GradientScope = GradientScope.NONE
  aggregates: bool = False
  # True if the balancer reads `StepStats.gramian` (computed by the step, all-reduced under a strategy).
  needs_gramian: bool = False
  # True if what the rule computes at some step depends on the run's length
  # (`schedule.total_steps`, or epochs counted back from the end): a run of 500
  # steps is then not the first half of a run of 1000, so a finished run cannot
  # be extended (train/run_dir.py). Set it on the class, or on the instance in
  # __init__ when only some params read the length. Reading the length only to
  # validate params (GradNorm's L(0) window) does not count.
  uses_run_length: bool = False
  # True if the rule only weighs the tasks against each other, so that with one task (a
  # --single_task baseline) its weight stays 1 and it trains exactly as `fixed` does: such a
  # run is warned about (train/components.py), since its name would claim a method it is not.
  relative_only: bool = False
  # Flags whose value the balancer fixes, {flag: (value, why)}: giving it another value on the command line
  # is refused in one sentence with the reason (flags.check_unused_flags), e.g. GradDrop's scope.
  fixed_flags: Mapping[str, tuple[str, str]] = {}
  # True if `update` needs the losses of the same batch after the model update (FAMO): the step then
  # runs the model forward again after applying the gradients and hands them over as `losses_after`.
  needs_losses_after_update: bool = False

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(name=type(self).__name__.lower())
    self.schedule = schedule
    self.task_specs = tuple(task_specs)
    self.num_tasks = len(self.task_specs)

  @property
  def task_names(self) -> list[str]:
    return [task.name for task in self.task_specs]

  @property
  def joint_variables(self) -> list[tf.Variable]:
    """Variables trained by the model's optimizer on `objective`."""
    return []

  def begin_step(self, step: tf.Tensor, seed: tf.Tensor) -> None:
    """Prepares this step's objective before it is evaluated (called at the start of every step).

    `step` (int64, steps completed before this one) and `seed` (this step's
    stateless seed, as `StepStats.seed`). It may assign state variables, but
    what it writes must follow from the state and (step, seed) alone, so that
    every replica, a rerun and a resumed run write the same.
    """
    del step, seed

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    """The scalar the model minimizes, given the [T] per-task losses."""
    raise NotImplementedError

  def build(self, scope_variables: Sequence[tf.Variable]) -> None:
    """Creates state shaped like the scope's variables (an EMA of per-task gradients, ...).

    Called once, after the model exists and before anything is restored or
    traced, inside the strategy's scope: variables made here with
    `state_variable` are checkpointed and mirrored like the others.
    """
    del scope_variables

  def aggregate(self, stats: StepStats) -> list[tf.Tensor]:
    """The combined gradient (only if `aggregates`), one tensor per entry of the tasks' `task_grads`.

    Scopes SHARED and LAST_SHARED: the gradient of each of `stats.scope_variables`.
    REPRESENTATION: [the gradient of Z], back-propagated through the trunk.
    """
    raise NotImplementedError

  def update(self, stats: StepStats) -> dict[str, tf.Tensor]:
    """Updates own state after the model step; returns named diagnostics.

    A diagnostic of shape [T] is logged per task as `<name>/<task>`; a scalar
    as `<name>`.
    """
    del stats
    return {}

  def summaries(self) -> dict[str, tf.Tensor]:
    """Named scalars read from the balancer's state, for TensorBoard.

    Called only at the last step of each loop (unlike `update`), so reading
    state here costs nothing on the other steps. Same naming rule as `update`.
    """
    return {}

  def weights(self) -> tf.Tensor:
    """[T] effective per-task weights: the factor that multiplies each loss."""
    raise NotImplementedError

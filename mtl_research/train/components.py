"""The pieces of one training run, built from a Config and a DatasetBundle.

`build` seeds everything, creates the model, balancer, optimizer (with its
slots, so a restore can fill them), compiled train step and checkpoint, all
inside the tf.distribute strategy's scope when there is one.
"""

from __future__ import annotations

import dataclasses
import sys

import tensorflow as tf

from mtl_research.balancers import BALANCERS
from mtl_research.balancers.base import Balancer, Schedule
from mtl_research.config import Config, JitMode, LrSchedule
from mtl_research.data.bundle import DatasetBundle
from mtl_research.data.pipeline import DeviceSplit, TrainOrder, steps_per_epoch
from mtl_research.models import ARCHITECTURES
from mtl_research.models.base import MultiTaskModel, random_state
from mtl_research.optim import model_optimizer
from mtl_research.train import compilation, distribution
from mtl_research.train import selection as selection_lib
from mtl_research.train.train_loop import TrainLoop

keras = tf.keras


@dataclasses.dataclass
class Components:
  """Everything a training run is made of, built but not yet trained."""

  model: MultiTaskModel
  balancer: Balancer
  optimizer: tf.keras.optimizers.Optimizer
  global_step: tf.Variable
  train_loop: TrainLoop
  checkpoint: tf.train.Checkpoint  # everything: the training state and the selection record
  training_state: tf.train.Checkpoint  # everything the next step depends on
  total_steps: int
  criterion: selection_lib.Criterion | None  # None: report the last step
  best_score: tf.Variable  # validation score of the selected checkpoint (NaN: none yet)
  best_step: tf.Variable
  skipped_batches: tf.Variable  # batches --nan_policy=skip_batch did not apply
  strategy: tf.distribute.Strategy | None = None  # None: one device, no tf.distribute
  origins: dict[str, str] = dataclasses.field(default_factory=dict)  # train_loop.SCOPES → the flag that chose each
  jit_note: str = ""  # why --jit_compile=auto runs the graph loop ('' if it does not)
  jit_mode: str = JitMode.AUTO  # --jit_compile as given

  def compile_loop(self) -> str:
    """Compiles the train loop now (see TrainLoop.compile); returns the line to log."""
    line = self.train_loop.compile(fall_back=self.jit_mode == JitMode.AUTO, components=self.origins)
    return f"{self.jit_note}. {line}" if self.jit_note else line


def total_steps(config: Config, bundle: DatasetBundle) -> int:
  """--train_steps when positive, otherwise --epochs full passes over train."""
  if config.loop.train_steps > 0:
    return config.loop.train_steps
  return config.loop.epochs * steps_per_epoch(len(bundle.train), config.loop.batch_size)


def build(config: Config, bundle: DatasetBundle, strategy: tf.distribute.Strategy | None = None) -> Components:
  """Builds model, balancer and optimizer (with its slots) for `bundle`.

  Python, NumPy and TensorFlow are seeded from --seed; --deterministic also
  makes TensorFlow choose deterministic kernels (README: Reproducibility).
  With a `strategy`, every variable is created in its scope (mirrored).
  Op determinism, once enabled, stays on for the rest of the process.
  """
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  if strategy is None:
    return _build(config, bundle, None)
  distribution.check_config(strategy, config.loop)
  with strategy.scope():
    return _build(config, bundle, strategy)


def _build(config: Config, bundle: DatasetBundle, strategy: tf.distribute.Strategy | None) -> Components:
  jit_compile, jit_note = compilation.resolve(
    config.loop.jit_compile, None if strategy is None else config.loop.strategy
  )
  model = ARCHITECTURES.get(config.model.name).component(bundle.tasks, bundle.features, config.model.params)
  model.build_for(bundle.train.features)
  steps = total_steps(config, bundle)
  schedule = Schedule(steps_per_epoch(len(bundle.train), config.loop.batch_size), steps)
  balancer = BALANCERS.get(config.balancer.name).component(bundle.tasks, config.balancer.params, schedule)
  optimizer = model_optimizer.build(config.optimizer, steps)
  global_step = tf.Variable(
    0, dtype=tf.int64, trainable=False, name="global_step", aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA
  )
  order = TrainOrder(len(bundle.train), config.loop.batch_size, config.seed)
  train_loop = TrainLoop(
    model,
    balancer,
    optimizer,
    DeviceSplit(bundle.train, replicated=strategy is not None),
    order,
    global_step,
    config.loop.steps_per_loop,
    config.loop.log_grad_conflict,
    config.loop.executor,
    config.loop.nan_policy,
    strategy,
    jit_compile,
    seed=config.seed,
  )
  # State shaped like the scope's variables exists before the optimizer's slots and the checkpoint.
  balancer.build(train_loop.scope_variables())
  for warning in _degenerate(config, bundle, balancer, steps):
    print(f"warning: {warning}", file=sys.stderr)
  if balancer.joint_variables and hasattr(optimizer, "exclude_from_weight_decay"):
    # AdamW's decay would pull e.g. uncertainty's log-variances to 0, which no paper does.
    optimizer.exclude_from_weight_decay(var_list=balancer.joint_variables)
  # Slots must exist before a restore, or Keras 3 silently drops their values.
  optimizer.build(train_loop.trained_variables)
  criterion = selection_lib.parse(config.selection, bundle.tasks)
  best_score = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name="best_score")
  best_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_step")
  skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_batches")
  state = dict(
    model=model,
    optimizer=optimizer,
    balancer=balancer,
    step=global_step,
    rng=random_state(model),
    skipped_batches=skipped,
  )
  checkpoint = tf.train.Checkpoint(**state, best_score=best_score, best_step=best_step)
  origins = {
    "model": f"--model={config.model.name}",
    "balancer": f"--balancer={config.balancer.name}",
    "optimizer": f"--optimizer={config.optimizer.name}",
    "input": f"--dataset={config.dataset.name}",
  }
  return Components(
    model,
    balancer,
    optimizer,
    global_step,
    train_loop,
    checkpoint,
    tf.train.Checkpoint(**state),
    steps,
    criterion,
    best_score,
    best_step,
    skipped,
    strategy,
    origins,
    jit_note,
    config.loop.jit_compile,
  )


def _degenerate(config: Config, bundle: DatasetBundle, balancer: Balancer, steps: int) -> list[str]:
  """Sentences about a configuration that trains, but not what its flags suggest."""
  warnings = []
  if balancer.relative_only and len(bundle.tasks) == 1:
    warnings.append(
      f"--balancer={config.balancer.name} weighs tasks against each other, and this run has one task "
      f"({bundle.tasks[0].name}): its weight stays 1, so it trains exactly as --balancer=fixed."
    )
  optimizer = config.optimizer
  if optimizer.schedule == LrSchedule.STEP and optimizer.decay_steps >= steps:
    warnings.append(
      f"--lr_decay_steps={optimizer.decay_steps} is not less than the run's {steps} steps, so "
      "--lr_schedule=step never decays the learning rate."
    )
  return warnings

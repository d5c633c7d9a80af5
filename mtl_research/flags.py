"""Command-line flags of the trainer and their translation into a `Config`.

Core flags are defined here; every `Param` declared by a registered dataset,
architecture or balancer becomes a flag of the same name. Every flag is checked
when parsed, so a bad value stops the program with one line naming the flag
before anything is written: every float flag refuses NaN, the infinities and
numbers beyond float32's range (`params.finite`), and --seed the seeds NumPy
would refuse.
"""

from __future__ import annotations

import datetime
import os
import sys

from absl import flags

from mtl_research import config as config_lib
from mtl_research import params as params_lib
from mtl_research.balancers import BALANCERS
from mtl_research.data import DATASETS
from mtl_research.errors import UserError
from mtl_research.models import ARCHITECTURES
from mtl_research.params import BOOL, ENUM, FLOAT, INT, Param

FLAGS = flags.FLAGS
_DEFAULTS = config_lib.LoopConfig()
_OPT = config_lib.OptimizerConfig()
# The largest --seed: keras.utils.set_random_seed seeds NumPy's global generator, which takes
# 0 ≤ seed < 2**32 (TensorFlow's int64 and NumPy's default_rng take more). The trainer derives
# no other seed from it, so every seed in [0, MAX_SEED] trains; mtl-ablate's --seeds share the range.
MAX_SEED = 2**32 - 1

flags.DEFINE_string("run_dir", None, "Run directory; default: a new runs/<time>-<balancer>.")
flags.DEFINE_bool("overwrite", False, "Delete an existing run directory written with other flags.")
flags.DEFINE_integer(
  "seed", 0, "Seed for data generation, shuffling and initialization.", lower_bound=0, upper_bound=MAX_SEED
)
flags.DEFINE_enum("dataset", "synthetic", DATASETS.names(), "Dataset source.")
flags.DEFINE_enum("model", "shared_bottom", ARCHITECTURES.names(), "Architecture.")
flags.DEFINE_enum("balancer", "fixed", BALANCERS.names(), "Loss balancer.")
flags.DEFINE_string("single_task", "", "Train only this task (a single-task baseline with the same data and model).")
flags.DEFINE_string(
  "selection",
  "mean_loss",
  "Checkpoint whose test metrics are reported: mean_loss (lowest mean validation loss over "
  "tasks), last, or TASK:METRIC (e.g. income:auc; the better direction is the metric's).",
)
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global training batch size.", lower_bound=1)
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Training epochs (ignored when --train_steps > 0).", lower_bound=1)
flags.DEFINE_integer(
  "train_steps", _DEFAULTS.train_steps, "Training steps; wins over --epochs when > 0.", lower_bound=0
)
flags.DEFINE_integer(
  "steps_per_loop",
  _DEFAULTS.steps_per_loop,
  "Steps per call of the compiled train loop (one progress line each).",
  lower_bound=1,
)
flags.DEFINE_integer(
  "eval_every",
  _DEFAULTS.eval_every,
  "Evaluate on the validation split every N steps (0: only at the end).",
  lower_bound=0,
)
flags.DEFINE_integer("summary_every", _DEFAULTS.summary_every, "Write train summaries every N steps.", lower_bound=1)
flags.DEFINE_integer(
  "checkpoint_every",
  _DEFAULTS.checkpoint_every,
  "Save a checkpoint every N steps (and always at the end).",
  lower_bound=1,
)
flags.DEFINE_integer("eval_batch_size", _DEFAULTS.eval_batch_size, "Batch size of evaluation.", lower_bound=1)
flags.DEFINE_bool(
  "log_grad_conflict", False, "At summary steps, log the cosine between task gradients on the shared variables."
)
flags.DEFINE_enum(
  "executor",
  _DEFAULTS.executor,
  config_lib.values(config_lib.Executor),
  "TensorFlow executor of the graph loop (no effect under XLA); auto: single-threaded on CPU-only machines.",
)
flags.DEFINE_enum(
  "nan_policy",
  _DEFAULTS.nan_policy,
  config_lib.values(config_lib.NanPolicy),
  "On a non-finite loss or gradient: stop (exit non-zero, keep the last good checkpoint) "
  "or skip_batch (do not apply that batch's update; counted in TensorBoard).",
)
flags.DEFINE_bool(
  "deterministic", False, "Deterministic TensorFlow kernels (op determinism): reruns give bit-identical results."
)
flags.DEFINE_enum(
  "strategy",
  _DEFAULTS.strategy,
  config_lib.values(config_lib.StrategyName),
  "tf.distribute strategy: default (one device), mirrored (the GPUs, or --cpu_replicas logical "
  "CPUs), multi_worker (the hosts of TF_CONFIG), tpu. --batch_size stays the global batch.",
)
flags.DEFINE_integer(
  "cpu_replicas",
  _DEFAULTS.cpu_replicas,
  "Split the CPU into N logical devices, one replica each (--strategy=mirrored without GPUs; for tests and demos).",
  lower_bound=0,
)
flags.DEFINE_enum(
  "jit_compile",
  _DEFAULTS.jit_compile,
  config_lib.values(config_lib.JitMode),
  "Compile the train loop with XLA: auto (on one device, CPU or GPU; the graph loop under a "
  "--strategy), on (refused where XLA cannot serve) or off. Changes only the last bits of results.",
)
flags.DEFINE_integer(
  "intra_op_threads", 0, "Threads inside one TensorFlow op (0: TensorFlow's default).", lower_bound=0
)
flags.DEFINE_integer(
  "inter_op_threads", 0, "Threads running independent TensorFlow ops (0: TensorFlow's default).", lower_bound=0
)
flags.DEFINE_enum("optimizer", _OPT.name, config_lib.values(config_lib.OptimizerName), "Optimizer of the model.")
flags.DEFINE_float("learning_rate", _OPT.learning_rate, "Peak learning rate of the model.")
flags.DEFINE_enum(
  "lr_schedule",
  _OPT.schedule,
  config_lib.values(config_lib.LrSchedule),
  "Learning-rate schedule: constant, cosine decay to 0 at the end, or step decay.",
)
flags.DEFINE_integer(
  "lr_decay_steps", _OPT.decay_steps, "Step schedule: steps between decays (0: a third of the run).", lower_bound=0
)
flags.DEFINE_float("lr_decay_rate", _OPT.decay_rate, "Step schedule: factor per decay.", lower_bound=0.0)
flags.DEFINE_float("weight_decay", _OPT.weight_decay, "Decoupled weight decay of --optimizer=adamw.", lower_bound=0.0)
flags.DEFINE_float(
  "momentum", _OPT.momentum, "Momentum of --optimizer=sgd (Keras's SGD takes [0, 1]).", lower_bound=0.0, upper_bound=1.0
)

flags.register_validator("learning_rate", lambda v: v > 0, "--learning_rate must be positive.")
flags.register_validator("lr_decay_rate", lambda v: 0 < v <= 1, "--lr_decay_rate must be in (0, 1].")

# Flags that change how a run is observed, not what it computes: a run dir may
# be resumed with different values of these. (--eval_every is not one: model
# selection chooses among the evaluated checkpoints.)
OPERATIONAL = frozenset(
  {
    "run_dir",
    "overwrite",
    "steps_per_loop",
    "summary_every",
    "checkpoint_every",
    "eval_batch_size",
    "log_grad_conflict",
    "executor",
    "intra_op_threads",
    "inter_op_threads",
    # Where a run executes: a checkpoint written under one strategy, or with or
    # without XLA, resumes under another (only the last bits differ).
    "strategy",
    "cpu_replicas",
    "jit_compile",
  }
)


def _define_param(param: Param, owner: str) -> None:
  help_text = f"[{owner}] {param.help}"
  if param.kind == FLOAT:
    flags.DEFINE_float(param.name, param.default, help_text)
  elif param.kind == INT:
    flags.DEFINE_integer(param.name, param.default, help_text)
  elif param.kind == BOOL:
    flags.DEFINE_bool(param.name, param.default, help_text)
  elif param.kind == ENUM:
    flags.DEFINE_enum(param.name, param.default, list(param.choices), help_text)
  else:
    flags.DEFINE_string(param.name, param.default, help_text)
  flags.register_validator(param.name, _validator(param.parse))


def _validator(check):
  """An absl validator of a flag's value from `check(value)`, which raises UserError."""

  def validate(value) -> bool:
    try:
      check(value)
    except UserError as error:
      raise flags.ValidationError(str(error)) from None
    return True

  return validate


def _define_component_params() -> None:
  """One flag per declared Param; a Param shared by components is defined once."""
  params: dict[str, Param] = {}
  owners: dict[str, list[str]] = {}
  for family in (DATASETS, ARCHITECTURES, BALANCERS):
    for entry in family.entries():
      for param in entry.params:
        if params.setdefault(param.name, param) != param:
          raise ValueError(f"Param {param.name!r} is declared differently by two components.")
        owners.setdefault(param.name, []).append(f"{family.family} {entry.name}")
  for name, param in params.items():
    _define_param(param, ", ".join(owners[name]))


_define_component_params()


def _component(family, name: str) -> config_lib.ComponentConfig:
  params = {p.name: p.parse(FLAGS[p.name].value) for p in family.get(name).params}
  return config_lib.ComponentConfig(name, config_lib.frozen_mapping(params))


def default_run_dir() -> str:
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return os.path.join("runs", f"{stamp}-{FLAGS.balancer}")


def balancer_owners() -> dict[str, frozenset[str]]:
  """Flags read only by balancers: {flag: the balancers that read it}."""
  others = {p.name for family in (DATASETS, ARCHITECTURES) for e in family.entries() for p in e.params}
  owners: dict[str, set[str]] = {}
  for entry in BALANCERS.entries():
    for param in entry.params:
      if param.name not in others:
        owners.setdefault(param.name, set()).add(entry.name)
  return {name: frozenset(names) for name, names in owners.items()}


def architecture_owners() -> dict[str, frozenset[str]]:
  """Flags read only by some architectures: {flag: the architectures that read it}."""
  entries = ARCHITECTURES.entries()
  owners: dict[str, set[str]] = {}
  for entry in entries:
    for param in entry.params:
      owners.setdefault(param.name, set()).add(entry.name)
  return {name: frozenset(names) for name, names in owners.items() if len(names) < len(entries)}


_OPTIMIZER_OPTIONS = {
  "weight_decay": ("optimizer", config_lib.OptimizerName.ADAMW),
  "momentum": ("optimizer", config_lib.OptimizerName.SGD),
  "lr_decay_steps": ("lr_schedule", "step"),
  "lr_decay_rate": ("lr_schedule", "step"),
}


def check_unused_flags(warn=lambda line: print(line, file=sys.stderr)) -> None:
  """A flag given for a component the run does not use is a mistake: say so.

  Dataset, architecture and optimizer options are errors (forgetting
  --dataset=csv would otherwise train the toy data); another balancer's options
  only warn, because a sweep passes the same flags to every balancer's runs.
  """

  def given(name: str) -> bool:  # a flagfile (flags.txt) sets every flag, most to their defaults
    return bool(FLAGS[name].present) and FLAGS[name].value != FLAGS[name].default

  chosen = {DATASETS.family: FLAGS.dataset, ARCHITECTURES.family: FLAGS.model}
  used = {p.name for family in (DATASETS, ARCHITECTURES) for p in family.get(chosen[family.family]).params}
  for family in (DATASETS, ARCHITECTURES):
    for entry in family.entries():
      for param in entry.params:
        if given(param.name) and param.name not in used:
          raise UserError(
            f"--{param.name} belongs to {family.family} {entry.name}, but this run uses "
            f"--{'dataset' if family is DATASETS else 'model'}={chosen[family.family]}."
          )
  for name, (flag, value) in _OPTIMIZER_OPTIONS.items():
    if given(name) and FLAGS[flag].value != value:
      raise UserError(f"--{name} applies only with --{flag}={value}, and this run uses --{flag}={FLAGS[flag].value}.")
  fixed = BALANCERS.get(FLAGS.balancer).component.fixed_flags
  for name, (value, why) in fixed.items():
    if not FLAGS[name].present:
      FLAGS[name].value = value  # so that flags.txt and HParams record the value the run uses
    elif str(FLAGS[name].value) != value:  # also the flag's default, when given explicitly
      raise UserError(
        f"--balancer={FLAGS.balancer} works with --{name}={value} only ({why}); "
        f"--{name}={FLAGS[name].value} is refused."
      )
  for name, owners in balancer_owners().items():
    if given(name) and FLAGS.balancer not in owners and name not in fixed:
      warn(f"warning: --{name} is ignored: it belongs to {', '.join(sorted(owners))}, not --balancer={FLAGS.balancer}.")


def config_from_flags() -> config_lib.Config:
  """Builds the run's Config from the parsed flags (raises UserError)."""
  loop = config_lib.LoopConfig(
    batch_size=FLAGS.batch_size,
    train_steps=FLAGS.train_steps,
    epochs=FLAGS.epochs,
    steps_per_loop=FLAGS.steps_per_loop,
    eval_every=FLAGS.eval_every,
    summary_every=FLAGS.summary_every,
    checkpoint_every=FLAGS.checkpoint_every,
    eval_batch_size=FLAGS.eval_batch_size,
    log_grad_conflict=FLAGS.log_grad_conflict,
    executor=FLAGS.executor,
    nan_policy=FLAGS.nan_policy,
    strategy=FLAGS.strategy,
    cpu_replicas=FLAGS.cpu_replicas,
    jit_compile=FLAGS.jit_compile,
  )
  optimizer = config_lib.OptimizerConfig(
    name=FLAGS.optimizer,
    learning_rate=FLAGS.learning_rate,
    schedule=FLAGS.lr_schedule,
    decay_steps=FLAGS.lr_decay_steps,
    decay_rate=FLAGS.lr_decay_rate,
    weight_decay=FLAGS.weight_decay,
    momentum=FLAGS.momentum,
  )
  return config_lib.Config(
    run_dir=FLAGS.run_dir or default_run_dir(),
    seed=FLAGS.seed,
    dataset=_component(DATASETS, FLAGS.dataset),
    model=_component(ARCHITECTURES, FLAGS.model),
    balancer=_component(BALANCERS, FLAGS.balancer),
    optimizer=optimizer,
    loop=loop,
    overwrite=FLAGS.overwrite,
    single_task=FLAGS.single_task,
    selection=FLAGS.selection,
    deterministic=FLAGS.deterministic,
  )


def run_length(loop: config_lib.LoopConfig) -> tuple[str, int]:
  """The flag that sets the run's length and its value: --train_steps when > 0 (it wins), else --epochs.

  A run directory may be extended by a larger value of it (train/run_dir.py).
  """
  return ("train_steps", loop.train_steps) if loop.train_steps > 0 else ("epochs", loop.epochs)


def our_flag_names() -> list[str]:
  """Names of the flags this package defines (not absl's own), sorted."""
  return sorted(
    name
    for name, flag in FLAGS._flags().items()  # pylint: disable=protected-access
    if name == flag.name and _defined_here(flag)
  )


def _defined_here(flag) -> bool:
  """A training flag: defined by this module (an entry point's own flags, e.g. mtl-train's --seeds, are not)."""
  return FLAGS.find_module_defining_flag(flag.name) == __name__


def value_text(name: str, value) -> str:
  """A flag value as flagfile text; booleans as true/false so no --no prefix is needed."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if value is None:
    return ""
  # `value`'s text, not the live flag's: defaults and recorded values are rendered through here too.
  serializer = FLAGS[name].serializer
  assert serializer is not None, name  # every flag but booleans (above) has one
  return serializer.serialize(value)


def flag_values(run_dir: str) -> dict[str, str]:
  """Every flag of ours (but --overwrite) as text; flags.txt reproduces the run from it."""
  values = {name: value_text(name, FLAGS[name].value) for name in our_flag_names() if name != "overwrite"}
  values["run_dir"] = run_dir
  return values


def hparam_values() -> dict[str, bool | float | str]:
  """The run's result-changing flags as HParams values (bool/float/str).

  Integers are logged as their decimal text: the HParams dashboard prints every
  number with five significant digits (a seed as "0.0000"), a string as it is.
  """
  values: dict[str, bool | float | str] = {}
  for name in our_flag_names():
    if name in OPERATIONAL:
      continue
    value = FLAGS[name].value
    if isinstance(value, (bool, float, str)):
      values[name] = value
    else:  # int, lists, None
      values[name] = value_text(name, value)
  return values


def flag_defaults() -> dict[str, str]:
  """Default value text of every flag of ours."""
  return {name: value_text(name, FLAGS[name].default) for name in our_flag_names()}


def _refuse_non_finite_floats() -> None:
  """Registers `params.finite` for every float flag of ours: one rule, new flags included.

  A Param's own validator applies it first; this covers the core flags,
  whose bounds NaN passes, and infinity or a float32 overflow often does.
  """
  for name in our_flag_names():
    if isinstance(FLAGS[name].parser, flags.FloatParser):
      flags.register_validator(name, _validator(lambda value, name=name: params_lib.finite(name, value)))


_refuse_non_finite_floats()  # last: every flag of ours is defined by now

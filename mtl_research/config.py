"""The immutable configuration of one run, built from flags by `mtl_research.flags`.

Nothing below this module knows about absl: components receive plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import enum
import types
from typing import Any

# The choices a run's configuration accepts, one definition each: flags offer
# their values, and the modules that act on them compare against the members
# (a StrEnum member equals its string, so Config fields may hold either).


class OptimizerName(enum.StrEnum):
  ADAM = "adam"
  SGD = "sgd"
  ADAMW = "adamw"


class LrSchedule(enum.StrEnum):
  CONSTANT = "constant"
  COSINE = "cosine"  # decay to 0 at the end of the run
  STEP = "step"


class Executor(enum.StrEnum):
  """TensorFlow executor of the graph loop (train/train_loop.py)."""

  AUTO = "auto"
  DEFAULT = "default"
  SINGLE_THREADED = "single_threaded"


class NanPolicy(enum.StrEnum):
  """What a non-finite loss or gradient does (train/guard.py)."""

  STOP = "stop"
  SKIP_BATCH = "skip_batch"


class StrategyName(enum.StrEnum):
  """--strategy (train/distribution.py)."""

  DEFAULT = "default"
  MIRRORED = "mirrored"
  MULTI_WORKER = "multi_worker"
  TPU = "tpu"


class JitMode(enum.StrEnum):
  """--jit_compile (train/compilation.py)."""

  AUTO = "auto"
  ON = "on"
  OFF = "off"


def values(choices: type[enum.StrEnum]) -> list[str]:
  """The string values of an enum of choices, in declaration order (for flags and messages)."""
  return [member.value for member in choices]


def frozen_mapping(values: Mapping[str, Any]) -> Mapping[str, Any]:
  return types.MappingProxyType(dict(values))


@dataclasses.dataclass(frozen=True)
class ComponentConfig:
  """A registered component by name, with the values of the Params it declares."""

  name: str
  params: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  name: str = OptimizerName.ADAM
  learning_rate: float = 1e-3
  schedule: str = LrSchedule.CONSTANT
  decay_steps: int = 0  # step schedule: steps between decays (0: a third of the run)
  decay_rate: float = 0.1  # step schedule: factor per decay
  weight_decay: float = 1e-4  # adamw only
  momentum: float = 0.0  # sgd only


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  batch_size: int = 32
  train_steps: int = 0  # 0: use epochs
  epochs: int = 10
  steps_per_loop: int = 100
  eval_every: int = 500  # 0: evaluate only at the end
  summary_every: int = 100
  checkpoint_every: int = 1000
  eval_batch_size: int = 1024
  log_grad_conflict: bool = False
  executor: str = Executor.AUTO
  nan_policy: str = NanPolicy.STOP
  strategy: str = StrategyName.DEFAULT
  cpu_replicas: int = 0  # logical CPU devices for --strategy=mirrored on a machine without GPUs
  jit_compile: str = JitMode.AUTO  # the train loop as one XLA program


@dataclasses.dataclass(frozen=True)
class Config:
  run_dir: str
  seed: int
  dataset: ComponentConfig
  model: ComponentConfig
  balancer: ComponentConfig
  optimizer: OptimizerConfig
  loop: LoopConfig
  overwrite: bool = False
  single_task: str = ""  # train only this task (a baseline)
  selection: str = "mean_loss"  # mean_loss | last | TASK:METRIC
  deterministic: bool = False  # TensorFlow op determinism (bit-identical reruns)

"""The immutable configuration of one run, built from flags by `mtl_research.flags`.

Nothing below this module knows about absl: components receive plain values.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping


def frozen_mapping(values: Mapping[str, Any]) -> Mapping[str, Any]:
  return types.MappingProxyType(dict(values))


@dataclasses.dataclass(frozen=True)
class ComponentConfig:
  """A registered component by name, with the values of the Params it declares."""

  name: str
  params: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  name: str = "adam"  # adam | sgd | adamw
  learning_rate: float = 1e-3
  schedule: str = "constant"  # constant | cosine | step
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
  executor: str = "auto"  # auto | default | single_threaded (see train/step.py)
  nan_policy: str = "stop"  # stop | skip_batch (see train/guard.py)
  strategy: str = "default"  # default | mirrored | multi_worker | tpu (see train/distribution.py)
  cpu_replicas: int = 0  # logical CPU devices for --strategy=mirrored on a machine without GPUs
  jit_compile: str = "auto"  # auto | on | off: the train loop as one XLA program (see train/compilation.py)


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

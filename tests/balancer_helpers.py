"""Shared builders for the balancer validity tests (test_uncertainty.py,
test_gradnorm.py, test_balancer_resume.py).

Everything here builds runs in-process from NumPy arrays; nothing reads files
or the dataset registry, and nothing calls the balancers' own math.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import BALANCERS
from mtl_research.config import ComponentConfig, Config, JitMode, LoopConfig, OptimizerConfig
from mtl_research.data.bundle import DatasetBundle, Split
from mtl_research.train import components as components_lib


def balancer_params(name: str, **overrides: Any) -> dict[str, Any]:
  """Every declared Param of balancer `name` at its default, then `overrides`."""
  params = {p.name: p.parse(p.default) for p in BALANCERS.get(name).params}
  unknown = set(overrides) - set(params)
  assert not unknown, f"balancer {name!r} has no params {sorted(unknown)}"
  params.update(overrides)
  return params


def make_config(
  run_dir: str,
  balancer: str,
  *,
  hidden_units: Sequence[int],
  batch_size: int,
  train_steps: int,
  seed: int = 0,
  optimizer: OptimizerConfig | None = None,
  **balancer_overrides: Any,
) -> Config:
  return Config(
    run_dir=str(run_dir),
    seed=seed,
    dataset=ComponentConfig("synthetic", {}),
    model=ComponentConfig(
      "shared_bottom", {"hidden_units": tuple(hidden_units), "dropout": 0.0, "l2": 0.0, "embedding_dim": 8}
    ),
    balancer=ComponentConfig(balancer, balancer_params(balancer, **balancer_overrides)),
    optimizer=optimizer or OptimizerConfig(),
    # A graph loop, as conftest.build_config's: XLA is tested where it is the point (test_compilation.py).
    loop=LoopConfig(batch_size=batch_size, train_steps=train_steps, jit_compile=JitMode.OFF),
  )


def split(x: np.ndarray, labels: Mapping[str, np.ndarray], lo: int, hi: int) -> Split:
  return Split({"numeric": np.asarray(x[lo:hi], np.float32)}, {name: y[lo:hi] for name, y in labels.items()})


def make_bundle(
  tasks: Sequence[tasks_lib.TaskSpec], x: np.ndarray, labels: Mapping[str, np.ndarray], sizes: tuple[int, int, int]
) -> DatasetBundle:
  """Consecutive train/val/test splits of the given sizes."""
  n_train, n_val, n_test = sizes
  assert len(x) >= n_train + n_val + n_test
  labels = {
    t.name: np.asarray(labels[t.name], np.float32 if t.kind == tasks_lib.REGRESSION else np.int32) for t in tasks
  }
  bundle = DatasetBundle(
    tasks=tuple(tasks),
    train=split(x, labels, 0, n_train),
    val=split(x, labels, n_train, n_train + n_val),
    test=split(x, labels, n_train + n_val, n_train + n_val + n_test),
  )
  return bundle


def run_loop(components: components_lib.Components, steps: int, chunk: int | None = None) -> dict:
  """Runs `steps` steps from the current one, in loop calls of `chunk`; the last step's logs (NumPy)."""
  chunk = chunk or steps
  logs = None
  done = 0
  while done < steps:
    n = min(chunk, steps - done)
    logs = components.train_loop.run(n)
    done += n
  return logs


def model_values(model) -> dict[str, np.ndarray]:
  """Copies of every model variable, keyed by path below the model's own name
  (a second model in the same process is named shared_bottom_1, ...)."""
  values = {v.path.split("/", 1)[1]: v.numpy().copy() for v in model.variables}
  assert len(values) == len(model.variables), "variable paths are not unique"
  return values


def optimizer_values(optimizer) -> dict[str, np.ndarray]:
  """Copies of an optimizer's variables (iteration, slots ...), keyed by position and
  kind: slot names embed the model's and optimizer's uniquified names."""
  return {
    f"{i}:{getattr(v, 'path', v.name).rsplit('/', 1)[-1].rsplit('_', 1)[-1].split(':')[0]}": np.array(v.numpy()).copy()
    for i, v in enumerate(optimizer.variables)
  }

"""The toy regression of GradNorm: T tasks that differ only in output scale σ_t and
a task-specific perturbation of a shared function.

Chen, Badrinarayanan, Lee and Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018, §4 ("A toy
example"). The paper regresses T tasks onto

  f_t(x) = σ_t · tanh((B + ε_t) x),        tanh element-wise,

with inputs of dimension 250, outputs of dimension 100, and constant matrices B
(shared by all tasks) and ε_t (one per task) whose entries are drawn i.i.d. from
N(0, 10) and N(0, 3.5). Its experiments use T = 2 with σ = (1, 100), and T = 10.

This module generates, with D = --gradnorm_toy_input_dim and everything drawn from
`numpy.random.default_rng(seed)` in this order (so the function does not depend on
the split sizes):

  b   ~ N(0, 10·I_D)                      shared row, b_j variance 10 (std √10)
  e_t ~ N(0, 3.5·I_D),  t = 0..T-1        task rows, variance 3.5 (std √3.5)
  x   ~ N(0, I_D)                         the features given to the model
  y_t = σ_t · tanh(κ · (b + e_t)ᵀ x),     κ = 1 / √(D · (10 + 3.5))

Choices, since the package's regression heads are scalar and the paper leaves the
input distribution open:

* Output dimension 1 per task: B and ε_t are 1×D rows (b, e_t), i.e. each task is
  one output unit of the paper's model. Averaging the 100 outputs instead would
  make the targets near-Gaussian and far from ±σ_t; one unit keeps the paper's
  property exactly: tasks share b, differ by their own e_t and their scale σ_t.
  The pre-activations of two tasks correlate by about 10 / 13.5 ≈ 0.74.
* N(0, v) is read as mean 0, variance v (the usual N(μ, σ²) notation). Some
  public re-implementations draw std 10 and 3.5 instead; only the ratio of the
  two matters here (κ removes the overall scale), and it changes the correlation
  of the tasks' pre-activations from 0.74 (variances) to 0.89 (stds).
* Inputs: x ~ N(0, I_D), with the scale κ inside the tanh, which is the paper's
  formula for inputs κx ~ N(0, κ²I_D). κ makes the pre-activation
  z_t = κ(b + e_t)ᵀx roughly N(0, 1) (its variance is κ²‖b + e_t‖² ≈ 1), so the
  tanh is neither linear nor saturated: for seeds 0-2, 0.1-0.4% of rows have
  |z_t| > 3 (where tanh > 0.995) and 29-33% have |z_t| > 1; std(y_t) is
  0.61-0.64 σ_t, and the labels of two tasks correlate by about 0.7.
* Targets are NOT rescaled (no target_scale): the σ_t imbalance of the losses is
  the point of the benchmark. |y_t| < σ_t, and max |y_t| over thousands of rows
  is within a few percent of σ_t.

Tasks are named t0, t1, ... (regression).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mtl_research import tasks as tasks_lib
from mtl_research.data.bundle import DatasetBundle
from mtl_research.data.registry import DATASETS
from mtl_research.data.synthetic import SIZE_PARAMS, split_rows
from mtl_research.errors import UserError
from mtl_research.params import FLOATS, INT, Param

SHARED_VARIANCE = 10.0  # variance of the entries of B
TASK_VARIANCE = 3.5  # variance of the entries of ε_t

PARAMS = SIZE_PARAMS + (
  Param("gradnorm_toy_tasks", INT, 2, "Number of tasks T of the GradNorm toy regression.", lower=1),
  Param(
    "gradnorm_toy_sigmas",
    FLOATS,
    "1,100",
    "Output scales σ_t of the GradNorm toy tasks, one per task (--gradnorm_toy_tasks of them).",
    lower=0.0,
  ),
  Param("gradnorm_toy_input_dim", INT, 250, "Input dimension of the GradNorm toy regression.", lower=1),
)


def task_rows(input_dim: int, num_tasks: int, rng: np.random.Generator) -> np.ndarray:
  """[T, D] rows b + e_t: the shared row b plus each task's perturbation e_t."""
  shared = rng.normal(0.0, np.sqrt(SHARED_VARIANCE), size=input_dim)
  perturbations = rng.normal(0.0, np.sqrt(TASK_VARIANCE), size=(num_tasks, input_dim))
  return shared + perturbations


def input_scale(input_dim: int) -> float:
  """κ = 1/√(D·(10 + 3.5)), which makes κ(b + e_t)ᵀx about N(0, 1) for x ~ N(0, I_D)."""
  return 1.0 / np.sqrt(input_dim * (SHARED_VARIANCE + TASK_VARIANCE))


def sigmas_of(params: Mapping[str, Any]) -> tuple[float, ...]:
  """The σ_t, checked against the number of tasks (UserError naming both flags)."""
  num_tasks = params["gradnorm_toy_tasks"]
  sigmas = tuple(float(s) for s in params["gradnorm_toy_sigmas"])
  if len(sigmas) != num_tasks:
    raise UserError(
      f"--gradnorm_toy_sigmas has {len(sigmas)} value(s) but --gradnorm_toy_tasks={num_tasks}; give one σ per task."
    )
  return sigmas


@DATASETS.register("gradnorm_toy", params=PARAMS)
def load(params: Mapping[str, Any], seed: int, fitted: Mapping | None = None) -> DatasetBundle:
  """GradNorm's toy regression (Chen et al. 2018): y_t = σ_t·tanh((B+ε_t)x), tasks t0, t1, ..."""
  del fitted  # generated data needs no fitted preprocessing
  sigmas = sigmas_of(params)
  input_dim = params["gradnorm_toy_input_dim"]
  sizes = (params["num_train"], params["num_val"], params["num_test"])
  rng = np.random.default_rng(seed)
  rows = task_rows(input_dim, len(sigmas), rng)
  x = rng.normal(size=(sum(sizes), input_dim))
  pre_activations = input_scale(input_dim) * (x @ rows.T)  # [N, T]
  targets = np.asarray(sigmas) * np.tanh(pre_activations)
  names = [f"t{t}" for t in range(len(sigmas))]
  labels = {name: targets[:, t].astype(np.float32) for t, name in enumerate(names)}
  splits = split_rows({"numeric": x.astype(np.float32)}, labels, sizes)
  return DatasetBundle(tuple(tasks_lib.TaskSpec(name, tasks_lib.REGRESSION) for name in names), *splits)

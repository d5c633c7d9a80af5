"""RLW, random loss weighting: Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of
Random Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022, random loss weighting:

  L_total = Σ_t λ_t·L_t,   λ = f(λ̃),   λ̃ ~ p(λ̃) drawn afresh at every step,

with the normalization f making the weights positive and summing to one. The
distributions (`--rlw_distribution`):

  normal     λ̃ ~ N(0, I_T), λ = softmax(λ̃)    the paper's default, LibMTL's only one;
  uniform    λ̃ ~ U(0, 1)^T, λ = softmax(λ̃);
  dirichlet  λ ~ Dir(1, ..., 1), the flat distribution on the simplex (drawn as
             normalized exponentials −log(1 − u)); already sums to one, no f.

`--rlw_sum` rescales the weights to sum to something else (T gives them mean 1, the
scale of `fixed` and of the other methods here; 1 is the paper's).

The draws come from the step's stateless seed (`StepStats.seed`: --seed and the step)
through `portable_random`, the same bits under XLA and in a graph, so every replica
draws the same weights, two runs with one seed draw the same ones, and a resumed run
draws those of the run it continues. They are made in `begin_step`, before the
objective, and kept in a variable that the objective and `weights()` read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import portable_random
from mtl_research.balancers.base import Schedule, state_variable
from mtl_research.balancers.loss_function import LossFunctionBalancer
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import ENUM, FLOAT, Param

DISTRIBUTIONS = ("normal", "uniform", "dirichlet")

PARAMS = (
  Param(
    "rlw_distribution",
    ENUM,
    "normal",
    "RLW: the weights' distribution: softmax of N(0, I) (the paper's default), softmax of U(0, 1), or flat Dirichlet.",
    choices=DISTRIBUTIONS,
  ),
  Param(
    "rlw_sum",
    FLOAT,
    1.0,
    "RLW: the drawn weights sum to this (1: the paper; the number of tasks gives them mean 1, like fixed).",
    above=0.0,
  ),
)

# portable_random gives multiples of 2⁻²⁴ in [0, 1); half a step up makes them (0, 1), where
# the normal quantile and the logarithm are finite.
_HALF_STEP = 0.5 / 16777216.0


def draw_weights(seed: tf.Tensor, num_tasks: int, distribution: str) -> tf.Tensor:
  """[T] float32 weights on the simplex, drawn from `seed` (module docstring)."""
  uniform = portable_random.uniform(seed, [num_tasks]) + _HALF_STEP
  if distribution == "normal":
    return tf.nn.softmax(tf.math.ndtri(uniform))
  if distribution == "uniform":
    return tf.nn.softmax(uniform)
  if distribution == "dirichlet":
    exponential = -tf.math.log1p(-uniform)
    return exponential / tf.reduce_sum(exponential)
  raise ValueError(f"unknown RLW distribution {distribution!r}")  # Param's choices exclude it


@BALANCERS.register("rlw", params=PARAMS)
class RandomLossWeighting(LossFunctionBalancer):
  """Lin et al. 2022: the loss weights are drawn afresh at every step."""

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.distribution = str(params["rlw_distribution"])
    self.total = float(params["rlw_sum"])
    # One task's weight is always --rlw_sum: only with a sum of 1 is it `fixed`.
    self.relative_only = self.total == 1.0
    self._drawn = state_variable(tf.fill([self.num_tasks], self.total / self.num_tasks), "drawn")

  def begin_step(self, step: tf.Tensor, seed: tf.Tensor) -> None:
    del step
    self._drawn.assign(self.total * draw_weights(seed, self.num_tasks, self.distribution))

  def scalarize(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(self._drawn * losses)

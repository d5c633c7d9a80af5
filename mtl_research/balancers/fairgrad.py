"""FairGrad: Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024 (arXiv:2402.15638).

Multi-task learning as α-fair resource allocation: the shared update d is the
resource, task t's utility is its loss decrease g_tᵀd, and d maximizes
Σ_t u_α(g_tᵀd) over a ball, u_α(x) = x^(1−α)/(1−α) (log x for α = 1). The
first-order condition Σ_t (g_tᵀd)^(−α)·g_t ∝ d gives d = Σ_t w_t·g_t with
w > 0 solving the paper's

  GᵀG w = w^(−1/α)          (G = [g_1 … g_T], gradients as columns),

i.e. (G w)_t = w_t^(−1/α) with our Gramian G = J·Jᵀ: ⟨g_t, d⟩ = w_t^(−1/α) > 0.
α = 1 (proportional fairness) is Nash-MTL's equation (nash_mtl.py); large α
tends to max-min fairness (equal improvements, G w = 1), small α to the
utilitarian sum (equal weights). The paper's Algorithm follows d = Σ_t w_t g_t
with w as solved, and so does this balancer by default. Scale: G → s²G gives
w → s^(−2α/(1+α))·w and ‖d‖ → s^((1−α)/(1+α))·‖d‖, so for α > 1 the update
grows as the gradients shrink (hence the public code's clip, below). The
heads follow Σ_t L_t (gramian.py).

Solving for w. The authors' code (and LibMTL's port) calls scipy's
least_squares on Gw − w^(−1/α) from w = 1/T with bounds w ≥ 0. Here w is the
exact minimizer of the strictly convex F(w) = ½wᵀGw − Σ_t φ(w_t), φ' = w^(−1/α)
(φ = log for α = 1, (w^(1−1/α) − 1)/(1 − 1/α) otherwise), found by Newton's
method (power_equation.py with p = 1/α; typically 2–8 iterations), with the
same degenerate-input rules as Nash-MTL: weight 0 for a zero gradient, and
the ridge `--power_equation_ridge` at a Pareto-stationary point.

Flags (paper version default where the paper states one):
  --fairgrad_alpha=α   default 2.0: the value of the authors' released run
      scripts (experiments/quantum_chemistry/run.sh and celeba/run.sh); their
      argparse default (--alpha) and LibMTL's (--FairGrad_alpha) are 1.0,
      which is Nash-MTL's equation. At least 0.1: for smaller α (p = 1/α > 10)
      the equation asks improvements w_t^(−p) of tasks with small gradients
      that float64 cannot resolve (solver_residual says so); it is
      well-conditioned for α in [0.5, 20].
  --fairgrad_max_norm=m   rescale d to norm m when ‖d‖ > m (0: off, the paper
      and LibMTL). The authors' code uses 1.0 (--max_norm), applied to T·d
      (their overwrite_grad multiplies d by T "to match the sum loss"): so
      --fairgrad_max_norm=1 reproduces their update whenever T·‖d‖ > 1 and
      ‖d‖ > 1, the usual case for α > 1 once the gradients are small.
  --power_equation_ridge, --gradient_scope: shared (power_equation.py, gramian.py).

Diagnostics: solver_iterations (Newton steps), solver_residual
(max_t |(G w)_t·w_t^(1/α) − 1| over tasks with a nonzero gradient) and
update_norm (‖d‖ = √(wᵀGw) before the clip).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import power_equation
from mtl_research.balancers.base import Schedule
from mtl_research.balancers.gramian import SCOPE_PARAM, GramianBalancer, Weighting
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import FLOAT, Param

DEFAULT_ALPHA = 2.0
MIN_ALPHA = 0.1

PARAMS = (
  SCOPE_PARAM,
  Param(
    "fairgrad_alpha",
    FLOAT,
    DEFAULT_ALPHA,
    "FairGrad: the fairness α of the utilities (g_tᵀd)^(1−α)/(1−α); 1 is Nash-MTL's proportional fairness, "
    "larger tends to max-min fairness (2.0: the authors' run scripts; their argparse default is 1.0).",
    lower=MIN_ALPHA,
  ),
  Param(
    "fairgrad_max_norm",
    FLOAT,
    0.0,
    "FairGrad: rescale the shared parameters' update to this norm when larger (0: off, the paper and LibMTL; "
    "the authors' code: 1.0).",
    lower=0.0,
  ),
  power_equation.RIDGE_PARAM,
)

DIAGNOSTICS = ("solver_iterations", "solver_residual", "update_norm")


def fairgrad_weights(
  gramian: tf.Tensor,
  *,
  alpha: float = DEFAULT_ALPHA,
  ridge: float = power_equation.DEFAULT_RIDGE,
  max_norm: float = 0.0,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """FairGrad's float64 weights [T] (G w = w^(−1/α), then the clip) from the float64 Gramian [T, T], and diagnostics."""
  solution = power_equation.solve(gramian, 1.0 / alpha, ridge=ridge)
  weights, norm = power_equation.clip_norm(solution.weights, gramian, max_norm)
  return weights, {
    "solver_iterations": tf.cast(solution.iterations, tf.float64),
    "solver_residual": solution.residual,
    "update_norm": norm,
  }


@BALANCERS.register("fairgrad", params=PARAMS)
class FairGrad(GramianBalancer):
  """Ban & Ji 2024: α-fair allocation of the update, d = Σ w_t g_t with GᵀGw = w^(−1/α)."""

  diagnostic_names = DIAGNOSTICS

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.alpha = float(params["fairgrad_alpha"])
    self.max_norm = float(params["fairgrad_max_norm"])
    self.ridge = float(params[power_equation.RIDGE_PARAM.name])

  def weigh(self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor, seed: tf.Tensor) -> Weighting:
    del losses, step, seed  # FairGrad reads the gradients only
    weights, diagnostics = fairgrad_weights(gramian, alpha=self.alpha, ridge=self.ridge, max_norm=self.max_norm)
    return Weighting(weights, diagnostics)

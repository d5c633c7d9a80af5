"""Nash-MTL: Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task Learning as a
Bargaining Game", ICML 2022 (arXiv:2202.01017).

The tasks bargain over the update d of the shared parameters within a ball;
the Nash bargaining solution maximizes Σ_t log(g_tᵀd). Its first-order
condition, Σ_t g_t/(g_tᵀd) ∝ d, gives d = Σ_t α_t·g_t with α > 0 solving

  GᵀG α = 1/α        (elementwise 1/α),

where the paper's G = [g_1 … g_T] holds the gradients as columns, so its
GᵀG is our Gramian G = J·Jᵀ (J: the gradients as rows): (G α)_t = 1/α_t,
i.e. ⟨g_t, d⟩ = 1/α_t > 0 for every task. The product α_t·‖g_t‖ does not
depend on the gradients' scales (a task 100× larger gets a 100× smaller
weight), and ‖d‖² = αᵀGα = Σ_t α_t·(Gα)_t = T: every update has norm √T.
Algorithm 1 of the paper follows d with α as solved (θ ← θ − η·Σ_t α_t g_t),
and so does this balancer by default. The heads follow Σ_t L_t (gramian.py);
the authors' code trains them on Σ_t α_t·L_t.

Solving for α. The paper solves a sequence of convex problems (its
concave-convex procedure, cvxpy/ECOS, at most `optim_niter` = 20 of them,
stopping when ‖Gα − 1/α‖ < 1e-3 on G normalized by its Frobenius norm, warm
started from the previous α). Here α is the exact minimizer of the strictly
convex F(α) = ½αᵀGα − Σ_t log α_t (∇F = Gα − 1/α), found by Newton's method
(power_equation.py with p = 1: typically 0–6 iterations, residual
max_t |(Gα)_t·α_t − 1| ~ 1e-10), so `optim_niter` has no counterpart.

Degenerate input (power_equation.py): a zero gradient gets α_t = 0 (the
equation has no solution for it, and its term of d is zero whatever α_t);
at a Pareto-stationary point (two opposed tasks: no direction improves all)
the equation has no solution either; the ridge `--power_equation_ridge`
(default 1e-10, relative to each task's ‖g_t‖²) gives one, with d ≈ 0. The
authors' code instead keeps the previous α there (ones at the first step),
when the solver fails on the infeasible problem.

Flags (paper version default):
  --nash_mtl_update_weights_every=k   recompute α at steps that are multiples
      of k and reuse it in between (kept in a checkpointed variable, so a
      resumed run reuses it too). Authors' code: --update-weights-every,
      default 1; larger values save the solver's time (little here).
  --nash_mtl_max_norm=m   rescale d to norm m when ‖d‖ > m (0: off, as in the
      paper's Algorithm 1). The authors' code (NashMTL(max_norm=1.0), not a
      command-line flag there), LibMTL and TorchJD use 1.0: since ‖d‖ = √T ≥ 1
      for the exact α, that makes every update exactly unit-norm, √T times
      the paper's (a constant factor of the learning rate, which Adam
      mostly absorbs). Set 1.0 to compare with their numbers. The clip is
      recomputed at every step, also on steps that reuse α.
  --power_equation_ridge, --gradient_scope: shared (power_equation.py, gramian.py).

Diagnostics: solver_iterations (Newton steps; 0 on a step that reuses α),
solver_residual (max_t |(Gα)_t·α_t − 1| on this step's G, over tasks with a
nonzero gradient: ~1e-10 when solved, ~1 at a Pareto-stationary point, and
on a reuse step how far the kept α is from this step's solution) and
update_norm (‖d‖ = √(αᵀGα) before the clip: √T when solved).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import power_equation
from mtl_research.balancers.base import Schedule, state_variable
from mtl_research.balancers.gramian import SCOPE_PARAM, GramianBalancer, Weighting
from mtl_research.balancers.registry import BALANCERS
from mtl_research.params import FLOAT, INT, Param

PARAMS = (
  SCOPE_PARAM,
  Param(
    "nash_mtl_update_weights_every",
    INT,
    1,
    "Nash-MTL: solve for the weights every k steps and reuse them in between (1: every step, the paper).",
    lower=1,
  ),
  Param(
    "nash_mtl_max_norm",
    FLOAT,
    0.0,
    "Nash-MTL: rescale the shared parameters' update to this norm when larger (0: off, the paper; the authors' "
    "code, LibMTL and TorchJD: 1.0).",
    lower=0.0,
  ),
  power_equation.RIDGE_PARAM,
)

DIAGNOSTICS = ("solver_iterations", "solver_residual", "update_norm")


def nash_mtl_alpha(gramian: tf.Tensor, ridge: float = power_equation.DEFAULT_RIDGE) -> power_equation.Solution:
  """The solution α of Gα = 1/α (α_t = 0 for a zero gradient) for the float64 Gramian [T, T] (static T)."""
  return power_equation.solve(gramian, 1.0, ridge=ridge)


def nash_mtl_weights(
  gramian: tf.Tensor, *, ridge: float = power_equation.DEFAULT_RIDGE, max_norm: float = 0.0
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """Nash-MTL's float64 weights [T] from the float64 Gramian [T, T] (static T), and its diagnostics."""
  solution = nash_mtl_alpha(gramian, ridge)
  weights, norm = power_equation.clip_norm(solution.weights, gramian, max_norm)
  return weights, {
    "solver_iterations": tf.cast(solution.iterations, tf.float64),
    "solver_residual": solution.residual,
    "update_norm": norm,
  }


@BALANCERS.register("nash_mtl", params=PARAMS)
class NashMTL(GramianBalancer):
  """Navon et al. 2022: the Nash bargaining solution, d = Σ α_t g_t with GᵀGα = 1/α."""

  diagnostic_names = DIAGNOSTICS

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.update_every = int(params["nash_mtl_update_weights_every"])
    self.max_norm = float(params["nash_mtl_max_norm"])
    self.ridge = float(params[power_equation.RIDGE_PARAM.name])
    # The last solved α (before the clip), reused between updates; step 0 always solves.
    self.alpha = state_variable(tf.ones([self.num_tasks], tf.float64), name="nash_mtl_alpha")

  def weigh(self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor, seed: tf.Tensor) -> Weighting:
    del losses, seed  # Nash-MTL reads the gradients only

    def solved():
      solution = nash_mtl_alpha(gramian, self.ridge)
      return solution.weights, solution.iterations

    if self.update_every == 1:
      alpha, iterations = solved()
    else:
      refresh = tf.equal(tf.math.floormod(step, self.update_every), 0)
      alpha, iterations = tf.cond(refresh, solved, lambda: (self.alpha.read_value(), tf.constant(0)))
    self.alpha.assign(alpha)
    weights, norm = power_equation.clip_norm(alpha, gramian, self.max_norm)
    return Weighting(
      weights,
      {
        "solver_iterations": tf.cast(iterations, tf.float64),
        "solver_residual": power_equation.residual(gramian, alpha, 1.0),
        "update_norm": norm,
      },
    )

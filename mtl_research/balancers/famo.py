"""FAMO, fast adaptive multitask optimization: Liu, Feng, Stone & Liu, "FAMO: Fast Adaptive
Multitask Optimization", NeurIPS 2023, Algorithm 1.

Task weights z = softmax(ξ) come from logits ξ. The model follows

  d = Σ_t (c·z_t / ℓ_t)·∇ℓ_t,   c = (Σ_t z_t / ℓ_t)^{-1},

the gradient of c·Σ_t z_t·log ℓ_t with c held constant: a z-weighted step on the log
losses whose weights z_t/(c·ℓ_t) sum to 1 (the weights reported). After the model
update the losses of the *same batch* are computed again, and ξ follows the realized
decrease of the log losses,

  δ_t = log ℓ_t(θ_k) − log ℓ_t(θ_{k+1}),   ξ ← ξ − β·(∇_ξ zᵀδ + γ·ξ),   ∇_ξ zᵀδ = z ⊙ δ − z·(zᵀδ),

which lowers the weight of the tasks that improved most, so that over time every task's
log loss decreases at the same rate (the paper's balanced-improvement property).

Here ℓ_t = max(L_t − ℓ*_t, 0) + ε with ε = 1e-8 and offsets ℓ*_t (`--famo_min_losses`,
0 by default), as in the authors' code (`famo.py`, `set_min_losses`; the max is ours: a
loss below its declared minimum stays finite instead of taking the log of a negative).
Defaults: β = 0.025 (the authors' code and LibMTL); γ = 0.001 (the authors' run scripts
for NYUv2, CelebA and QM9; their `famo.py` has 0.01, their `weight_methods.py` 1e-5,
LibMTL 1e-3). Every public implementation, the authors' included, steps ξ with Adam
(PyTorch's, γ as its L2 weight decay, betas 0.9/0.999, ε 1e-8), which is the default
here (`--famo_xi_optimizer=adam`, Keras's form of Adam, `optim.state_adam`);
Algorithm 1's plain gradient step is `--famo_xi_optimizer=sgd`. The authors' training
scripts also clip the shared parameters' gradient norm at 1; that is the optimizer's
business (the model optimizer's clipping flags), not FAMO's.

The second forward pass is something the balancer declares
(`needs_losses_after_update`): the step computes it, in training mode on the same rows,
only for balancers that ask, and hands its global losses to `update` as
`StepStats.losses_after`. ξ and Adam's state are checkpointed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Schedule, StepStats, state_variable
from mtl_research.balancers.loss_function import LOG_EPSILON, LossFunctionBalancer
from mtl_research.balancers.registry import BALANCERS
from mtl_research.optim.state_adam import StateAdam
from mtl_research.params import ENUM, FLOAT, TASK_FLOATS, Param, check_task_names

PARAMS = (
  Param("famo_learning_rate", FLOAT, 0.025, "FAMO: β, the step size of ξ, > 0 (0.025: the authors' code).", above=0.0),
  Param(
    "famo_gamma",
    FLOAT,
    0.001,
    "FAMO: γ, the L2 regularization of ξ (0.001: the authors' scripts for NYUv2, CelebA, QM9).",
    lower=0.0,
  ),
  Param(
    "famo_xi_optimizer",
    ENUM,
    "adam",
    "FAMO: how ξ steps: adam (every public implementation) or sgd (the paper's Algorithm 1).",
    choices=("adam", "sgd"),
  ),
  Param(
    "famo_min_losses",
    TASK_FLOATS,
    "",
    "FAMO: per-task loss offsets ℓ* as name:value,... inside log(L − ℓ*); unnamed tasks get 0 (the authors' default).",
    lower=None,
  ),
)


def logit_gradient(logits: tf.Tensor, decrease: tf.Tensor, gamma: float) -> tf.Tensor:
  """∇_ξ (softmax(ξ)ᵀδ) + γ·ξ, the direction ξ steps against."""
  z = tf.nn.softmax(logits)
  return z * decrease - z * tf.reduce_sum(z * decrease) + gamma * logits


@BALANCERS.register("famo", params=PARAMS)
class FAMO(LossFunctionBalancer):
  """Liu et al. 2023: softmax weights on log losses, learned from the realized loss decrease."""

  relative_only = True  # one task: z = 1 and the weight z/(c·ℓ) = 1
  needs_losses_after_update = True

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    given = params["famo_min_losses"]
    check_task_names("famo_min_losses", given, self.task_names)
    self.min_losses = tf.constant([given.get(name, 0.0) for name in self.task_names], tf.float32)
    self.learning_rate = float(params["famo_learning_rate"])
    self.gamma = float(params["famo_gamma"])
    self.logits = state_variable(tf.zeros([self.num_tasks]), "logits")
    self.adam = (
      StateAdam(self.learning_rate, [self.logits], epsilon=1e-8) if params["famo_xi_optimizer"] == "adam" else None
    )

  def shifted(self, losses: tf.Tensor) -> tf.Tensor:
    """ℓ_t = max(L_t − ℓ*_t, 0) + ε."""
    return tf.maximum(tf.cast(losses, tf.float32) - self.min_losses, 0.0) + LOG_EPSILON

  def scalarize(self, losses: tf.Tensor) -> tf.Tensor:
    z = tf.nn.softmax(self.logits)
    shifted = self.shifted(losses)
    c = tf.stop_gradient(1.0 / tf.reduce_sum(z / shifted))
    return c * tf.reduce_sum(z * tf.math.log(shifted))

  def update(self, stats: StepStats) -> dict[str, tf.Tensor]:
    assert stats.losses_after is not None, "FAMO declares needs_losses_after_update"
    decrease = tf.math.log(self.shifted(stats.losses)) - tf.math.log(self.shifted(stats.losses_after))
    gradient = logit_gradient(self.logits, decrease, self.gamma)
    if self.adam is None:
      self.logits.assign_sub(self.learning_rate * gradient)
    else:
      self.adam.apply([gradient])
    return {"famo/log_loss_decrease": decrease}

  def summaries(self) -> dict[str, tf.Tensor]:
    return {"famo/logits": self.logits.read_value()}

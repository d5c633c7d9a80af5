"""GradNorm: Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient
Normalization for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018.

The model follows Σ_t w_t·L_t. The weights w follow their own loss (Eq. 2):

  G_t   = ‖∇_W (w_t·L_t)‖₂ = w_t·‖∇_W L_t‖₂      W: kernel of the last shared layer
  L̃_t   = L_t / L_t(0)                           loss ratio (inverse training rate)
  r_t   = L̃_t / mean_j L̃_j                       relative inverse training rate
  L_grad = Σ_t | G_t − [mean_j G_j · r_t^α] |     the bracket is held constant

L_grad is differentiated with respect to w only (never the model), with its own
optimizer (Adam, --gradnorm_lr). After each update w is kept positive and
renormalized so that Σ_t w_t = T (§3.2). Defaults follow the paper: α = 1.5
(--gradnorm_alpha; the paper uses 0.12 on its toy regression), w_t(0) = 1,
L_t(0) = the loss at the first step.

Variants, behind flags so a paper can ablate them (paper version default):
  --gradnorm_scope=shared   G_t over all shared parameters, as several public
                            implementations do (T backward passes through the
                            trunk instead of one small one per task).
  --gradnorm_l0_steps=K     L_t(0) = mean loss over the first K steps
                            (0: the first epoch, as LibMTL does); w is held
                            until L_t(0) is known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers.base import Balancer, GradientScope, Schedule, StepStats, state_variable
from mtl_research.balancers.registry import BALANCERS
from mtl_research.errors import UserError
from mtl_research.optim.state_adam import StateAdam
from mtl_research.params import ENUM, FLOAT, INT, Param

PARAMS = (
  Param("gradnorm_alpha", FLOAT, 1.5, "GradNorm asymmetry α (paper: 1.5 on NYUv2, 0.12 on its toy).", lower=0.0),
  Param("gradnorm_lr", FLOAT, 0.025, "Learning rate of GradNorm's own Adam on the weights w.", lower=0.0),
  Param(
    "gradnorm_scope",
    ENUM,
    "last_shared",
    "Gradients G_t at the last shared layer's kernel (paper) or over all shared parameters.",
    choices=("last_shared", "shared"),
  ),
  Param("gradnorm_l0_steps", INT, 1, "Average L_t(0) over the first K steps (1: paper; 0: first epoch).", lower=0),
)

MIN_WEIGHT = 1e-6  # keeps w positive before renormalization


@BALANCERS.register("gradnorm", params=PARAMS)
class GradNorm(Balancer):
  """Chen et al. 2018: weights w_t tuned so weighted gradient norms track training rates."""

  relative_only = True  # weights renormalized to sum to T: with T = 1 the weight is 1 at every step
  # uses_run_length stays False: the rule reads the step and steps_per_epoch (the
  # L(0) window of --gradnorm_l0_steps=0), never total_steps, which only
  # validates the window; so a GradNorm run may be extended.

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.alpha = float(params["gradnorm_alpha"])
    self.gradient_scope = GradientScope.SHARED if params["gradnorm_scope"] == "shared" else GradientScope.LAST_SHARED
    self.l0_steps = int(params["gradnorm_l0_steps"]) or max(schedule.steps_per_epoch, 1)
    if self.l0_steps >= schedule.total_steps:
      raise UserError(
        f"--gradnorm_l0_steps={params['gradnorm_l0_steps']} averages L(0) over {self.l0_steps} steps, "
        f"but the run has {schedule.total_steps}: the weights would never move."
      )
    self.w = state_variable(tf.ones([self.num_tasks]), "w", trainable=True)
    self.initial_losses = state_variable(tf.zeros([self.num_tasks]), "initial_losses")
    self.optimizer = StateAdam(params["gradnorm_lr"], [self.w])

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.stop_gradient(self.w) * losses)

  def weights(self) -> tf.Tensor:
    return self.w.read_value()

  def _record_initial_losses(self, losses: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """Running mean of the losses over steps [0, K); returns the current L(0)."""
    in_window = step < self.l0_steps
    count = tf.cast(step, tf.float32)
    running = (self.initial_losses * count + losses) / (count + 1.0)
    return self.initial_losses.assign(tf.where(in_window, running, self.initial_losses))

  def _step_weights(self, grad_w: tf.Tensor, active: tf.Tensor | None) -> None:
    """One optimizer step on w, then w > 0 and Σ w = T (the paper's §3.2); none where not `active`."""
    self.optimizer.apply([grad_w], active)
    positive = tf.maximum(self.w, MIN_WEIGHT)
    renormalized = positive * (self.num_tasks / tf.reduce_sum(positive))
    self.w.assign(renormalized if active is None else tf.where(active, renormalized, self.w))

  def update(self, stats: StepStats) -> dict[str, tf.Tensor]:
    losses = tf.stop_gradient(stats.losses)
    initial = self._record_initial_losses(losses, stats.step)
    # gradient_scope is LAST_SHARED or SHARED (never NONE), so the step computed the per-task gradients.
    assert stats.task_grads is not None
    grad_norms = tf.stack([tf.linalg.global_norm(list(grads)) for grads in stats.task_grads])
    loss_ratio = losses / initial
    relative_rate = loss_ratio / tf.reduce_mean(loss_ratio)
    with tf.GradientTape() as tape:
      weighted_norms = self.w * grad_norms
      target = tf.stop_gradient(tf.reduce_mean(weighted_norms) * relative_rate**self.alpha)
      l_grad = tf.reduce_sum(tf.abs(weighted_norms - target))
    grad_w = tape.gradient(l_grad, self.w)
    # Hold w (and its optimizer's step count) until L(0) is final.
    self._step_weights(grad_w, None if self.l0_steps == 1 else stats.step >= self.l0_steps - 1)
    return {
      "gradnorm/grad_norm": weighted_norms,
      "gradnorm/target": target,
      "gradnorm/loss_ratio": loss_ratio,
      "gradnorm/l_grad": l_grad,
    }

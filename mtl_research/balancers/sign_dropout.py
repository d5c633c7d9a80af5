"""GradDrop: Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign: Optimizing
Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020 (arXiv:2010.06808), Algorithm 1.

GradDrop works at an activation A shared by the tasks; here A is the shared
representation Z (the trunk's output), so it runs under the representation
scope only. With ∇_t = ∂L_t/∂A ([rows, d]):

  1. the sign signal s_t = sgn(A)∘∇_t ("input sign", §3.3; off: s_t = ∇_t), and for
     batch-separated activations its sum over the batch (§3.3, "marginalize"):
     s_t ← Σ_rows s_t, one value per feature;
  2. the positive sign purity (Eq. 1)  P = ½(1 + Σ_t s_t / Σ_t |s_t|)  ∈ [0, 1];
  3. U ~ Uniform(0, 1) of P's shape, and the masks (Eq. 2)
       M_t = I[P > U]∘I[s_t > 0] + I[P < U]∘I[s_t < 0]:
     at each element the draw keeps the tasks of one sign, positive with probability P;
  4. the gradient back-propagated from A (Eq. 3, with the leak ℓ of Algorithm 1)
       Σ_t (ℓ + (1 − ℓ)·M_t)∘∇_t,
     the masks broadcast over the rows when the signal was marginalized.

f(P) = P (the paper's default "linear" keep function). Defaults follow Algorithm 1
and the authors' code (tensorflow/lingvo, lingvo/core/graddrop.py), which agree:
input sign on, batch marginalized, leak 0. Where they differ, a flag:

  --graddrop_keep_norm (default off: Algorithm 1 has no rescaling). The authors'
      code rescales the result to the norm of the plain sum Σ_t ∇_t
      (`keep_gradnorm_constant=True`, its default).

One more detail of the code is kept: an element whose signal is exactly 0 (for
example A = 0 after a ReLU under the input sign, where the paper's P is 0/0 if
every task's signal is 0) keeps its gradient. The leak applies to every task
alike (the paper allows one ℓ_t per task, for transfer learning).

Randomness: U is drawn from the step's stateless seed (portable_random: the same
bits under XLA and in a graph, which TensorFlow's stateless ops are not), so two
runs draw alike and a resumed run redraws what the uninterrupted one drew. Under
tf.distribute each replica holds its own rows of Z: a marginalized signal is
summed over replicas (`replica_sum`) and U ([1, d]) is the same on every
replica; otherwise each replica draws its own rows of the global batch's draw
(from `row_offset`), so R replicas draw exactly what one device draws. The norms of --graddrop_keep_norm
are global too.

Weights: GradDrop masks elements of the tasks' gradients; it has no per-task
weight, so `weights()` reports ones and TensorBoard shows `graddrop/kept_fraction`
(the fraction of task-gradient elements the masks keep, as the authors' code
logs it) instead. The heads follow Σ_t L_t.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import portable_random
from mtl_research.balancers.base import Balancer, GradientScope, Schedule, StepStats, state_variable
from mtl_research.balancers.registry import BALANCERS
from mtl_research.errors import UserError
from mtl_research.params import BOOL, FLOAT, Param

PARAMS = (
  Param(
    "graddrop_leak",
    FLOAT,
    0.0,
    "GradDrop: leak ℓ in [0, 1], the share of each task's gradient that passes unmasked (0: pure GradDrop, "
    "the paper's default; 1: the plain sum).",
    lower=0.0,
  ),
  Param(
    "graddrop_input_sign",
    BOOL,
    True,
    "GradDrop: multiply the gradients by the sign of the representation before the vote (the paper's §3.3 and "
    "the authors' code).",
  ),
  Param(
    "graddrop_marginalize_batch",
    BOOL,
    True,
    "GradDrop: sum the sign signal over the batch, one draw per feature (the paper's batch-separated case and "
    "the authors' default); off: one draw per element.",
  ),
  Param(
    "graddrop_keep_norm",
    BOOL,
    False,
    "GradDrop: rescale the result to the norm of the plain sum of the task gradients (the authors' code); off "
    "as in the paper's Algorithm 1.",
  ),
)

TAG_PREFIX = "graddrop"


def _identity(value: Any) -> Any:
  return value


def draw_uniform(seed: tf.Tensor, rows: int, width: int, marginalize: bool, row_offset) -> tf.Tensor:
  """U of this replica: [1, d] if marginalized (alike on every replica), else this replica's rows of the
  global batch's draw (rows `row_offset` ..), the same bits under XLA and in a graph (portable_random)."""
  if marginalize:
    return portable_random.uniform(seed, [1, width])
  return portable_random.uniform(seed, [rows, width], offset=tf.cast(row_offset, tf.int64) * width)


def graddrop_gradient(
  grads: tf.Tensor,
  activations: tf.Tensor,
  uniform: tf.Tensor,
  *,
  leak: float = 0.0,
  input_sign: bool = True,
  marginalize: bool = True,
  keep_norm: bool = False,
  replica_sum: Callable[[Any], Any] = _identity,
) -> tuple[tf.Tensor, tf.Tensor]:
  """GradDrop's gradient of A from the tasks' gradients `grads` [T, rows, d] (module docstring).

  `activations` is A [rows, d]; `uniform` is U, [1, d] if `marginalize` else
  [rows, d]. Returns (the gradient [rows, d], the fraction of kept elements).
  """
  signal = grads * tf.sign(activations)[None] if input_sign else grads
  if marginalize:
    signal = replica_sum(tf.reduce_sum(signal, axis=1, keepdims=True))  # [T, 1, d]
  total = tf.reduce_sum(signal, axis=0)
  magnitude = tf.reduce_sum(tf.abs(signal), axis=0)
  purity = 0.5 * (1.0 + tf.math.divide_no_nan(total, magnitude))  # P = ½ where every signal is 0
  keep_positive = (purity > uniform)[None]
  keep_negative = (purity < uniform)[None]
  masks = tf.logical_or(
    tf.logical_or(tf.logical_and(signal > 0, keep_positive), tf.logical_and(signal < 0, keep_negative)),
    tf.equal(signal, 0.0),
  )
  kept = tf.cast(masks, grads.dtype)
  combined = tf.reduce_sum((leak + (1.0 - leak) * kept) * grads, axis=0)
  if keep_norm:
    squares = replica_sum(tf.stack([tf.reduce_sum(tf.square(tf.reduce_sum(grads, 0))), tf.reduce_sum(combined**2)]))
    combined *= tf.math.divide_no_nan(tf.sqrt(squares[0]), tf.sqrt(squares[1]))
  counts = tf.stack([tf.reduce_sum(kept), tf.cast(tf.size(kept), grads.dtype)])
  if not marginalize:  # each replica's masks cover its own rows
    counts = replica_sum(counts)
  return combined, counts[0] / counts[1]


@BALANCERS.register("graddrop", params=PARAMS)
class GradDrop(Balancer):
  """Chen et al. 2020: a random sign vote per element of the representation's gradient."""

  gradient_scope = GradientScope.REPRESENTATION
  aggregates = True
  relative_only = True  # one task: every signal agrees with itself, nothing is dropped
  fixed_flags = {
    "gradient_scope": (
      "representation",
      "GradDrop masks the gradient of the shared representation, as in Chen et al. 2020",
    )
  }

  def __init__(self, task_specs: Sequence[tasks_lib.TaskSpec], params: Mapping[str, Any], schedule: Schedule):
    super().__init__(task_specs, params, schedule)
    self.leak = float(params["graddrop_leak"])
    if self.leak > 1.0:
      raise UserError(f"--graddrop_leak must be in [0, 1] (a share of each gradient), not {self.leak:g}.")
    self.input_sign = bool(params["graddrop_input_sign"])
    self.marginalize = bool(params["graddrop_marginalize_batch"])
    self.keep_norm = bool(params["graddrop_keep_norm"])
    self._kept = state_variable(tf.constant(1.0), name="kept_fraction")

  def objective(self, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(losses)  # the heads follow their own losses

  def aggregate(self, stats: StepStats) -> list[tf.Tensor]:
    assert stats.task_grads is not None and stats.representation is not None and stats.seed is not None
    grads = tf.stack([tf.convert_to_tensor(task[0]) for task in stats.task_grads])
    if grads.shape.rank != 3:
      raise ValueError(f"GradDrop expects a representation of shape [rows, d], not {grads.shape[1:]}")
    rows, width = int(grads.shape[1]), int(grads.shape[2])
    uniform = draw_uniform(stats.seed, rows, width, self.marginalize, stats.row_offset)
    combined, kept = graddrop_gradient(
      grads,
      tf.cast(stats.representation, grads.dtype),
      uniform,
      leak=self.leak,
      input_sign=self.input_sign,
      marginalize=self.marginalize,
      keep_norm=self.keep_norm,
      replica_sum=stats.replica_sum,
    )
    self._kept.assign(kept)  # a diagnostic only: no method state depends on it
    return [combined]

  def summaries(self) -> dict[str, tf.Tensor]:
    return {f"{TAG_PREFIX}/kept_fraction": self._kept.read_value()}

  def weights(self) -> tf.Tensor:
    return tf.ones([self.num_tasks])

"""DSelect-k: Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong & Chi, "DSelect-k:
Differentiable Selection in the Mixture of Experts with Applications to Multi-Task Learning", NeurIPS
2021: MMoE (models/mmoe.py) with each task's softmax gate replaced by a differentiable top-k gate.

The smooth-step function (§3.1, Eq. 3), with γ = `--dselect_gamma`:

  S(t) = 0 if t ≤ −γ/2;   −2/γ³·t³ + 3/(2γ)·t + 1/2 if −γ/2 ≤ t ≤ γ/2;   1 if t ≥ γ/2.

It is continuously differentiable and exactly 0 or 1 outside [−γ/2, γ/2]. A single-expert selector
(§3.1, Eq. 4) encodes the choice of one of n experts with m = ⌈log₂ n⌉ variables z ∈ R^m,

  r(z)_i = Π_{j=1}^{m} ( S(z_j) if bit j of (i − 1) is 1, else 1 − S(z_j) ),   i = 1..n,

(bit 1 the most significant): r sums to 1 over the 2^m codes, and when every S(z_j) is 0 or 1 it is
one-hot. DSelect-k (§3.2, Eq. 6) mixes k selectors z^(1..k) (`--dselect_k`) with weights α,

  q(α, Z) = Σ_{i=1}^{k} softmax(α)_i · r(z^(i)),

so once the smooth steps saturate at most k experts have nonzero weight (exactly k when the selectors
pick different experts). In the per-example form used here (§3.2, "per-example gating", as MMoE's
gates), z^(i) = W_z^(i) x + b_z^(i) and α = W_α x + b_α read the encoded input x of every example.

Regularizers, added to the model's losses in training only, each the mean over the batch's examples
(the step's loss is a mean over examples; the authors' code sums over the batch, which is this λ
times the batch size):
  * the entropy regularizer (§3.3), λ·Σ_i h(r(z^(i))), h(p) = −Σ_j p_j log(p_j + 1e-6), with λ =
    `--dselect_entropy_reg` (0 = off, the authors' code's default); it pushes the selectors to
    one-hot sooner. (ε = 1e-6: the gradient of p·log p at p = 0 is infinite; saturated selectors have
    exact zeros.)
  * when n is not a power of two, the 2^m − n codes past the last expert select nothing; as in the
    authors' code, Σ_i 1/(Σ_{j≤n} r(z^(i))_j + 1e-6) (≈ k, with zero gradient once the selectors stay
    on real experts) keeps them from doing so. (The 1e-6 is ours: a selector saturated on a code past
    the last expert would make the authors' term infinite.)

Initialization as the authors' code: W_z and b_z uniform in ±γ/100 (every S(z) ≈ 1/2, all experts
equally weighted at the start), W_α and b_α uniform in ±0.05.

What the model declares is MMoE's: the experts and the encoder are shared; each task's gate (its z and
α layers), tower and output layer are its own; Z = [x, f_1(x), ..., f_n(x)]. TensorBoard adds to
MMoE's per-expert weights each task's mean count of experts with a nonzero weight,
`gate/<task>/selected_experts` (k, or fewer, once the gate has converged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

import numpy as np
import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.features import FeatureSpec
from mtl_research.models import mmoe
from mtl_research.models.registry import ARCHITECTURES
from mtl_research.params import FLOAT, INT, Param

PARAMS = (
  *mmoe.PARAMS,
  Param("dselect_k", INT, 2, "DSelect-k: experts each task's gate selects (k selectors).", lower=1),
  Param("dselect_gamma", FLOAT, 1.0, "DSelect-k: γ, the width of the smooth-step's cubic part.", above=0.0),
  Param(
    "dselect_entropy_reg",
    FLOAT,
    0.0,
    "DSelect-k: λ of the selectors' entropy regularizer (mean over examples; 0 = off).",
    lower=0.0,
  ),
)

# A selector weight below this counts as not selected (saturated selectors give exact zeros).
SELECTED = 1e-6
ENTROPY_EPSILON = 1e-6
# A selector saturated on a code past the last expert reaches none (a sum of exactly 0): its term is then
# 1e6 with a zero gradient, rather than the authors' infinity, which would stop the run.
REACH_EPSILON = 1e-6


def smooth_step(t: tf.Tensor, gamma: float) -> tf.Tensor:
  """S(t) of §3.1: the cubic −2/γ³·t³ + 3/(2γ)·t + 1/2 on [−γ/2, γ/2], 0 below and 1 above."""
  cubic = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
  return tf.where(t <= -gamma / 2, tf.zeros_like(t), tf.where(t >= gamma / 2, tf.ones_like(t), cubic))


def binary_codes(num_experts: int) -> np.ndarray:
  """[n, m] booleans: row i is the m-bit binary code of i, most significant bit first."""
  bits = max(1, math.ceil(math.log2(num_experts)))
  return np.array([[(i >> (bits - 1 - j)) & 1 for j in range(bits)] for i in range(num_experts)], bool)


class DSelectKGate(tf.keras.layers.Layer):
  """Per-example DSelect-k gate: x [batch, d] → expert weights [batch, n] with at most k nonzero once saturated."""

  def __init__(self, num_experts: int, k: int, gamma: float, entropy_reg: float, **kwargs):
    super().__init__(**kwargs)
    self.num_experts, self.k, self.gamma, self.entropy_reg = int(num_experts), int(k), float(gamma), entropy_reg
    self.codes = binary_codes(self.num_experts)
    self.bits = self.codes.shape[1]
    z_init = tf.keras.initializers.RandomUniform(-self.gamma / 100, self.gamma / 100)
    alpha_init = tf.keras.initializers.RandomUniform(-0.05, 0.05)
    self.z = tf.keras.layers.Dense(self.k * self.bits, kernel_initializer=z_init, bias_initializer=z_init, name="z")
    self.alpha = tf.keras.layers.Dense(self.k, kernel_initializer=alpha_init, bias_initializer=alpha_init, name="alpha")

  def selectors(self, x: tf.Tensor) -> tf.Tensor:
    """r(z^(i)) for each example and selector, [batch, k, n]."""
    steps = smooth_step(tf.reshape(self.z(x), [-1, self.k, 1, self.bits]), self.gamma)  # [batch, k, 1, m]
    return tf.reduce_prod(tf.where(tf.constant(self.codes), steps, 1.0 - steps), axis=-1)

  def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
    selectors = self.selectors(x)
    weights = tf.nn.softmax(self.alpha(x), axis=-1)  # [batch, k]
    if training:
      self._regularize(selectors)
    return tf.einsum("bk,bkn->bn", weights, selectors)

  def _regularize(self, selectors: tf.Tensor) -> None:
    if self.entropy_reg > 0:
      entropy = -tf.reduce_sum(selectors * tf.math.log(selectors + ENTROPY_EPSILON), axis=[1, 2])
      self.add_loss(self.entropy_reg * tf.reduce_mean(entropy))
    if self.num_experts != 2**self.bits:
      reachable = tf.reduce_sum(selectors, axis=-1) + REACH_EPSILON
      self.add_loss(tf.reduce_mean(tf.reduce_sum(1.0 / reachable, axis=-1)))


class DSelectK(mmoe.MMoE):
  """MMoE with DSelect-k gates (Hazimeh et al. 2021)."""

  def __init__(
    self,
    task_specs: Sequence[tasks_lib.TaskSpec],
    feature_spec: FeatureSpec,
    num_experts: int,
    expert_units: Sequence[int],
    tower_units: Sequence[int],
    k: int,
    gamma: float,
    entropy_reg: float,
    dropout: float = 0.0,
    l2: float = 0.0,
    embedding_dim: int = 8,
  ):
    def make_gate(task: str) -> DSelectKGate:
      # No L2: the paper regularizes the gate by its selectors' entropy, not by weight decay.
      return DSelectKGate(num_experts, k, gamma, entropy_reg, name=f"gate_{task}")

    super().__init__(
      task_specs, feature_spec, num_experts, expert_units, tower_units, dropout, l2, embedding_dim, make_gate
    )

  def summaries(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """MMoE's per-expert weights, and each task's mean count of experts it selects (`selected_experts`)."""
    result = super().summaries(features)
    for name, gates in self.gate_weights(self.encoder(features)).items():
      count = tf.reduce_sum(tf.cast(gates > SELECTED, tf.float32), axis=-1)
      result[f"gate/{name}/selected_experts"] = tf.reduce_mean(count)
    return result


@ARCHITECTURES.register("dselect_k", params=PARAMS)
def build(task_specs: Sequence[tasks_lib.TaskSpec], feature_spec: FeatureSpec, params: Mapping[str, Any]) -> DSelectK:
  """MMoE with differentiable top-k gates (Hazimeh et al., NeurIPS 2021)."""
  return DSelectK(
    task_specs,
    feature_spec,
    params["num_experts"],
    params["expert_units"],
    params["tower_units"],
    params["dselect_k"],
    params["dselect_gamma"],
    params["dselect_entropy_reg"],
    params["dropout"],
    params["l2"],
    params["embedding_dim"],
  )

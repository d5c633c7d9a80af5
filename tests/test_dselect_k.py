"""DSelect-k's gate (models/dselect_k.py) against a float64 NumPy reference written from the paper
(Hazimeh et al., NeurIPS 2021, Eqs. 3, 4 and 6, §3.3), and the property that defines it: once its
smooth steps saturate, a gate selects at most k experts (exactly k when its selectors differ)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests.conftest import build_config, make_bundle
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  from conftest import build_config, make_bundle

from mtl_research import tasks as tasks_lib
from mtl_research.models import dselect_k
from mtl_research.train import components as components_lib

WIDTH = 5


def reference_smooth_step(t: np.ndarray, gamma: float) -> np.ndarray:
  """Eq. 3: 0 below −γ/2, 1 above γ/2, the cubic −2t³/γ³ + 3t/(2γ) + 1/2 between."""
  t = np.asarray(t, np.float64)
  cubic = -2.0 * t**3 / gamma**3 + 3.0 * t / (2.0 * gamma) + 0.5
  return np.where(t <= -gamma / 2, 0.0, np.where(t >= gamma / 2, 1.0, cubic))


def reference_selector(z: np.ndarray, num_experts: int, gamma: float) -> np.ndarray:
  """Eq. 4: r(z)_i = Π_j S(z_j) if bit j of i (most significant first) is 1 else 1 − S(z_j)."""
  m = len(z)
  s = reference_smooth_step(z, gamma)
  out = np.ones(num_experts)
  for i in range(num_experts):
    for j in range(m):
      bit = (i >> (m - 1 - j)) & 1
      out[i] *= s[j] if bit else 1.0 - s[j]
  return out


def reference_gate(x, z_kernel, z_bias, a_kernel, a_bias, num_experts, k, gamma):
  """Eq. 6, per example: q = Σ_i softmax(α)_i r(z^(i)), z = x W_z + b_z (k rows of m), α = x W_α + b_α."""
  m = z_kernel.shape[1] // k
  rows = []
  for row in x:
    z = (row @ z_kernel + z_bias).reshape(k, m)
    alpha = row @ a_kernel + a_bias
    weights = np.exp(alpha - alpha.max())
    weights /= weights.sum()
    rows.append(sum(weights[i] * reference_selector(z[i], num_experts, gamma) for i in range(k)))
  return np.array(rows)


def make_gate(num_experts: int, k: int, gamma: float = 1.0, entropy_reg: float = 0.0, seed: int = 0):
  gate = dselect_k.DSelectKGate(num_experts, k, gamma, entropy_reg)
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(7, WIDTH))
  gate(tf.constant(x, tf.float32))  # builds
  for variable in gate.trainable_variables:  # spread the z's over the cubic and both flat parts
    variable.assign(rng.normal(scale=gamma, size=variable.shape))
  return gate, x


def weights_of(gate) -> list[np.ndarray]:
  return [v.numpy().astype(np.float64) for v in (gate.z.kernel, gate.z.bias, gate.alpha.kernel, gate.alpha.bias)]


def test_smooth_step_matches_the_paper_and_is_continuously_differentiable():
  gamma = 0.7
  t = np.linspace(-1.0, 1.0, 401)
  got = dselect_k.smooth_step(tf.constant(t, tf.float64), gamma).numpy()
  np.testing.assert_allclose(got, reference_smooth_step(t, gamma), rtol=0, atol=1e-12)
  assert reference_smooth_step(0.0, gamma) == 0.5 and np.all(np.diff(got) >= 0)
  # C¹ at ±γ/2: the cubic meets the flat parts with value 0/1 and slope 0.
  for edge, value in ((-gamma / 2, 0.0), (gamma / 2, 1.0)):
    with tf.GradientTape() as tape:
      point = tf.constant(edge * (1 - 1e-9), tf.float64)
      tape.watch(point)
      y = dselect_k.smooth_step(point, gamma)
    assert float(y) == pytest.approx(value, abs=1e-8) and abs(float(tape.gradient(y, point))) < 1e-6


def test_binary_codes_are_most_significant_bit_first():
  np.testing.assert_array_equal(dselect_k.binary_codes(5), [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0]])
  np.testing.assert_array_equal(dselect_k.binary_codes(1), [[0]])


@pytest.mark.parametrize("num_experts,k,gamma", [(8, 2, 1.0), (6, 3, 0.5), (2, 1, 2.0)])
def test_gate_matches_the_float64_reference(num_experts, k, gamma):
  gate, x = make_gate(num_experts, k, gamma)
  got = gate(tf.constant(x, tf.float32)).numpy()
  want = reference_gate(x, *weights_of(gate), num_experts, k, gamma)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  sums = got.sum(axis=1)
  if num_experts & (num_experts - 1) == 0:  # a power of two: every code is an expert, rows sum to 1
    np.testing.assert_allclose(sums, 1.0, rtol=1e-6)
  else:
    assert np.all(sums <= 1.0 + 1e-6)


@pytest.mark.parametrize("choices,selected", [((5, 2), 2), ((3, 3), 1), ((0, 7, 4), 3)])
def test_saturated_selectors_pick_exactly_their_experts(choices, selected):
  """z^(i) = ±γ (beyond the cubic part) encodes expert choices[i]: the gate is softmax(α) on those experts
  and zero elsewhere — exactly k experts when the choices differ, fewer when two selectors agree."""
  num_experts, k, gamma = 8, len(choices), 1.0
  gate, x = make_gate(num_experts, k, gamma)
  codes = dselect_k.binary_codes(num_experts)
  gate.z.kernel.assign(np.zeros(gate.z.kernel.shape))
  gate.z.bias.assign(np.concatenate([np.where(codes[c], gamma, -gamma) for c in choices]))
  got = gate(tf.constant(x, tf.float32)).numpy()
  assert np.all(np.count_nonzero(got, axis=1) == selected)
  _, _, a_kernel, a_bias = weights_of(gate)
  alpha = x @ a_kernel + a_bias
  softmax = np.exp(alpha - alpha.max(axis=1, keepdims=True))
  softmax /= softmax.sum(axis=1, keepdims=True)
  want = np.zeros_like(got, dtype=np.float64)
  for i, c in enumerate(choices):
    want[:, c] += softmax[:, i]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("num_experts", [8, 6])
def test_regularizers_match_the_reference_and_apply_in_training_only(num_experts):
  lam, k, gamma = 0.3, 2, 1.0
  gate, x = make_gate(num_experts, k, gamma, entropy_reg=lam)
  gate(tf.constant(x, tf.float32), training=False)
  assert not gate.losses
  gate(tf.constant(x, tf.float32), training=True)
  z_kernel, z_bias, _, _ = weights_of(gate)
  m = z_kernel.shape[1] // k
  entropies, reach = [], []
  for row in x:
    z = (row @ z_kernel + z_bias).reshape(k, m)
    r = [reference_selector(z[i], num_experts, gamma) for i in range(k)]
    entropies.append(-sum(np.sum(p * np.log(p + 1e-6)) for p in r))
    reach.append(sum(1.0 / (p.sum() + 1e-6) for p in r))
  want = [lam * np.mean(entropies)] + ([np.mean(reach)] if num_experts == 6 else [])
  np.testing.assert_allclose([float(v) for v in gate.losses], want, rtol=1e-5)


def test_the_entropy_regularizer_alone_drives_every_selector_to_one_expert():
  """§3.3's purpose: minimizing λ·Σ h(r(z^(i))) ends with every single-expert selector one-hot."""
  gate, x = make_gate(8, 2, 1.0, entropy_reg=1.0, seed=3)
  for variable in gate.trainable_variables:
    variable.assign(variable * 0.05)  # start near the middle, as the paper's initialization
  inputs = tf.constant(x, tf.float32)
  optimizer = tf.keras.optimizers.SGD(0.5)
  selector_variables = gate.z.trainable_variables  # α does not enter the entropy
  for _ in range(300):
    with tf.GradientTape() as tape:
      gate(inputs, training=True)
      loss = tf.add_n(gate.losses)
    optimizer.apply_gradients(zip(tape.gradient(loss, selector_variables), selector_variables))
  selectors = gate.selectors(inputs).numpy()
  np.testing.assert_allclose(selectors.max(axis=-1), 1.0, atol=1e-6)
  assert float(tf.add_n(gate.losses)) < 1e-4


def test_dselect_k_trains_with_its_regularizers_in_the_compiled_loop():
  """Both regularizers (6 experts: not a power of two) reach the step's objective through the model's
  losses, under XLA; the summaries count each task's selected experts."""
  task_specs = (tasks_lib.TaskSpec("a", tasks_lib.REGRESSION), tasks_lib.TaskSpec("b", tasks_lib.CLASSIFICATION, 3))
  config = build_config(
    model="dselect_k",
    model_params={"num_experts": 6, "dselect_entropy_reg": 0.1, "expert_units": [8], "tower_units": [4]},
    loop={"train_steps": 8, "steps_per_loop": 8},
  )
  parts = components_lib.build(config, make_bundle(task_specs, num_train=64, num_eval=32))
  logs = parts.train_loop.run(8)
  assert np.all(np.isfinite(logs["losses"]))
  # The objective is Σ L_t (fixed weights of 1) plus the regularizers; at the start every S(z) ≈ 1/2,
  # so the reach term alone is ≈ k·8/6 per example.
  regularization = float(logs["objective"]) - float(np.sum(logs["losses"]))
  assert regularization > 2 * 8 / 6, regularization
  # After 8 steps every S(z) is still inside the cubic part (z starts within ±γ/100): all 6 experts count.
  for task in ("a", "b"):
    assert float(logs["diagnostics"][f"gate/{task}/selected_experts"]) == 6.0
  # Saturated on experts 5 and 2 for every example: the summary counts exactly those two.
  codes = dselect_k.binary_codes(6)
  for gate in parts.model.gates.values():
    gate.z.kernel.assign(np.zeros(gate.z.kernel.shape))
    gate.z.bias.assign(np.concatenate([np.where(codes[c], 1.0, -1.0) for c in (5, 2)]))
  features = {k: v[:16] for k, v in make_bundle(task_specs, num_train=64, num_eval=32).train.features.items()}
  summaries = parts.model.summaries({k: tf.constant(v) for k, v in features.items()})
  for task in ("a", "b"):
    assert float(summaries[f"gate/{task}/selected_experts"]) == 2.0

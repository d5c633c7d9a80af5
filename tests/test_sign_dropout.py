"""GradDrop (Chen et al., NeurIPS 2020), `--balancer=graddrop`: against a NumPy reference written from
Algorithm 1 with the same uniform draw, its defining properties, its draws across replicas and steps,
and a training run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import sign_dropout
from mtl_research.train import components as components_lib

# --- float64 NumPy reference (Algorithm 1 of the paper) -----------------------------------------------------


def ref_graddrop(grads, activations, uniform, leak=0.0, input_sign=True, marginalize=True, keep_norm=False):
  """Σ_t (ℓ + (1−ℓ)M_t)∇_t with P = ½(1 + Σs/Σ|s|), M_t = [P>U][s_t>0] + [P<U][s_t<0] (+ kept where s_t = 0)."""
  grads = np.asarray(grads, np.float64)
  signals = [g * np.sign(activations) if input_sign else g for g in grads]
  if marginalize:
    signals = [s.sum(axis=0, keepdims=True) for s in signals]
  total, magnitude = sum(signals), sum(np.abs(s) for s in signals)
  purity = np.where(magnitude > 0, 0.5 * (1.0 + total / np.where(magnitude > 0, magnitude, 1.0)), 0.5)
  out = np.zeros_like(grads[0])
  kept = []
  for grad, signal in zip(grads, signals):
    mask = ((purity > uniform) & (signal > 0)) | ((purity < uniform) & (signal < 0)) | (signal == 0)
    kept.append(mask)
    out += (leak + (1.0 - leak) * mask) * grad
  if keep_norm:
    out *= np.linalg.norm(grads.sum(axis=0)) / np.linalg.norm(out)
  return out, float(np.mean(kept))


def _grads(case: str) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(abs(hash(case)) % 2**32 if case not in CASE_SEEDS else CASE_SEEDS[case])
  tasks = {"three_tasks": 3, "five_tasks": 5}.get(case, 2)
  grads = rng.normal(size=(tasks, 6, 4))
  if case == "strong_conflict":
    grads[1] = -0.9 * grads[0] + 0.1 * grads[1]
  elif case == "nearly_parallel":
    grads[1] = grads[0] + 1e-3 * grads[1]
  elif case == "one_task_100x":
    grads[1] *= 100.0
  elif case == "zero_gradient":
    grads[1] = 0.0
  activations = np.maximum(rng.normal(size=(6, 4)), 0.0)  # post-ReLU: some exact zeros
  return grads, activations


CASE_SEEDS = {
  "two_tasks": 0,
  "three_tasks": 1,
  "five_tasks": 2,
  "strong_conflict": 3,
  "nearly_parallel": 4,
  "one_task_100x": 5,
  "zero_gradient": 6,
}
OPTIONS = [
  dict(leak=leak, input_sign=sign, marginalize=marg, keep_norm=norm)
  for leak, sign, marg, norm in itertools.product((0.0, 0.3), (True, False), (True, False), (False, True))
]


def _tf(grads, activations, uniform, **options):
  combined, kept = sign_dropout.graddrop_gradient(
    tf.constant(grads, tf.float64), tf.constant(activations, tf.float64), tf.constant(uniform, tf.float64), **options
  )
  return combined.numpy(), float(kept)


@pytest.mark.parametrize("case", sorted(CASE_SEEDS))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
def test_matches_the_reference(case, options):
  grads, activations = _grads(case)
  shape = (1, grads.shape[2]) if options["marginalize"] else grads.shape[1:]
  uniform = np.random.default_rng(9).uniform(size=shape)
  got, kept = _tf(grads, activations, uniform, **options)
  want, want_kept = ref_graddrop(grads, activations, uniform, **options)
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
  assert kept == pytest.approx(want_kept, abs=1e-12)


@pytest.mark.parametrize("marginalize", [True, False])
def test_kept_gradients_have_one_sign_per_element(marginalize):
  """Leak 0: at every element every task's kept signal has the same sign (the paper's defining property)."""
  rng = np.random.default_rng(3)
  for _ in range(20):
    grads = rng.normal(size=(4, 5, 3))
    activations = rng.normal(size=(5, 3))
    uniform = rng.uniform(size=(1, 3) if marginalize else (5, 3))
    combined, _ = _tf(grads, activations, uniform, marginalize=marginalize)
    signals = grads * np.sign(activations)
    signals = signals.sum(axis=1, keepdims=True) if marginalize else signals
    # The reference masks, checked for the property itself: no element keeps both signs.
    _, _ = ref_graddrop(grads, activations, uniform, marginalize=marginalize)
    purity = 0.5 * (1 + signals.sum(0) / np.abs(signals).sum(0))
    positive = purity > uniform
    kept_signs = np.where(positive[None], signals >= 0, signals <= 0)
    assert kept_signs.any(axis=0).all()
    # Rebuild the result from the kept sign alone: it equals the TF result.
    keep = np.where(positive[None], signals > 0, signals < 0) | (signals == 0)
    np.testing.assert_allclose(combined, (keep * grads).sum(0), rtol=1e-9, atol=1e-12)


def test_leak_one_is_the_plain_sum_and_agreement_drops_nothing():
  rng = np.random.default_rng(4)
  grads = rng.normal(size=(3, 5, 4))
  activations = rng.normal(size=(5, 4))
  uniform = rng.uniform(size=(1, 4))
  combined, _ = _tf(grads, activations, uniform, leak=1.0)
  np.testing.assert_allclose(combined, grads.sum(0), rtol=1e-12)
  agreeing = np.abs(grads) * np.sign(activations)[None]  # every task's signal positive everywhere
  combined, kept = _tf(agreeing, activations, uniform)
  assert kept == 1.0
  np.testing.assert_allclose(combined, agreeing.sum(0), rtol=1e-12)


def test_positive_gradients_are_kept_with_probability_purity():
  """Over 4,000 draws an element's positive task is kept with frequency P (binomial: σ ≤ 0.008, 5σ bound)."""
  grads = np.array([[[3.0]], [[-1.0]]])  # P = ½(1 + 2/4) = 0.75
  activations = np.ones((1, 1))
  draws = tf.random.stateless_uniform([4000, 1, 1], seed=[7, 0], dtype=tf.float64).numpy()
  kept_positive = [_tf(grads, activations, u)[0][0, 0] == 3.0 for u in draws[:4000:1]]
  assert np.mean(kept_positive) == pytest.approx(0.75, abs=5 * np.sqrt(0.75 * 0.25 / 4000))


def test_replica_rows_draw_what_one_device_draws():
  """Per-element draws: two replicas' rows equal one device's draw of the batch; a new step draws anew."""
  seed = tf.constant([5, 11], tf.int64)
  whole = sign_dropout.draw_uniform(seed, 8, 3, marginalize=False, row_offset=0).numpy()
  halves = [sign_dropout.draw_uniform(seed, 4, 3, marginalize=False, row_offset=offset).numpy() for offset in (0, 4)]
  np.testing.assert_array_equal(np.concatenate(halves), whole)
  marginal = sign_dropout.draw_uniform(seed, 4, 3, marginalize=True, row_offset=4).numpy()
  np.testing.assert_array_equal(marginal, sign_dropout.draw_uniform(seed, 8, 3, True, 0).numpy())
  other_step = sign_dropout.draw_uniform(tf.constant([5, 12], tf.int64), 8, 3, False, 0).numpy()
  assert not np.array_equal(other_step, whole)


TASKS = (tasks_lib.TaskSpec("a", tasks_lib.REGRESSION), tasks_lib.TaskSpec("b", tasks_lib.REGRESSION))


def _bundle(conflicting: bool):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 4))
  a = x[:, 0] + 0.5 * x[:, 1]
  labels = {"a": a, "b": -a if conflicting else a}
  return helpers.make_bundle(TASKS, x, labels, (400, 100, 100))


def test_training_with_leak_one_is_the_sum_and_with_leak_zero_the_vote_changes_it(tmp_path):
  """Through the real step (∇_Z back-propagated from Z): leak 1 trains as `fixed` (Σ_t L_t) to rounding; leak 0
  drops part of the gradient (kept fraction in (0.3, 1)), changes the trajectory, and both tasks still learn."""
  bundle = _bundle(conflicting=True)
  runs = {}
  for name, overrides in (("fixed", {}), ("graddrop", {"graddrop_leak": 1.0}), ("graddrop", {})):
    config = helpers.make_config(
      tmp_path / f"{name}{len(runs)}", name, hidden_units=(16, 8), batch_size=32, train_steps=200, **overrides
    )
    parts = components_lib.build(config, bundle)
    first = np.asarray(helpers.run_loop(parts, 1)["losses"])
    kept = []
    for _ in range(20):
      logs = helpers.run_loop(parts, 10)
      if name == "graddrop":
        kept.append(float(parts.balancer.summaries()["graddrop/kept_fraction"]))
    runs[f"{name}{overrides.get('graddrop_leak', '')}"] = (helpers.model_values(parts.model), first, logs, kept)
  fixed, leak_one, vote = runs["fixed"], runs["graddrop1.0"], runs["graddrop"]
  for key, value in fixed[0].items():
    np.testing.assert_allclose(leak_one[0][key], value, rtol=1e-4, atol=1e-6, err_msg=key)
  assert max(np.max(np.abs(vote[0][k] - v)) for k, v in fixed[0].items()) > 1e-3
  assert 0.3 < min(vote[3]) and max(vote[3]) < 1.0, vote[3]
  assert np.all(np.asarray(vote[2]["losses"]) < 0.5 * vote[1]), (vote[1], vote[2]["losses"])


def test_weights_are_ones_and_the_scope_is_fixed():
  balancer = sign_dropout.GradDrop(TASKS, helpers.balancer_params("graddrop"), None)
  np.testing.assert_array_equal(balancer.weights().numpy(), [1.0, 1.0])
  assert balancer.fixed_flags["gradient_scope"][0] == "representation"

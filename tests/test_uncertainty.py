"""Validity tests for uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

With s_t = log σ_t² the paper's per-task terms are

  regression:      ½·exp(−s)·L + ½·s
  classification:  exp(−s)·L + ½·s

and the effective weight of L_t is the factor in front of it. Every expected
value below is computed here from these formulas, never with the package's own
helpers.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import BALANCERS
from mtl_research.balancers.base import Schedule
from mtl_research.config import OptimizerConfig
from mtl_research.train import components as components_lib
from mtl_research.train.evaluate import Evaluator

REG = tasks_lib.TaskSpec("depth", tasks_lib.REGRESSION)
CLS = tasks_lib.TaskSpec("label", tasks_lib.CLASSIFICATION, 3)

LOSSES = np.array([0.7, 1.3])
LOG_VAR = np.array([0.2, -0.5])


def make_uncertainty(tasks, **overrides):
  params = helpers.balancer_params("uncertainty", **overrides)
  return BALANCERS.get("uncertainty").component(tasks, params, Schedule(steps_per_epoch=10, total_steps=100))


def reference(losses, log_var, scales):
  """(objective, d objective / d s, d objective / d L = weights) from the paper's formulas."""
  weights = scales * np.exp(-log_var)
  objective = np.sum(weights * losses + 0.5 * log_var)
  grad_s = -weights * losses + 0.5
  return objective, grad_s, weights


@pytest.mark.parametrize(
  "form, scales",
  [
    ("by_kind", np.array([0.5, 1.0])),  # regression term for depth, classification term for label
    ("regression", np.array([0.5, 0.5])),  # --uncertainty_form=regression: ½ for every task
  ],
)
def test_objective_gradient_and_weights_match_paper(form, scales):
  balancer = make_uncertainty((REG, CLS), uncertainty_form=form)
  balancer.log_var.assign(LOG_VAR.astype(np.float32))
  losses = tf.constant(LOSSES, tf.float32)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(losses)
    objective = balancer.objective(losses)
  grad_s = tape.gradient(objective, balancer.log_var)
  grad_l = tape.gradient(objective, losses)

  want_obj, want_grad_s, want_weights = reference(LOSSES, LOG_VAR, scales)
  # Hand-checked values for the by_kind form:
  # ½·e^-0.2·0.7 + 0.1 + e^0.5·1.3 − 0.25 = 0.2865558 + 0.1 + 2.1433377 − 0.25.
  if form == "by_kind":
    assert want_obj == pytest.approx(2.2798934, abs=1e-6)
  np.testing.assert_allclose(objective.numpy(), want_obj, rtol=1e-6)
  np.testing.assert_allclose(grad_s.numpy(), want_grad_s, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(balancer.weights().numpy(), want_weights, rtol=1e-6)
  # The effective weight is exactly the factor multiplying L_t in the objective.
  np.testing.assert_allclose(grad_l.numpy(), want_weights, rtol=1e-6)
  assert [v.ref() for v in balancer.joint_variables] == [balancer.log_var.ref()]


def test_initial_log_var_param():
  balancer = make_uncertainty((REG, CLS), uncertainty_init_log_var=-1.25)
  np.testing.assert_allclose(balancer.log_var.numpy(), [-1.25, -1.25])
  np.testing.assert_allclose(balancer.weights().numpy(), [0.5 * np.exp(1.25), np.exp(1.25)], rtol=1e-6)


def _tiny_bundle(seed=0, rows=64):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(3 * rows, 5))
  labels = {
    REG.name: x[:, 0] - 0.5 * x[:, 1] + 0.3 * rng.normal(size=len(x)),
    CLS.name: rng.integers(0, 3, size=len(x)),
  }
  return helpers.make_bundle((REG, CLS), x, labels, (rows, rows, rows))


def test_log_var_trained_jointly_by_model_optimizer(tmp_path):
  """One SGD step moves s and the model along the gradient of the paper's objective."""
  bundle = _tiny_bundle()
  lr = 0.1
  config = helpers.make_config(
    tmp_path,
    "uncertainty",
    hidden_units=(8, 4),
    batch_size=16,
    train_steps=10,
    optimizer=OptimizerConfig(name="sgd", learning_rate=lr),
    uncertainty_init_log_var=0.3,
  )
  parts = components_lib.build(config, bundle)
  assert any(v is parts.balancer.log_var for v in parts.train_loop.trained_variables)

  indices = np.arange(3, 19, dtype=np.int32)
  features = {"numeric": tf.constant(bundle.train.features["numeric"][indices])}
  y_reg = tf.constant(bundle.train.labels[REG.name][indices])
  y_cls = tf.constant(bundle.train.labels[CLS.name][indices])
  s0 = parts.balancer.log_var.numpy().copy()
  variables = parts.model.trainable_variables
  before = [v.numpy().copy() for v in variables]
  with tf.GradientTape() as tape:
    out = parts.model(features, training=True)
    l_reg = tf.reduce_mean(tf.square(out[REG.name][:, 0] - y_reg))
    l_cls = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y_cls, logits=out[CLS.name]))
    s = tf.constant(s0)
    ref_objective = 0.5 * tf.exp(-s[0]) * l_reg + 0.5 * s[0] + tf.exp(-s[1]) * l_cls + 0.5 * s[1]
  ref_grads = tape.gradient(ref_objective, variables)
  ref_losses = np.array([l_reg.numpy(), l_cls.numpy()])

  logs = parts.train_loop.train_step(tf.constant(indices), tf.constant(False))

  np.testing.assert_allclose(logs["losses"].numpy(), ref_losses, rtol=1e-5)
  np.testing.assert_allclose(logs["objective"].numpy(), ref_objective.numpy(), rtol=1e-5)
  _, grad_s, weights = reference(ref_losses, s0, np.array([0.5, 1.0]))
  np.testing.assert_allclose(logs["weights"].numpy(), weights, rtol=1e-5)
  np.testing.assert_allclose(parts.balancer.log_var.numpy(), s0 - lr * grad_s, rtol=1e-5, atol=1e-6)
  assert not np.allclose(parts.balancer.log_var.numpy(), s0, atol=1e-3)
  for var, old, grad in zip(variables, before, ref_grads):
    np.testing.assert_allclose(var.numpy(), old - lr * grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=var.path)


# --- noise recovery -------------------------------------------------------------------------------------

NOISE_VAR = (0.01, 0.25, 4.0)
NUM_TRAIN = 8000


def _noisy_regression(seed):
  """Three regression tasks y_t = f_t(x) + N(0, σ_t²) with smooth f_t of 4 features."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(NUM_TRAIN + 2000, 4))
  clean = [np.sin(1.5 * x[:, 0]) + 0.5 * x[:, 1], 0.8 * x[:, 1] - 0.6 * x[:, 2], np.sin(x[:, 2]) + 0.5 * x[:, 3]]
  tasks = tuple(tasks_lib.TaskSpec(f"noise_{v:g}", tasks_lib.REGRESSION) for v in NOISE_VAR)
  labels = {t.name: f + np.sqrt(v) * rng.normal(size=len(x)) for t, f, v in zip(tasks, clean, NOISE_VAR)}
  return tasks, helpers.make_bundle(tasks, x, labels, (NUM_TRAIN, 1000, 1000))


def test_learned_variance_recovers_task_noise(tmp_path):
  """exp(s_t) converges to each task's residual variance, and to the true σ_t².

  s starts at 0 (σ² = 1) and must move to log 0.01 ≈ −4.6 and log 4 ≈ 1.4, so the
  run uses Adam at 5e-3 with a cosine decay (4000 steps, ~3 s on 2 cores). The
  train split is large (8000 rows) so the 64-64 trunk barely overfits and the
  residual variance on train stays close to the true noise.
  """
  seed = 0
  tasks, bundle = _noisy_regression(seed)
  steps = 4000
  config = helpers.make_config(
    tmp_path,
    "uncertainty",
    hidden_units=(64, 64),
    batch_size=64,
    train_steps=steps,
    seed=seed,
    optimizer=OptimizerConfig(learning_rate=5e-3, schedule="cosine"),
  )
  parts = components_lib.build(config, bundle)
  helpers.run_loop(parts, steps, chunk=500)

  learned = np.exp(parts.balancer.log_var.numpy())
  results = Evaluator(parts.model, 2048).evaluate(bundle.train)
  residual = np.array([results[t.name]["mse"] for t in tasks])
  true_var = np.array(NOISE_VAR)
  report = f"learned σ²={learned}, train residual variance={residual}, true σ²={true_var}"
  print(report)

  np.testing.assert_allclose(learned, residual, rtol=0.2, err_msg=report)
  # The model fits well (residual within 20% of the noise), so σ² recovers the true noise too.
  np.testing.assert_allclose(residual, true_var, rtol=0.2, err_msg=report)
  np.testing.assert_allclose(learned, true_var, rtol=0.2, err_msg=report)
  # Effective weights are ordered inversely to the noise: least noisy task weighted most.
  weights = parts.balancer.weights().numpy()
  np.testing.assert_allclose(weights, 0.5 / learned, rtol=1e-5)
  assert weights[0] > weights[1] > weights[2], weights
  assert list(np.argsort(-weights)) == list(np.argsort(true_var)), weights

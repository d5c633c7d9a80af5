"""Validity tests for GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018).

  G_t    = ‖∇_W (w_t·L_t)‖₂            W: kernel of the last shared layer
  L̃_t    = L_t / L_t(0),   r_t = L̃_t / mean(L̃)
  target = mean(G)·r_t^α               (held constant)
  L_grad = Σ_t |G_t − target_t|        differentiated w.r.t. w only, own Adam
  w      ← max(w, 1e-6), renormalized so Σ w = T
  model  follows Σ_t w_t·L_t with the pre-update w.

The reference below re-implements all of this in float64 with its own forward
pass of the shared-bottom network (from a copy of the initial weights), its own
losses and a hand-written Adam step; it never calls the package's GradNorm code.
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
from mtl_research.config import OptimizerConfig
from mtl_research.train import components as components_lib
from mtl_research.train.evaluate import Evaluator

ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-7  # Keras defaults
MIN_WEIGHT = 1e-6


# --- independent float64 reference ----------------------------------------------------------------------


class Reference:
  """Float64 GradNorm + SGD on a copy of a shared-bottom model's weights."""

  def __init__(self, model, tasks, num_layers, *, alpha, gradnorm_lr, model_lr, scope):
    self.tasks = tasks
    self.num_layers = num_layers
    self.alpha, self.gradnorm_lr, self.model_lr, self.scope = alpha, gradnorm_lr, model_lr, scope
    by_path = {v.path.split("/", 1)[1]: v.numpy().astype(np.float64) for v in model.variables}
    names = [f"shared_{i}/{p}" for i in range(num_layers) for p in ("kernel", "bias")]
    names += [f"head_{t.name}/{p}" for t in tasks for p in ("kernel", "bias")]
    assert sorted(names) == sorted(by_path), sorted(by_path)
    self.params = {name: by_path[name] for name in names}
    num = len(tasks)
    self.w = np.ones(num)
    self.m = np.zeros(num)
    self.v = np.zeros(num)
    self.iterations = 0
    self.initial = None

  def _losses(self, p, x, labels):
    h = tf.constant(x, tf.float64)
    for i in range(self.num_layers):
      h = tf.nn.relu(h @ p[f"shared_{i}/kernel"] + p[f"shared_{i}/bias"])
    losses = []
    for t in self.tasks:
      out = h @ p[f"head_{t.name}/kernel"] + p[f"head_{t.name}/bias"]
      y = labels[t.name]
      if t.kind == tasks_lib.REGRESSION:
        losses.append(tf.reduce_mean(tf.square(out[:, 0] - tf.constant(y, tf.float64))))
      else:
        logp = out - tf.reduce_logsumexp(out, axis=1, keepdims=True)
        losses.append(-tf.reduce_mean(tf.gather(logp, tf.constant(y), axis=1, batch_dims=1)))
    return losses

  def step(self, x, labels):
    """One training step; returns the quantities GradNorm logs."""
    p = {k: tf.Variable(v) for k, v in self.params.items()}
    if self.scope == "last_shared":
      scope = [p[f"shared_{self.num_layers - 1}/kernel"]]
    else:  # every trunk variable
      scope = [p[f"shared_{i}/{q}"] for i in range(self.num_layers) for q in ("kernel", "bias")]
    w_pre = self.w.copy()
    with tf.GradientTape(persistent=True) as tape:
      losses = self._losses(p, x, labels)
      total = tf.add_n([float(w) * loss for w, loss in zip(w_pre, losses)])
    norms = np.array([np.sqrt(sum(np.sum(g.numpy() ** 2) for g in tape.gradient(loss, scope))) for loss in losses])
    model_grads = tape.gradient(total, list(p.values()))
    losses = np.array([loss.numpy() for loss in losses])

    if self.initial is None:  # L_t(0): the losses of the first step
      self.initial = losses.copy()
    grad_norm = w_pre * norms  # G_t = ‖∇_W (w_t L_t)‖ = w_t ‖∇_W L_t‖
    ratio = losses / self.initial
    rel = ratio / ratio.mean()
    target = grad_norm.mean() * rel**self.alpha
    l_grad = np.abs(grad_norm - target).sum()
    grad_w = np.sign(grad_norm - target) * norms  # d/dw_t |w_t n_t − c_t| with c_t constant

    # Adam, Keras 3 form: var −= lr·√(1−β2^t)/(1−β1^t) · m/(√v + ε).
    self.iterations += 1
    t = self.iterations
    self.m = ADAM_B1 * self.m + (1 - ADAM_B1) * grad_w
    self.v = ADAM_B2 * self.v + (1 - ADAM_B2) * grad_w**2
    step_size = self.gradnorm_lr * np.sqrt(1 - ADAM_B2**t) / (1 - ADAM_B1**t)
    w = self.w - step_size * self.m / (np.sqrt(self.v) + ADAM_EPS)
    w = np.maximum(w, MIN_WEIGHT)
    self.w = w * len(w) / w.sum()

    # The model follows Σ w_t L_t with the pre-update w (plain SGD).
    self.params = {k: v - self.model_lr * g.numpy() for (k, v), g in zip(self.params.items(), model_grads)}
    # What the model would become if it (wrongly) followed the post-update w.
    with tf.GradientTape() as tape:
      post = tf.add_n([float(w) * loss for w, loss in zip(self.w, self._losses(p, x, labels))])
    params_post_w = {
      k: v.numpy() - self.model_lr * g.numpy() for (k, v), g in zip(p.items(), tape.gradient(post, list(p.values())))
    }
    return {
      "losses": losses,
      "grad_norm": grad_norm,
      "target": target,
      "loss_ratio": ratio,
      "l_grad": l_grad,
      "norms": norms,
      "w_pre": w_pre,
      "params_post_w": params_post_w,
    }


TASKS3 = (
  tasks_lib.TaskSpec("alpha", tasks_lib.REGRESSION),
  tasks_lib.TaskSpec("beta", tasks_lib.REGRESSION),
  tasks_lib.TaskSpec("gamma", tasks_lib.CLASSIFICATION, 3),
)


def _tiny_bundle(rows=64, seed=3):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(3 * rows, 5))
  labels = {
    "alpha": x[:, 0] + 0.5 * x[:, 1] ** 2 + 0.1 * rng.normal(size=len(x)),
    "beta": 4.0 * np.sin(x[:, 2]) - x[:, 3] + 1.0,
    "gamma": rng.integers(0, 3, size=len(x)),
  }
  return helpers.make_bundle(TASKS3, x, labels, (rows, rows, rows))


def _batch(bundle, indices):
  x = bundle.train.features["numeric"][indices].astype(np.float64)
  labels = {t.name: bundle.train.labels[t.name][indices] for t in TASKS3}
  return x, labels


@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("scope", ["last_shared", "shared"])
def test_two_steps_match_reference(tmp_path, scope, mode):
  """Steps 0 and 1 (different batches) match the float64 reference to 1e-5.

  eager: TrainLoop.train_loop called directly; compiled: the tf.function loop
  the trainer uses, one step per call, fed the same index batches.
  """
  bundle = _tiny_bundle()
  alpha, gradnorm_lr, model_lr = 1.5, 0.1, 0.1
  config = helpers.make_config(
    tmp_path,
    "gradnorm",
    hidden_units=(4, 3),
    batch_size=8,
    train_steps=10,
    optimizer=OptimizerConfig(name="sgd", learning_rate=model_lr),
    gradnorm_alpha=alpha,
    gradnorm_lr=gradnorm_lr,
    gradnorm_scope=scope,
  )
  parts = components_lib.build(config, bundle)
  ref = Reference(parts.model, TASKS3, 2, alpha=alpha, gradnorm_lr=gradnorm_lr, model_lr=model_lr, scope=scope)
  rng = np.random.default_rng(0)
  order = rng.permutation(len(bundle.train)).astype(np.int32)
  batches = [order[:8], order[8:16]]

  for k, indices in enumerate(batches):
    want = ref.step(*_batch(bundle, indices))
    if mode == "eager":
      logs = tf.nest.map_structure(lambda t: t.numpy(), parts.train_loop.train_step(tf.constant(indices)))
    else:
      logs = parts.train_loop.run(1, rows=indices[None])
    diag = logs["diagnostics"]
    tol = dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logs["losses"], want["losses"], **tol, err_msg=f"step {k} losses")
    np.testing.assert_allclose(logs["weights"], want["w_pre"], **tol, err_msg=f"step {k} weights")
    np.testing.assert_allclose(diag["gradnorm/grad_norm"], want["grad_norm"], **tol, err_msg=f"step {k} G_t")
    np.testing.assert_allclose(diag["gradnorm/loss_ratio"], want["loss_ratio"], **tol, err_msg=f"step {k} ratio")
    np.testing.assert_allclose(diag["gradnorm/target"], want["target"], **tol, err_msg=f"step {k} target")
    np.testing.assert_allclose(diag["gradnorm/l_grad"], want["l_grad"], **tol, err_msg=f"step {k} L_grad")
    np.testing.assert_allclose(parts.balancer.initial_losses.numpy(), ref.initial, **tol)
    np.testing.assert_allclose(parts.balancer.w.numpy(), ref.w, **tol, err_msg=f"step {k} w after update")
    assert parts.balancer.w.numpy().sum() == pytest.approx(3.0, abs=1e-5)
    for var in parts.model.variables:
      name = var.path.split("/", 1)[1]
      np.testing.assert_allclose(var.numpy(), ref.params[name], **tol, err_msg=f"step {k} model {name}")
    assert int(parts.global_step.numpy()) == k + 1

  # Step 1 is informative: the ratios are not all 1, w has moved, and following the
  # post-update w would have produced measurably different model weights.
  last = want
  assert not np.allclose(last["loss_ratio"], 1.0, atol=1e-2), "L(0) should differ from L at step 1"
  assert not np.allclose(last["w_pre"], 1.0, atol=1e-2), "w should have moved at step 0"
  assert np.ptp(last["target"]) > 1e-3 * np.abs(last["target"]).max()
  gap = max(np.abs(ref.params[k] - last["params_post_w"][k]).max() for k in ref.params)
  assert gap > 1e-4, f"pre- and post-update w give nearly the same model update ({gap})"


def test_scope_changes_gradient_norms(tmp_path):
  """--gradnorm_scope=shared measures G_t over every trunk variable, not just W."""
  bundle = _tiny_bundle()
  indices = np.arange(8, dtype=np.int32)
  norms = {}
  for scope in ("last_shared", "shared"):
    config = helpers.make_config(
      tmp_path / scope,
      "gradnorm",
      hidden_units=(4, 3),
      batch_size=8,
      train_steps=10,
      optimizer=OptimizerConfig(name="sgd", learning_rate=0.1),
      gradnorm_scope=scope,
    )
    parts = components_lib.build(config, bundle)
    ref_last = Reference(parts.model, TASKS3, 2, alpha=1.5, gradnorm_lr=0.025, model_lr=0.1, scope="last_shared")
    ref_all = Reference(parts.model, TASKS3, 2, alpha=1.5, gradnorm_lr=0.025, model_lr=0.1, scope="shared")
    batch = _batch(bundle, indices)
    want_last, want_all = ref_last.step(*batch), ref_all.step(*batch)
    assert np.all(want_all["norms"] > want_last["norms"] * (1 + 1e-3)), "trunk has more than W"
    logs = parts.train_loop.train_step(tf.constant(indices))
    norms[scope] = logs["diagnostics"]["gradnorm/grad_norm"].numpy()
    want = want_last if scope == "last_shared" else want_all
    np.testing.assert_allclose(norms[scope], want["grad_norm"], rtol=1e-5, atol=1e-6, err_msg=scope)


# --- the paper's toy regression (Chen et al. 2018, §4) ----------------------------------------------------

TOY_SIGMAS = (1.0, 100.0)  # the paper's T=2 scales; the targets are NOT divided by σ_t
TOY_DIM = 25  # the paper: 250 inputs
TOY_TRAIN = 4000
TOY_STEPS = 2000
TOY_BATCH = 64


def _toy_bundle(seed):
  """f_t(x) = σ_t·tanh((b + ε_t)·x), the paper's toy at reduced size.

  As in the paper, b (shared) and ε_t (task-specific) have IID N(0, 10²) and
  N(0, 3.5²) elements and x is drawn uniformly from [−1, 1]^D and scaled to unit
  norm (as in the widely used PyTorch replication). Reduced for CI: D = 25 inputs
  instead of 250 and one scalar output per task instead of 100 (the package's
  regression heads are scalar), so b and ε_t are vectors. The model is the
  package's shared-bottom with a 4×32 ReLU trunk (the paper: 4×100), trained with
  Adam(1e-3) for 2000 steps of 64 rows.
  """
  rng = np.random.default_rng(seed)
  total = TOY_TRAIN + 2000
  x = rng.uniform(-1.0, 1.0, size=(total, TOY_DIM))
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  b = rng.normal(scale=10.0, size=TOY_DIM)
  tasks = tuple(tasks_lib.TaskSpec(f"sigma_{s:g}", tasks_lib.REGRESSION) for s in TOY_SIGMAS)
  labels = {t.name: s * np.tanh(x @ (b + rng.normal(scale=3.5, size=TOY_DIM))) for t, s in zip(tasks, TOY_SIGMAS)}
  return tasks, helpers.make_bundle(tasks, x, labels, (TOY_TRAIN, 1000, 1000))


def _grad_norms_at_w(model, tasks):
  """A traced function: ([B, D] features, [T, B] labels) → [T] ‖∇_W L_t‖ (W: last shared kernel)."""

  @tf.function
  def norms(features, labels):
    with tf.GradientTape(persistent=True) as tape:
      out = model({"numeric": features}, training=True)
      losses = [tf.reduce_mean(tf.square(out[t.name][:, 0] - labels[i])) for i, t in enumerate(tasks)]
    return tf.stack([tf.norm(tape.gradient(loss, model.last_shared_kernel)) for loss in losses])

  return norms


def _weighted_grad_norms(parts, bundle, tasks, norms_fn, num_batches=20):
  """Mean over `num_batches` random train batches of w_t·‖∇_W L_t‖ (W: last shared kernel)."""
  w = parts.balancer.weights().numpy()
  rng = np.random.default_rng(123)
  norms = []
  for _ in range(num_batches):
    rows = rng.choice(len(bundle.train), TOY_BATCH, replace=False)
    features = tf.constant(bundle.train.features["numeric"][rows], tf.float32)
    labels = tf.constant(np.stack([bundle.train.labels[t.name][rows] for t in tasks]), tf.float32)
    norms.append(norms_fn(features, labels).numpy())
  return w * np.mean(norms, axis=0)


def _run_toy(tmp_path, balancer, seed, tasks, bundle, **overrides):
  config = helpers.make_config(
    tmp_path / balancer,
    balancer,
    hidden_units=(32, 32, 32, 32),
    batch_size=TOY_BATCH,
    train_steps=TOY_STEPS,
    seed=seed,
    optimizer=OptimizerConfig(learning_rate=1e-3),
    **overrides,
  )
  parts = components_lib.build(config, bundle)
  norms_fn = _grad_norms_at_w(parts.model, tasks)
  history, norms = [], []
  for _ in range(10):
    helpers.run_loop(parts, TOY_STEPS // 10)
    history.append(parts.balancer.weights().numpy())
    norms.append(_weighted_grad_norms(parts, bundle, tasks, norms_fn))
  results = Evaluator(parts.model, 2048).evaluate(bundle.test)
  mse = np.array([results[t.name]["mse"] for t in tasks])
  return {
    "w": history[-1],
    "w_history": np.array(history),
    "G_history": np.array(norms),
    "normalized_mse": mse / np.square(TOY_SIGMAS),
    "mse": mse,
  }


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])  # seeds 2 and 3 pass too (checked by hand)
def test_paper_toy_balances_scales(tmp_path, seed):
  """GradNorm (α = 0.12, the paper's toy value) vs equal weights, same seed and budget.

  * the small-scale task gets a much larger weight: w_1/w_100 > 10 at the end;
  * the weighted per-batch gradient norms w_t·‖∇_W L_t‖ (W: last shared kernel)
    are closer to each other: their max/min ("spread"), measured every 10% of
    training on 20 random train batches, has a median ≥ 4× smaller than under
    equal weights, and at the end of training (mean norms over the last 20% of
    the run) ≥ 2× smaller. The end-of-training gap is inherently limited: GradNorm
    targets mean(G)·r_t^α, not equal norms, and as equal-weight training nears a
    stationary point of L_1 + L_2 its per-task gradients at W approach cancelling,
    i.e. equal norms (its spread falls from ~100 at the start to ~7–26 at the end);
  * the test MSE normalized by σ_t², averaged over tasks, is no worse, and the
    small-scale task (the one equal weights starve) does strictly better.
  """
  tasks, bundle = _toy_bundle(seed)
  fixed = _run_toy(tmp_path, "fixed", seed, tasks, bundle)
  gradnorm = _run_toy(tmp_path, "gradnorm", seed, tasks, bundle, gradnorm_alpha=0.12)

  def spread(g):
    return g.max() / g.min()

  def end_spread(run):
    return spread(run["G_history"][-3:].mean(axis=0))

  def median_spread(run):
    return np.median([spread(g) for g in run["G_history"]])

  w_ratio = gradnorm["w_history"][:, 0] / gradnorm["w_history"][:, 1]
  report = (
    f"seed {seed}: gradnorm w={gradnorm['w']}, w_1/w_100 every 10%: {np.array2string(w_ratio, precision=3)}; "
    f"spread of w_t·G_t every 10%: fixed {[float(f'{spread(g):.3g}') for g in fixed['G_history']]}, "
    f"gradnorm {[float(f'{spread(g):.3g}') for g in gradnorm['G_history']]}; "
    f"end spread fixed {end_spread(fixed):.3g} gradnorm {end_spread(gradnorm):.3g}; "
    f"normalized test MSE fixed={fixed['normalized_mse']} (mean {fixed['normalized_mse'].mean():.4g}) "
    f"gradnorm={gradnorm['normalized_mse']} (mean {gradnorm['normalized_mse'].mean():.4g})"
  )
  print(report)
  np.testing.assert_allclose(fixed["w"], [1.0, 1.0])
  assert gradnorm["w"].sum() == pytest.approx(2.0, rel=1e-5)
  assert gradnorm["w"][0] / gradnorm["w"][1] > 10, report
  assert median_spread(gradnorm) * 4 < median_spread(fixed), report
  assert end_spread(gradnorm) * 2 < end_spread(fixed), report
  assert gradnorm["normalized_mse"].mean() <= fixed["normalized_mse"].mean(), report
  assert gradnorm["normalized_mse"][0] < fixed["normalized_mse"][0], report

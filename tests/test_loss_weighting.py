"""The loss-weighting family (DWA, RLW, FAMO, STCH, IMTL-L, GLS, scale-invariant): each method's objective
and weights against float64 NumPy references written from the papers (module docstrings cite them) and
hand-computed values, over fixed sequences of losses; the defining properties (STCH's limits in μ, GLS's
1/L weights, FAMO's weights summing to 1); RLW's draws against their distributions. Training behaviour
is in test_loss_weighting_training.py, exact resume in test_balancer_resume.py."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.balancers import BALANCERS, random_weighting
from mtl_research.balancers.base import Schedule, StepStats
from mtl_research.errors import UserError
from mtl_research.params import Param

EPS = 1e-8


def _tasks(num_tasks: int) -> tuple[tasks_lib.TaskSpec, ...]:
  return tuple(tasks_lib.TaskSpec(f"t{i}", tasks_lib.REGRESSION) for i in range(num_tasks))


def make(name: str, num_tasks: int = 2, steps_per_epoch: int = 2, **overrides):
  params = helpers.balancer_params(name, **overrides)
  return BALANCERS.get(name).component(_tasks(num_tasks), params, Schedule(steps_per_epoch, 1000))


def seed_of(step: int) -> tf.Tensor:
  return tf.constant([17, step], tf.int64)


def run_step(balancer, step: int, losses, after=None) -> tuple[float, np.ndarray, np.ndarray]:
  """One step as the train step drives a balancer: begin_step, objective, update.

  Returns (objective, the reported weights, ∂objective/∂L by autodiff of the whole objective call).
  """
  losses = tf.constant(losses, tf.float32)
  balancer.begin_step(tf.constant(step, tf.int64), seed_of(step))
  with tf.GradientTape() as tape:
    tape.watch(losses)
    objective = balancer.objective(losses)
  gradient = tape.gradient(objective, losses).numpy()
  weights = balancer.weights().numpy()
  stats = StepStats(
    losses,
    None,
    (),
    tf.constant(step, tf.int64),
    seed=seed_of(step),
    losses_after=None if after is None else tf.constant(after, tf.float32),
  )
  balancer.update(stats)
  return float(objective), weights, gradient


# --- DWA ----------------------------------------------------------------------------------------


def ref_dwa(loss_sequence: np.ndarray, steps_per_epoch: int, temperature: float) -> np.ndarray:
  """Weights per step: λ(e) = T·softmax((L̄(e−1)/L̄(e−2))/τ) from epoch means; 1 for epochs 0 and 1."""
  num_tasks = loss_sequence.shape[1]
  means = [
    loss_sequence[e * steps_per_epoch : (e + 1) * steps_per_epoch].mean(axis=0)
    for e in range(len(loss_sequence) // steps_per_epoch)
  ]
  out = []
  for step in range(len(loss_sequence)):
    epoch = step // steps_per_epoch
    if epoch < 2:
      out.append(np.ones(num_tasks))
      continue
    r = means[epoch - 1] / means[epoch - 2]
    e = np.exp(r / temperature - np.max(r / temperature))
    out.append(num_tasks * e / e.sum())
  return np.array(out)


def test_dwa_over_three_epochs_by_hand():
  """Epoch means [2, 4] then [1, 4]: r = [0.5, 1], λ = 2·softmax([0.25, 0.5]) = [0.87565, 1.12435] in epoch 2."""
  balancer = make("dwa", steps_per_epoch=2)
  steps = [[1.5, 3.0], [2.5, 5.0], [1.0, 4.5], [1.0, 3.5], [7.0, 7.0], [9.0, 1.0]]
  seen = [run_step(balancer, step, losses)[1] for step, losses in enumerate(steps)]
  np.testing.assert_allclose(seen[:4], np.ones((4, 2)), rtol=0)
  np.testing.assert_allclose(seen[4], [0.87565, 1.12435], atol=2e-5)
  np.testing.assert_allclose(seen[5], seen[4], rtol=0)  # fixed within an epoch
  np.testing.assert_allclose(balancer.summaries()["dwa/loss_ratio"].numpy(), [0.5, 1.0], rtol=1e-6)


@pytest.mark.parametrize("num_tasks, temperature", [(2, 2.0), (3, 0.5), (5, 10.0)])
def test_dwa_matches_the_reference_over_many_epochs(num_tasks, temperature):
  rng = np.random.default_rng(num_tasks)
  steps_per_epoch = 3
  sequence = rng.uniform(0.1, 5.0, size=(6 * steps_per_epoch, num_tasks))
  balancer = make("dwa", num_tasks, steps_per_epoch, dwa_temperature=temperature)
  got = [run_step(balancer, step, losses) for step, losses in enumerate(sequence)]
  want = ref_dwa(sequence.astype(np.float64), steps_per_epoch, temperature)
  for step, (objective, weights, gradient) in enumerate(got):
    np.testing.assert_allclose(weights, want[step], rtol=1e-5, err_msg=f"step {step}")
    np.testing.assert_allclose(gradient, want[step], rtol=1e-5)  # Σ λ·L: the gradient is λ
    assert objective == pytest.approx(float(want[step] @ sequence[step]), rel=1e-5)
    assert weights.sum() == pytest.approx(num_tasks, rel=1e-5)


# --- FAMO ---------------------------------------------------------------------------------------


def ref_famo(before: np.ndarray, after: np.ndarray, beta: float, gamma: float, optimizer: str, min_losses=0.0):
  """Per step (the weights z_t/(c·ℓ_t), the logits after the step), from Algorithm 1; Adam in Keras's form."""
  num_tasks = before.shape[1]
  xi = np.zeros(num_tasks)
  m = np.zeros(num_tasks)
  v = np.zeros(num_tasks)
  out = []
  for k, (l0, l1) in enumerate(zip(before, after), start=1):
    z = np.exp(xi - xi.max())
    z /= z.sum()
    shifted0 = np.maximum(l0 - min_losses, 0) + EPS
    shifted1 = np.maximum(l1 - min_losses, 0) + EPS
    c = 1.0 / np.sum(z / shifted0)
    weights = c * z / shifted0
    delta = np.log(shifted0) - np.log(shifted1)
    grad = z * delta - z * (z @ delta) + gamma * xi  # ∇_ξ zᵀδ = (diag z − z zᵀ) δ
    if optimizer == "sgd":
      xi = xi - beta * grad
    else:
      m = 0.9 * m + 0.1 * grad
      v = 0.999 * v + 0.001 * grad**2
      alpha = beta * np.sqrt(1 - 0.999**k) / (1 - 0.9**k)
      xi = xi - alpha * m / (np.sqrt(v) + 1e-8)
    out.append((weights, xi.copy()))
  return out


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_famo_logits_follow_the_reference_over_ten_steps(optimizer, num_tasks):
  rng = np.random.default_rng(num_tasks + 7)
  before = rng.uniform(0.2, 3.0, size=(10, num_tasks))
  before[:, -1] *= 100.0  # one task on another scale
  after = before * rng.uniform(0.5, 1.1, size=before.shape)
  balancer = make("famo", num_tasks, famo_xi_optimizer=optimizer, famo_gamma=0.01, famo_learning_rate=0.5)
  want = ref_famo(before, after, 0.5, 0.01, optimizer)
  for step in range(10):
    _, weights, gradient = run_step(balancer, step, before[step], after[step])
    # The weights sum to 1: 1e-6 absolute is 1e-5 of the largest (float32 Adam steps on a 100x-scaled task).
    np.testing.assert_allclose(weights, want[step][0], rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
    np.testing.assert_allclose(gradient, want[step][0], rtol=1e-5, atol=1e-6)
    assert weights.sum() == pytest.approx(1.0, rel=1e-5)  # Σ z_t/(c·ℓ_t) = 1
    # 1e-5 of the largest logit (Adam divides by √v, so float32 rounding of a small δ shows in the smaller
    # ones), and at least 1e-6: δ is a difference of float32 logs of losses up to 300 (each rounded to ~3e-7).
    scale = float(np.max(np.abs(want[step][1])))
    np.testing.assert_allclose(balancer.logits.numpy(), want[step][1], rtol=1e-5, atol=max(1e-5 * scale, 1e-6))


def test_famo_one_update_by_hand():
  """ξ = 0, two tasks, δ = [log 2, 0] (the first loss halved): z = ½, ∇ = z⊙δ − z·zᵀδ = [¼ log 2, −¼ log 2];
  one plain step of 0.1 gives ξ = [−0.0173287, 0.0173287]: the task that improved loses weight."""
  balancer = make("famo", famo_xi_optimizer="sgd", famo_learning_rate=0.1, famo_gamma=0.0)
  run_step(balancer, 0, [2.0, 1.0], [1.0, 1.0])
  np.testing.assert_allclose(balancer.logits.numpy(), [-0.0173287, 0.0173287], rtol=1e-5)


def test_famo_min_losses_shift_the_logs_and_name_tasks():
  balancer = make("famo", famo_min_losses={"t0": 0.5})
  _, weights, _ = run_step(balancer, 0, [1.5, 1.0], [1.5, 1.0])
  # z = ½ each; ℓ = [1, 1]: equal weights ½.
  np.testing.assert_allclose(weights, [0.5, 0.5], rtol=1e-6)
  with pytest.raises(UserError, match="famo_min_losses"):
    make("famo", famo_min_losses={"nope": 0.5})


# --- STCH ---------------------------------------------------------------------------------------


def ref_stch_weights(losses: np.ndarray, nadir: np.ndarray, mu: float, log: bool) -> tuple[float, np.ndarray]:
  """(T·μ·log Σ exp(f/μ), its gradient in L) with f = log(L/n + ε) or L/n."""
  num_tasks = len(losses)
  f = np.log(losses / nadir + EPS) if log else losses / nadir
  top = f.max()
  value = num_tasks * (mu * np.log(np.sum(np.exp((f - top) / mu))) + top)
  soft = np.exp((f - top) / mu)
  soft /= soft.sum()
  df_dl = 1.0 / (losses / nadir + EPS) / nadir if log else 1.0 / nadir
  return value, num_tasks * soft * df_dl


@pytest.mark.parametrize("objectives", ["log", "linear"])
def test_stch_warms_up_measures_the_nadir_then_smooths(objectives):
  """steps_per_epoch 2, two warm-up epochs: steps 0-3 train on Σ log L, steps 2-3 measure the nadir, STCH after."""
  balancer = make("stch", 3, 2, stch_warmup_epochs=2, stch_mu=0.5, stch_objectives=objectives)
  rng = np.random.default_rng(3)
  sequence = rng.uniform(0.5, 4.0, size=(7, 3))
  nadir = sequence[2:4].mean(axis=0)
  for step, losses in enumerate(sequence):
    objective, weights, gradient = run_step(balancer, step, losses)
    if step < 4:
      assert objective == pytest.approx(np.sum(np.log(losses + EPS)), rel=1e-5)
      np.testing.assert_allclose(weights, 1.0 / (losses + EPS), rtol=1e-5)
    else:
      value, want = ref_stch_weights(losses, nadir, 0.5, objectives == "log")
      assert objective == pytest.approx(value, rel=1e-5, abs=1e-5)
      np.testing.assert_allclose(weights, want, rtol=1e-5)
    np.testing.assert_allclose(gradient, weights, rtol=1e-6)
  np.testing.assert_allclose(balancer.summaries()["stch/nadir"].numpy(), nadir, rtol=1e-6)


def test_stch_tends_to_the_maximum_as_mu_falls_and_to_equal_weights_as_it_grows():
  losses = np.array([0.5, 2.0, 1.2])
  f = np.log(losses + EPS)
  gaps = []
  for mu in (1.0, 0.1, 0.01, 0.001):
    balancer = make("stch", 3, stch_warmup_epochs=0, stch_mu=mu)
    objective, weights, _ = run_step(balancer, 0, losses)
    gap = objective / 3 - f.max()
    assert -1e-5 <= gap <= mu * np.log(3) + 1e-5  # max ≤ μ·log Σ exp(f/μ) ≤ max + μ·log T
    gaps.append(gap)
    share = weights * losses / 3  # the softmax over tasks, T·softmax / L undone
    if mu <= 0.01:
      assert share[1] > 0.999  # all weight on the worst task
  assert gaps == sorted(gaps, reverse=True)
  balancer = make("stch", 3, stch_warmup_epochs=0, stch_mu=1e4)
  _, weights, _ = run_step(balancer, 0, losses)
  np.testing.assert_allclose(weights * losses, np.ones(3), rtol=1e-3)  # softmax → 1/T: Σ log L's weights


# --- GLS and the scale-invariant log losses --------------------------------------------------------


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_gls_is_the_geometric_mean_and_its_gradient_weights_are_inverse_losses(num_tasks):
  rng = np.random.default_rng(num_tasks)
  losses = rng.uniform(0.01, 50.0, size=num_tasks)
  balancer = make("gls", num_tasks)
  # The gradient through a model: L_t(θ) = ‖A_t θ − b_t‖², so ∇_θ GLS must be Σ_t w_t ∇_θ L_t with w ∝ 1/L_t.
  a = tf.constant(rng.normal(size=(num_tasks, 4, 3)), tf.float32)
  b = tf.constant(rng.normal(size=(num_tasks, 4)), tf.float32)
  theta = tf.Variable(rng.normal(size=3), dtype=tf.float32)
  with tf.GradientTape(persistent=True) as tape:
    task_losses = tf.stack([tf.reduce_sum((tf.linalg.matvec(a[t], theta) - b[t]) ** 2) for t in range(num_tasks)])
    objective = balancer.objective(task_losses)
    singles = [task_losses[t] for t in range(num_tasks)]
  at = task_losses.numpy().astype(np.float64)
  geometric = np.exp(np.mean(np.log(at + EPS)))
  assert float(objective) == pytest.approx(geometric, rel=1e-5)
  want_weights = geometric / (num_tasks * (at + EPS))
  np.testing.assert_allclose(balancer.weights().numpy(), want_weights, rtol=1e-5)
  per_task = np.stack([tape.gradient(single, theta).numpy() for single in singles])
  np.testing.assert_allclose(tape.gradient(objective, theta).numpy(), want_weights @ per_task, rtol=1e-4, atol=1e-6)
  # And on plain losses: (Π L)^{1/T}, weights ∝ 1/L.
  _, weights, _ = run_step(make("gls", num_tasks), 0, losses)
  np.testing.assert_allclose(
    weights * losses, np.full(num_tasks, np.prod(losses) ** (1 / num_tasks) / num_tasks), rtol=1e-4
  )


def test_log_losses_ignore_each_losses_scale():
  losses = np.array([0.3, 40.0, 2.0])
  objective, weights, _ = run_step(make("scale_invariant", 3), 0, losses)
  assert objective == pytest.approx(np.sum(np.log(losses + EPS)), rel=1e-6)
  np.testing.assert_allclose(weights, 1.0 / (losses + EPS), rtol=1e-6)
  scaled = losses * np.array([1.0, 100.0, 0.01])
  objective_scaled, weights_scaled, _ = run_step(make("scale_invariant", 3), 0, scaled)
  # Rescaling adds the constant Σ log c and leaves every task's weighted gradient w_t·∇L_t unchanged.
  assert objective_scaled - objective == pytest.approx(np.log(100.0) + np.log(0.01), abs=1e-4)
  np.testing.assert_allclose(weights_scaled * scaled, weights * losses, rtol=1e-5)


# --- IMTL-L -------------------------------------------------------------------------------------


def test_imtl_l_objective_gradients_and_optimum():
  balancer = make("imtl_l", 3)
  s = np.array([0.3, -1.0, 0.0])
  balancer.scale.assign(s.astype(np.float32))
  losses = np.array([2.0, 0.5, 7.0])
  objective, weights, gradient = run_step(balancer, 0, losses)
  assert objective == pytest.approx(np.sum(np.exp(s) * losses - s), rel=1e-6)
  np.testing.assert_allclose(weights, np.exp(s), rtol=1e-6)
  np.testing.assert_allclose(gradient, np.exp(s), rtol=1e-6)
  assert balancer.joint_variables == [balancer.scale]
  # ∂/∂s_t = e^{s_t}·L_t − 1: zero exactly where every scaled loss is 1.
  optimum = -np.log(losses)
  balancer.scale.assign(optimum.astype(np.float32))
  with tf.GradientTape() as tape:
    value = balancer.objective(tf.constant(losses, tf.float32))
  np.testing.assert_allclose(tape.gradient(value, balancer.scale).numpy(), np.zeros(3), atol=1e-6)


# --- RLW ----------------------------------------------------------------------------------------

DRAWS = 10_000


def _draws(distribution: str, num_tasks: int) -> np.ndarray:
  """[DRAWS, T] weights of steps 0 .. DRAWS − 1, drawn as the step draws them (one seed per step)."""

  @tf.function(autograph=False)
  def draw(steps):
    return tf.map_fn(
      lambda step: random_weighting.draw_weights(tf.stack([tf.constant(17, tf.int64), step]), num_tasks, distribution),
      steps,
      fn_output_signature=tf.float32,
    )

  return draw(tf.range(DRAWS, dtype=tf.int64)).numpy().astype(np.float64)


def _reference_draws(distribution: str, num_tasks: int, n: int = 400_000) -> np.ndarray:
  """The distribution's weights drawn by NumPy, an independent generator."""
  rng = np.random.default_rng(123)
  if distribution == "dirichlet":
    return rng.dirichlet(np.ones(num_tasks), size=n)
  raw = rng.normal(size=(n, num_tasks)) if distribution == "normal" else rng.uniform(size=(n, num_tasks))
  e = np.exp(raw - raw.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("distribution", random_weighting.DISTRIBUTIONS)
def test_rlw_draws_follow_their_distribution(distribution):
  """Over 10,000 steps each weight's mean and standard deviation match the distribution's, and the first
  weight's empirical CDF stays within the Kolmogorov–Smirnov bound of the reference.

  Tolerances: the standard error of a mean over n = 10,000 draws is sd/100; 5 standard errors (a chance of
  about 6e-7 per check for a correct sampler) is sd/20. For the sd the standard error is about sd/√(2n)
  (sd/141), so 5 of them is sd/28. The KS bound 1.95/√n is the 0.1% critical value (the reference's own
  400,000 draws add at most 0.3% of it). A sampler drawing the wrong distribution (softmax of N(0, 4),
  or of U(0, 2)) fails each of these checks by several times its tolerance.
  """
  num_tasks = 3
  got = _draws(distribution, num_tasks)
  want = _reference_draws(distribution, num_tasks)
  np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
  assert np.all(got > 0)
  sd = want.std(axis=0)
  np.testing.assert_allclose(got.mean(axis=0), want.mean(axis=0), atol=float(sd.max()) / 20)
  np.testing.assert_allclose(got.std(axis=0), sd, atol=float(sd.max()) / 28)
  grid = np.quantile(want[:, 0], np.linspace(0.01, 0.99, 99))
  ks = np.max(np.abs(np.mean(got[:, :1] <= grid, axis=0) - np.mean(want[:, :1] <= grid, axis=0)))
  assert ks < 1.95 / np.sqrt(DRAWS), ks
  if distribution == "dirichlet":  # and analytically: the marginal of Dir(1, 1, 1) is Beta(1, 2), variance 1/18
    assert got[:, 0].var() == pytest.approx(1 / 18, rel=0.05)
  # Consecutive steps are independent draws.
  assert abs(np.corrcoef(got[:-1, 0], got[1:, 0])[0, 1]) < 5 / np.sqrt(DRAWS)


def test_rlw_weights_come_from_the_step_seed_and_scale_to_their_sum():
  one = make("rlw", 3, rlw_sum=3.0)
  other = make("rlw", 3, rlw_sum=3.0)
  first = run_step(one, 5, [1.0, 2.0, 3.0])[1]
  assert first.sum() == pytest.approx(3.0, rel=1e-5)
  np.testing.assert_array_equal(run_step(other, 5, [9.0, 9.0, 9.0])[1], first)  # the same step draws the same
  assert not np.allclose(run_step(other, 6, [1.0, 2.0, 3.0])[1], first)  # the next step draws anew
  np.testing.assert_allclose(first, 3.0 * random_weighting.draw_weights(seed_of(5), 3, "normal").numpy(), rtol=1e-6)


# --- flags --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name, flag, value, message",
  [
    ("dwa", "dwa_temperature", "0", "must be above 0"),
    ("dwa", "dwa_temperature", "-2", "must be above 0"),
    ("stch", "stch_mu", "0", "must be above 0"),
    ("stch", "stch_warmup_epochs", "-1", "below its minimum"),
    ("rlw", "rlw_sum", "0", "must be above 0"),
    ("famo", "famo_learning_rate", "0", "must be above 0"),
    ("famo", "famo_gamma", "-0.1", "below its minimum"),
  ],
)
def test_bad_values_are_refused_naming_the_flag(name, flag, value, message):
  param: Param = next(p for p in BALANCERS.get(name).params if p.name == flag)
  with pytest.raises(UserError, match=f"--{flag} value .* {message}"):
    param.parse(float(value) if param.kind == "float" else int(value))

"""What the loss-weighting papers claim, measured through the real train loop.

On GradNorm's toy regression (scales 1 and 100, raw targets) the scale-invariant methods (FAMO, IMTL-L,
GLS, the log losses, and STCH, which works on log losses) reach a lower scale-normalized test MSE than
`fixed`, whose update the ×100 task dominates; FAMO's per-task log-loss decrease rates end closer together
than `fixed`'s. DWA and RLW are not scale-invariant: their figures are printed, nothing is asserted of
them there. DWA up-weights a task whose loss has stopped falling, on a problem built so that one has.
"""

from __future__ import annotations

import numpy as np
import pytest

try:
  from tests import balancer_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import balancer_helpers as helpers

from mtl_research import tasks as tasks_lib
from mtl_research.config import OptimizerConfig
from mtl_research.data import gradnorm_toy
from mtl_research.data.registry import DATASETS
from mtl_research.train import components as components_lib
from mtl_research.train.evaluate import Evaluator

SIGMAS = (1.0, 100.0)
STEPS = 3000
SCALE_INVARIANT = ("famo", "imtl_l", "gls", "scale_invariant", "stch")
REPORTED_ONLY = ("dwa", "rlw")


def _toy_bundle():
  params = {p.name: p.parse(p.default) for p in DATASETS.get("gradnorm_toy").params}
  params.update(num_train=2000, num_val=200, num_test=1000)  # σ = (1, 100), input dimension 250: the paper's
  return gradnorm_toy.load(params, 0)


@pytest.fixture(name="toy_runs", scope="module")
def fixture_toy_runs(tmp_path_factory):
  """Per balancer: (scale-normalized test MSE per task, log-loss decrease per task over the run)."""
  bundle = _toy_bundle()
  results = {}
  for name in ("fixed", *SCALE_INVARIANT, *REPORTED_ONLY):
    config = helpers.make_config(
      tmp_path_factory.mktemp(name),
      name,
      hidden_units=(32, 16),
      batch_size=32,
      train_steps=STEPS,
      optimizer=OptimizerConfig(learning_rate=1e-2),
    )
    parts = components_lib.build(config, bundle)
    first = helpers.run_loop(parts, 20)["mean_losses"]
    last = helpers.run_loop(parts, STEPS - 20, chunk=1000)["mean_losses"]
    metrics = Evaluator(parts.model, 1000).evaluate(bundle.test)
    normalized = np.array([metrics[f"t{t}"]["mse"] / sigma**2 for t, sigma in enumerate(SIGMAS)])
    results[name] = (normalized, np.log(first) - np.log(last))
  return results


def test_scale_invariant_methods_beat_fixed_on_scale_normalized_mse(toy_runs):
  """Measured (seed 0): fixed 0.144; famo 0.018, imtl_l 0.041, gls 0.020, scale_invariant 0.011, stch 0.015
  (dwa 0.114, rlw 0.109, not asserted). Each scale-invariant method must be below half of fixed's."""
  for name in (*SCALE_INVARIANT, *REPORTED_ONLY):
    print(f"{name}: scale-normalized test MSE {toy_runs[name][0].mean():.4f} (fixed {toy_runs['fixed'][0].mean():.4f})")
  fixed = toy_runs["fixed"][0].mean()
  for name in SCALE_INVARIANT:
    assert toy_runs[name][0].mean() < 0.5 * fixed, (name, toy_runs[name][0], toy_runs["fixed"][0])
  # Under fixed the small task is the one left behind, which is what these methods repair.
  assert toy_runs["fixed"][0][0] > 5 * toy_runs["fixed"][0][1]


def test_famo_balances_the_log_loss_decrease(toy_runs):
  """Measured: fixed decreases log L by 1.65 and 4.06, FAMO by 3.43 and 3.00."""
  famo, fixed = toy_runs["famo"][1], toy_runs["fixed"][1]
  assert np.all(famo > 0)
  assert abs(famo[0] - famo[1]) < 0.5 * abs(fixed[0] - fixed[1]), (famo, fixed)


TASKS = (tasks_lib.TaskSpec("learning", tasks_lib.REGRESSION), tasks_lib.TaskSpec("floor", tasks_lib.REGRESSION))
STEPS_PER_EPOCH = 20  # 640 training rows, batch 32


def test_dwa_upweights_the_task_whose_loss_stopped_falling(tmp_path):
  """'learning' keeps improving for the whole run; 'floor' (pure noise) sits at its floor from the start, its
  epoch ratio L̄(e−1)/L̄(e−2) near 1. From epoch 2 on DWA gives 'floor' more weight than 'learning', and each
  epoch's weights are T·softmax(r/2) of the epoch means that the loop itself reported."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1000, 6))
  labels = {"learning": np.sin(2 * x[:, 0]) * x[:, 1] + x[:, 2] * x[:, 3], "floor": rng.normal(size=1000)}
  bundle = helpers.make_bundle(TASKS, x, labels, (640, 180, 180))
  config = helpers.make_config(tmp_path / "run", "dwa", hidden_units=(32, 16), batch_size=32, train_steps=240)
  parts = components_lib.build(config, bundle)
  means, weights = [], []
  for _ in range(12):
    logs = helpers.run_loop(parts, STEPS_PER_EPOCH)  # one loop call per epoch: its mean_losses are the epoch's
    means.append(np.asarray(logs["mean_losses"], np.float64))
    weights.append(np.asarray(logs["weights"], np.float64))
  for epoch in range(12):
    if epoch < 2:
      np.testing.assert_array_equal(weights[epoch], [1.0, 1.0])
      continue
    ratio = means[epoch - 1] / means[epoch - 2]
    expected = 2 * np.exp(ratio / 2) / np.sum(np.exp(ratio / 2))
    np.testing.assert_allclose(weights[epoch], expected, rtol=1e-5)
    assert weights[epoch][1] > 1.0 > weights[epoch][0], (epoch, ratio, weights[epoch])
  assert means[-1][0] < 0.6 * means[0][0]  # 'learning' did keep learning

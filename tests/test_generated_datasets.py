"""The generated benchmark datasets: GradNorm's toy regression and MMoE's synthetic data.

For each: shapes and dtypes, determinism from the seed, split sizes, the property
the benchmark exists for, bad flag values, and a short run of the real trainer.
"""

from __future__ import annotations

from conftest import assert_refused
import numpy as np
import pytest
import tensorflow as tf

from mtl_research import tasks as tasks_lib
from mtl_research.data import DATASETS, mmoe_synthetic
from mtl_research.data.bundle import SPLITS
from mtl_research.errors import UserError
from mtl_research.train import components as components_lib

SIZES = {"num_train": 300, "num_val": 70, "num_test": 50}


def load(name: str, seed: int = 0, **overrides):
  """The bundle of dataset `name` with every Param at its parsed default, then `overrides`."""
  params = {param.name: param.parse(param.default) for param in DATASETS.get(name).params}
  unknown = set(overrides) - set(params)
  assert not unknown, unknown
  params.update(overrides)
  return DATASETS.get(name).component(params, seed, None)


def all_arrays(bundle) -> list[np.ndarray]:
  arrays = []
  for split_name in SPLITS:
    split = bundle.split(split_name)
    arrays += [split.features[key] for key in sorted(split.features)]
    arrays += [split.labels[key] for key in sorted(split.labels)]
  return arrays


def check_shapes(bundle, task_names: list[str], input_dim: int) -> None:
  assert bundle.task_names == task_names
  assert all(task.kind == tasks_lib.REGRESSION for task in bundle.tasks)
  assert not bundle.target_scale  # targets are not rescaled
  for split_name, size_flag in zip(SPLITS, ("num_train", "num_val", "num_test")):
    split = bundle.split(split_name)
    assert len(split) == SIZES[size_flag]
    assert set(split.features) == {"numeric"}
    numeric = split.features["numeric"]
    assert numeric.dtype == np.float32 and numeric.shape == (SIZES[size_flag], input_dim)
    assert set(split.labels) == set(task_names)
    for labels in split.labels.values():
      assert labels.dtype == np.float32 and labels.shape == (SIZES[size_flag],)
      assert np.all(np.isfinite(labels))
  assert bundle.features.numeric_dim == input_dim
  bundle.validate(batch_size=32)


def check_determinism(name: str, **overrides) -> None:
  first, again, other = (load(name, seed, **SIZES, **overrides) for seed in (3, 3, 4))
  for a, b in zip(all_arrays(first), all_arrays(again)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(all_arrays(first), all_arrays(other)):
    assert not np.array_equal(a, b)


def check_splits_disjoint(bundle) -> None:
  # Rows are continuous draws, so any shared feature row would mean a shared example.
  rows = [bundle.split(name).features["numeric"] for name in SPLITS]
  stacked = np.concatenate(rows)
  assert len(np.unique(stacked, axis=0)) == len(stacked)


def train_briefly(make_config, name: str, steps: int = 100, **dataset_params) -> np.ndarray:
  """Trains the shared-bottom model for `steps` steps; returns the last step's task losses."""
  overrides = dict(num_train=512, num_val=64, num_test=64, **dataset_params)
  config = make_config(
    dataset=name, dataset_params=overrides, loop={"batch_size": 64, "train_steps": steps, "steps_per_loop": steps}
  )
  bundle = DATASETS.get(name).component(config.dataset.params, config.seed, None)
  bundle.validate(config.loop.batch_size)
  parts = components_lib.build(config, bundle)
  logs = parts.train_loop.run(steps)
  assert int(parts.global_step.numpy()) == steps
  losses = logs["losses"]
  assert losses.shape == (len(bundle.tasks),)
  assert np.all(np.isfinite(losses)), losses
  outputs = parts.model(dict(bundle.val.features), training=False)
  assert all(np.all(np.isfinite(tf.convert_to_tensor(v).numpy())) for v in outputs.values())
  return losses


class TestGradNormToy:
  def test_shapes_and_dtypes(self):
    check_shapes(load("gradnorm_toy", **SIZES), ["t0", "t1"], 250)
    bundle = load(
      "gradnorm_toy", **SIZES, gradnorm_toy_tasks=3, gradnorm_toy_sigmas=(1.0, 2.0, 3.0), gradnorm_toy_input_dim=17
    )
    check_shapes(bundle, ["t0", "t1", "t2"], 17)

  def test_deterministic_from_seed(self):
    check_determinism("gradnorm_toy")

  def test_splits_are_disjoint(self):
    check_splits_disjoint(load("gradnorm_toy", **SIZES))

  @pytest.mark.parametrize("seed", [0, 1, 2])
  def test_target_scales_follow_sigmas_unrescaled(self, seed):
    sigmas = (1.0, 100.0, 7.0)
    bundle = load(
      "gradnorm_toy", seed, num_train=4000, num_val=10, num_test=10, gradnorm_toy_tasks=3, gradnorm_toy_sigmas=sigmas
    )
    stds = np.array([bundle.train.labels[f"t{t}"].std() for t in range(3)])
    for t in (1, 2):
      ratio = (stds[t] / stds[0]) / (sigmas[t] / sigmas[0])
      assert 0.8 < ratio < 1.2, (t, stds)
    for t, sigma in enumerate(sigmas):
      peak = np.abs(bundle.train.labels[f"t{t}"]).max()
      assert sigma * 0.95 < peak <= sigma * (1 + 1e-6), (t, peak)
      # Neither linear nor saturated: std(σ·tanh z) for z ≈ N(0, 1) is about 0.63σ.
      assert 0.5 * sigma < stds[t] < 0.75 * sigma

  def test_function_does_not_depend_on_split_sizes(self):
    small = load("gradnorm_toy", 5, num_train=40, num_val=10, num_test=10)
    large = load("gradnorm_toy", 5, num_train=400, num_val=10, num_test=10)
    # Same seed, same B and ε_t, and the first rows of x are the same draws.
    np.testing.assert_array_equal(small.train.features["numeric"], large.train.features["numeric"][:40])
    np.testing.assert_array_equal(small.train.labels["t1"], large.train.labels["t1"][:40])

  @pytest.mark.parametrize("tasks, sigmas", [(2, (1.0,)), (3, (1.0, 100.0)), (1, (1.0, 2.0))])
  def test_wrong_number_of_sigmas_is_a_user_error(self, tasks, sigmas):
    with pytest.raises(UserError, match="--gradnorm_toy_sigmas.*--gradnorm_toy_tasks"):
      load("gradnorm_toy", **SIZES, gradnorm_toy_tasks=tasks, gradnorm_toy_sigmas=sigmas)

  def test_trains_with_finite_losses(self, make_config):
    losses = train_briefly(make_config, "gradnorm_toy")
    assert losses[1] > losses[0]  # σ = 100 versus 1: the imbalance GradNorm is about


class TestMMoESynthetic:
  def test_shapes_and_dtypes(self):
    check_shapes(load("mmoe_synthetic", **SIZES), ["y1", "y2"], 100)
    check_shapes(load("mmoe_synthetic", **SIZES, mmoe_input_dim=5, mmoe_num_sinusoids=0), ["y1", "y2"], 5)

  def test_deterministic_from_seed(self):
    check_determinism("mmoe_synthetic")

  def test_splits_are_disjoint(self):
    check_splits_disjoint(load("mmoe_synthetic", **SIZES))

  @pytest.mark.parametrize("p", [-1.0, -0.5, 0.0, 0.3, 0.9, 1.0])
  @pytest.mark.parametrize("scale", [1.0, 2.5])
  def test_weight_cosine_is_p_and_norm_is_c(self, p, scale):
    w1, w2 = mmoe_synthetic.task_weights(100, scale, p, np.random.default_rng(7))
    assert np.linalg.norm(w1) == pytest.approx(scale, abs=1e-12)
    assert np.linalg.norm(w2) == pytest.approx(scale, abs=1e-12)
    cosine = w1 @ w2 / (np.linalg.norm(w1) * np.linalg.norm(w2))
    assert cosine == pytest.approx(p, abs=1e-12)

  def test_load_uses_task_weights(self):
    # With no sinusoids the labels are w_kᵀx plus N(0, 0.01) noise, for the w_k of task_weights.
    bundle = load("mmoe_synthetic", 2, **SIZES, mmoe_num_sinusoids=0, mmoe_correlation=0.3, mmoe_scale=2.0)
    w1, w2 = mmoe_synthetic.task_weights(100, 2.0, 0.3, np.random.default_rng(2))
    x = bundle.train.features["numeric"].astype(np.float64)
    for w, task in ((w1, "y1"), (w2, "y2")):
      residual = bundle.train.labels[task] - x @ w
      assert abs(residual.mean()) < 0.03 and 0.08 < residual.std() < 0.12

  @pytest.mark.parametrize("seed", [0, 1])
  def test_label_correlation_is_monotone_in_p(self, seed):
    ps = (-0.5, 0.0, 0.5, 0.9, 1.0)
    realized = []
    for p in ps:
      bundle = load("mmoe_synthetic", seed, num_train=20000, num_val=10, num_test=10, mmoe_correlation=p)
      realized.append(np.corrcoef(bundle.train.labels["y1"], bundle.train.labels["y2"])[0, 1])
    assert np.all(np.diff(realized) > 0), realized
    assert abs(realized[ps.index(0.0)]) < 0.1, realized
    assert realized[ps.index(0.9)] > 0.85, realized
    # p is the cosine of w1 and w2, not the label correlation: sinusoids and noise shrink it.
    assert realized[ps.index(1.0)] < 1.0

  @pytest.mark.parametrize("p", [1.5, -1.01, float("nan")])
  def test_p_outside_unit_interval_is_a_user_error(self, p):
    with pytest.raises(UserError, match="--mmoe_correlation"):
      load("mmoe_synthetic", **SIZES, mmoe_correlation=p)

  def test_trains_with_finite_losses(self, make_config):
    train_briefly(make_config, "mmoe_synthetic")


class TestCommandLine:
  """The datasets' flags reach them through scripts/train.py (SIZE_PARAMS shared with synthetic)."""

  def test_gradnorm_toy_trains_from_flags(self, tmp_path, train_cli):
    run_dir = tmp_path / "run"
    proc = train_cli(
      f"--run_dir={run_dir}",
      "--dataset=gradnorm_toy",
      "--gradnorm_toy_tasks=3",
      "--gradnorm_toy_sigmas=1,10,100",
      "--gradnorm_toy_input_dim=40",
      "--num_train=512",
      "--num_val=64",
      "--num_test=64",
      "--hidden_units=16",
      "--train_steps=100",
      "--eval_every=0",
      "--checkpoint_every=100",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for task in ("t0", "t1", "t2"):
      assert f"test {task}:" in proc.stdout
    assert "nan" not in proc.stdout.lower(), proc.stdout

  @pytest.mark.parametrize(
    "args, expected",
    [
      (("--dataset=mmoe_synthetic", "--mmoe_correlation=1.5"), ("--mmoe_correlation", "[-1, 1]")),
      (("--dataset=gradnorm_toy", "--gradnorm_toy_tasks=3"), ("--gradnorm_toy_sigmas", "--gradnorm_toy_tasks")),
    ],
  )
  def test_bad_values_stop_before_writing(self, args, expected, tmp_path, train_cli):
    run_dir = tmp_path / "run"
    assert_refused(train_cli(f"--run_dir={run_dir}", "--train_steps=5", *args), run_dir, *expected)

"""The shared-bottom model, the compiled train loop, the fixed balancer and checkpoints."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from mtl_research import tasks
from mtl_research.data.bundle import FeatureSpec
from mtl_research.data.pipeline import DeviceSplit
from mtl_research.models import ARCHITECTURES, base
from mtl_research.train import components as components_lib
from mtl_research.train import loop
from mtl_research.train import run_dir as run_dir_lib
from mtl_research.train import train_loop as train_loop_lib
from mtl_research.train.train_loop import conflict_stats

REG = tasks.REGRESSION
CLS = tasks.CLASSIFICATION

TASK_SETS = {
  1: (tasks.TaskSpec("price", REG),),
  2: (tasks.TaskSpec("price", REG), tasks.TaskSpec("kind", CLS, 3)),
  4: (tasks.TaskSpec("a", REG), tasks.TaskSpec("b", CLS, 2), tasks.TaskSpec("c", CLS, 3), tasks.TaskSpec("d", REG)),
}


def run_loop(components, num_steps, diagnose=False, rows=None):
  """`num_steps` steps from the current one (of the run's order, or on `rows`); the last step's logs."""
  return components.train_loop.run(num_steps, diagnose, rows=rows)


def full_split_losses(components, split, reference_losses):
  outputs = components.model(dict(split.features), training=False)
  return reference_losses(components.model.task_specs, split.labels, outputs)


class TestSharedBottom:
  def test_embedded_columns_are_shared_inputs(self, make_bundle):
    specs = TASK_SETS[2]
    bundle = make_bundle(specs, num_train=8, num_eval=4)
    feature_spec = FeatureSpec(numeric_dim=6, embedded_vocab_sizes=(5, 3))
    model = ARCHITECTURES.get("shared_bottom").component(
      specs, feature_spec, {"hidden_units": (4,), "dropout": 0.0, "l2": 0.0, "embedding_dim": 2}
    )
    features = {
      "numeric": tf.constant(bundle.train.features["numeric"]),
      "embedded": tf.constant([[0, 1], [4, 2]] * 4, tf.int32),
    }
    outputs = model(features)
    assert tuple(outputs["price"].shape) == (8, 1)
    # Two tables (5x2, 3x2) feed the first trunk layer: 6 numeric + 2x2 embedded inputs.
    shapes = [tuple(v.shape) for v in model.shared_variables]
    assert shapes == [(5, 2), (3, 2), (10, 4), (4,)]
    # The encoder appends each column's embedding after the numbers: changing row 0's first
    # category changes exactly that row's columns 6:8, nothing else.
    changed = dict(features, embedded=tf.constant([[1, 1], [4, 2]] * 4, tf.int32))
    before, after = model.encoder(features).numpy(), model.encoder(changed).numpy()
    assert before.shape == (8, 10)
    np.testing.assert_array_equal(before[:, :6], features["numeric"].numpy())
    differs = before != after
    assert differs[0, 6:8].all() and differs.sum() == 4 * 2  # rows 0, 2, 4, 6 (the pattern repeats)
    table = model.encoder.embeddings[0].embeddings.numpy()
    np.testing.assert_array_equal(after[0, 6:8], table[1])

  def test_heads_emit_one_unit_for_regression_and_one_logit_per_class(self, make_bundle):
    specs = TASK_SETS[4]
    bundle = make_bundle(specs, num_train=8, num_eval=4)
    model = ARCHITECTURES.get("shared_bottom").component(
      specs, bundle.features, {"hidden_units": (5, 3), "dropout": 0.0, "l2": 0.0, "embedding_dim": 4}
    )
    outputs = model({"numeric": tf.constant(bundle.train.features["numeric"])})
    assert {name: tuple(value.shape) for name, value in outputs.items()} == {
      "a": (8, 1),
      "b": (8, 2),
      "c": (8, 3),
      "d": (8, 1),
    }
    # Trunk 6→5→3: kernels and biases are shared; the last shared kernel is 5x3.
    assert [tuple(v.shape) for v in model.shared_variables] == [(6, 5), (5,), (5, 3), (3,)]
    assert tuple(model.last_shared_kernel.shape) == (5, 3)
    # Heads read the 3 trunk units: (3*1+1) + (3*2+2) + (3*3+3) + (3*1+1) head parameters.
    head_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables) - (30 + 5 + 15 + 3)
    assert head_params == 4 + 8 + 12 + 4


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_dropout_masks_are_keras_masks_bit_for_bit(jit):
  """Our Dropout names the Philox algorithm (XLA compiles it faster); the masks stay Keras's."""
  tf.keras.utils.set_random_seed(123)  # where an unseeded SeedGenerator takes its seed from
  ours = base.Dropout(0.3)
  tf.keras.utils.set_random_seed(123)
  theirs = tf.keras.layers.Dropout(0.3)
  inputs = tf.reshape(tf.range(1.0, 1 + 16 * 64), [16, 64])
  draw = lambda layer: tf.function(lambda: layer(inputs, training=True), jit_compile=jit)()  # noqa: E731
  for _ in range(2):  # the second draw also checks that both generators advance alike
    mine, keras = draw(ours).numpy(), draw(theirs).numpy()
    np.testing.assert_array_equal(mine, keras)
    assert 0.15 < np.mean(mine == 0) < 0.45  # a mask was drawn


class TestTraining:
  @pytest.mark.parametrize("num_tasks", [1, 2, 4])
  def test_loss_decreases_for_every_task(self, num_tasks, make_config, make_bundle, reference_losses):
    bundle = make_bundle(TASK_SETS[num_tasks])
    config = make_config(optimizer={"learning_rate": 1e-2}, loop={"train_steps": 150})
    components = components_lib.build(config, bundle)
    before = full_split_losses(components, bundle.train, reference_losses)
    logs = run_loop(components, 150)
    after = full_split_losses(components, bundle.train, reference_losses)
    assert int(components.global_step.numpy()) == 150
    assert logs["losses"].shape == (num_tasks,)
    # Learnable targets: 150 Adam steps cut every task's loss by at least 40%.
    assert np.all(after < 0.6 * before), (before, after)


class TestFixedBalancer:
  def test_objective_is_weighted_sum_of_task_losses(self, make_config, make_bundle, reference_losses):
    specs = TASK_SETS[2]
    bundle = make_bundle(specs)
    config = make_config(balancer_params={"task_weights": {"price": 0.25, "kind": 3.0}})
    components = components_lib.build(config, bundle)
    np.testing.assert_allclose(components.balancer.weights().numpy(), [0.25, 3.0])
    # 0.25·2 + 3·0.5 = 2.
    assert float(components.balancer.objective(tf.constant([2.0, 0.5]))) == pytest.approx(2.0)

    indices = np.arange(5, 5 + config.loop.batch_size)
    labels = {name: values[indices] for name, values in bundle.train.labels.items()}
    outputs = components.model({"numeric": tf.constant(bundle.train.features["numeric"][indices])})
    expected = reference_losses(specs, labels, outputs)
    logs = run_loop(components, 1, rows=indices[None])
    np.testing.assert_allclose(logs["losses"], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["weights"], [0.25, 3.0])
    assert float(logs["objective"]) == pytest.approx(0.25 * expected[0] + 3.0 * expected[1], rel=1e-5)

  def test_unnamed_tasks_get_weight_one(self, make_config, make_bundle):
    config = make_config(balancer_params={"task_weights": {"b": 0.5, "d": 2.0}})
    components = components_lib.build(config, make_bundle(TASK_SETS[4], num_train=64, num_eval=8))
    np.testing.assert_allclose(components.balancer.weights().numpy(), [1.0, 0.5, 1.0, 2.0])
    # 1·1 + 0.5·2 + 1·3 + 2·4 = 13.
    assert float(components.balancer.objective(tf.constant([1.0, 2.0, 3.0, 4.0]))) == pytest.approx(13.0)

  def test_zero_weight_leaves_that_head_untouched(self, make_config, make_bundle):
    config = make_config(balancer_params={"task_weights": {"price": 0.0}}, optimizer={"learning_rate": 1e-2})
    bundle = make_bundle(TASK_SETS[2], num_train=128, num_eval=8)
    components = components_lib.build(config, bundle)
    heads = components.model.heads
    price_before = [v.numpy().copy() for v in heads["price"].trainable_variables]
    kind_before = [v.numpy().copy() for v in heads["kind"].trainable_variables]
    run_loop(components, 10)
    for old, var in zip(price_before, heads["price"].trainable_variables):
      np.testing.assert_array_equal(var.numpy(), old)
    assert any(not np.allclose(var.numpy(), old) for old, var in zip(kind_before, heads["kind"].trainable_variables))


class TestCompiledLoop:
  @pytest.mark.parametrize("jit, executor", [("off", "default"), ("off", "single_threaded"), ("on", "default")])
  def test_one_trace_serves_every_step_count(self, jit, executor, make_config, make_bundle):
    bundle = make_bundle(TASK_SETS[2], num_train=128, num_eval=8)
    config = make_config(loop={"log_grad_conflict": True, "jit_compile": jit, "executor": executor})
    components = components_lib.build(config, bundle)
    assert components.train_loop.executor == executor and components.train_loop.jit_compile == (jit == "on")
    for steps, diagnose in ((1, False), (3, True), (10, False), (5, False)):
      logs = run_loop(components, steps, diagnose)
    assert components.train_loop.loop.experimental_get_tracing_count() == 1
    assert int(components.global_step.numpy()) == 1 + 3 + 10 + 5
    assert np.all(np.isfinite(logs["losses"]))
    # Not a diagnosis step: the conflict statistics are the zero placeholders.
    np.testing.assert_array_equal(logs["conflict_cos"], np.zeros((2, 2)))

  @pytest.mark.parametrize("jit", ["off", "on"])
  def test_loop_means_average_every_step(self, jit, make_config, make_bundle):
    """`mean_losses`/`mean_objective` (the progress line's numbers) average all the steps of a
    run() call, across the several loop calls that steps_per_loop=2 makes of 5 steps."""
    bundle = make_bundle(TASK_SETS[2], num_train=128, num_eval=8)
    config = make_config(
      loop={"jit_compile": jit, "steps_per_loop": 2}, balancer_params={"task_weights": {"price": 0.5, "kind": 2.0}}
    )
    rows = np.arange(5 * config.loop.batch_size).reshape(5, -1) % 128
    stepwise = components_lib.build(config, bundle)
    per_step = [run_loop(stepwise, 1, rows=rows[i : i + 1]) for i in range(5)]
    whole = run_loop(components_lib.build(config, bundle), 5, rows=rows)
    losses = np.array([logs["losses"] for logs in per_step], np.float64)
    np.testing.assert_allclose(whole["mean_losses"], losses.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(whole["mean_objective"], (losses @ [0.5, 2.0]).mean(), rtol=1e-5)
    np.testing.assert_allclose(whole["losses"], losses[-1], rtol=1e-5)  # the last step's own logs stay

  @pytest.mark.parametrize("jit", [False, True])
  def test_auto_executor_is_single_threaded_for_the_graph_loop_without_gpu(self, jit):
    expected = "default" if tf.config.list_physical_devices("GPU") or jit else "single_threaded"
    assert train_loop_lib.resolve_executor("auto", jit_compile=jit) == expected

  @pytest.mark.parametrize("jit", ["off", "on"])
  def test_diagnosis_step_logs_conflict_statistics(self, jit, make_config, make_bundle):
    bundle = make_bundle(TASK_SETS[2], num_train=128, num_eval=8)
    components = components_lib.build(make_config(loop={"log_grad_conflict": True, "jit_compile": jit}), bundle)
    logs = run_loop(components, 2, diagnose=True)
    cos, norms = logs["conflict_cos"], logs["conflict_norm"]
    np.testing.assert_allclose(np.diag(cos), [1.0, 1.0], rtol=1e-5)
    assert cos[0, 1] == pytest.approx(cos[1, 0])
    assert -1.0 <= cos[0, 1] <= 1.0
    assert np.all(norms > 0)

  def test_conflict_stats_hand_computed(self):
    grads = [tf.constant([1.0, 0.0]), tf.constant([0.0, 2.0]), tf.constant([-3.0, 0.0]), tf.constant([1.0, 1.0])]
    cos, norms = conflict_stats(grads)
    r = 1 / np.sqrt(2)
    np.testing.assert_allclose(cos.numpy(), [[1, 0, -1, r], [0, 1, 0, r], [-1, 0, 1, -r], [r, r, -r, 1]], atol=1e-6)
    np.testing.assert_allclose(norms.numpy(), [1, 2, 3, np.sqrt(2)], rtol=1e-6)

  def test_gather_takes_the_requested_rows(self, make_bundle):
    bundle = make_bundle(TASK_SETS[2], num_train=16, num_eval=4)
    features, labels = DeviceSplit(bundle.train).gather(tf.constant([3, 0, 3]))
    np.testing.assert_array_equal(features["numeric"].numpy(), bundle.train.features["numeric"][[3, 0, 3]])
    np.testing.assert_array_equal(labels["kind"].numpy(), bundle.train.labels["kind"][[3, 0, 3]])


def _all_close(a, b):
  return all(np.allclose(x, y) for x, y in zip(a, b))


class TestCheckpoint:
  def test_restore_brings_back_step_weights_and_adam_slots(self, tmp_path, make_config, make_bundle):
    bundle = make_bundle(TASK_SETS[2], num_train=128, num_eval=8)
    config = make_config(optimizer={"learning_rate": 1e-2})
    trained = components_lib.build(config, bundle)
    run_loop(trained, 12)
    path = trained.checkpoint.save(os.path.join(tmp_path, "ckpt"))

    fresh = components_lib.build(config, bundle)
    trained_opt = [v.numpy() for v in trained.optimizer.variables]
    fresh_opt = [v.numpy() for v in fresh.optimizer.variables]
    slots = [
      (v.path, value)
      for v, value in zip(trained.optimizer.variables, trained_opt)
      if "momentum" in v.path or "velocity" in v.path
    ]
    # One first and one second moment per trained variable, all non-zero after training.
    assert len(slots) == 2 * len(trained.train_loop.trained_variables)
    assert all(np.any(value != 0) for _, value in slots), [p for p, value in slots if not np.any(value)]
    assert not _all_close(trained_opt, fresh_opt)
    assert not _all_close(trained.model.get_weights(), fresh.model.get_weights())
    assert int(fresh.global_step.numpy()) == 0

    fresh.checkpoint.restore(path).assert_consumed()
    assert int(fresh.global_step.numpy()) == 12
    assert int(fresh.optimizer.iterations.numpy()) == 12
    assert len(fresh.optimizer.variables) == len(trained_opt)
    for var, value in zip(fresh.optimizer.variables, trained_opt):
      np.testing.assert_array_equal(var.numpy(), value, err_msg=var.path)
    for restored, value in zip(fresh.model.get_weights(), trained.model.get_weights()):
      np.testing.assert_array_equal(restored, value)

  def test_model_alone_restores_from_a_training_checkpoint(self, tmp_path, make_config, make_bundle):
    """evaluate.py and export restore only the model; every weight must come back."""
    bundle = make_bundle(TASK_SETS[4], num_train=64, num_eval=8)
    config = make_config(model_params={"dropout": 0.1})
    trained = components_lib.build(config, bundle)
    run_loop(trained, 3)
    path = tf.train.CheckpointManager(trained.checkpoint, str(tmp_path), max_to_keep=1).save()
    fresh = components_lib.build(dataclasses.replace(config, seed=1), bundle)
    assert not np.allclose(fresh.model.get_weights()[0], trained.model.get_weights()[0])
    tf.train.Checkpoint(model=fresh.model).restore(path).assert_existing_objects_matched()
    assert len(fresh.model.get_weights()) == len(trained.model.get_weights()) == 4 + 8
    for restored, value in zip(fresh.model.get_weights(), trained.model.get_weights()):
      np.testing.assert_array_equal(restored, value)

  def test_interrupted_run_resumes_to_the_same_weights(self, tmp_path, make_config, make_bundle):
    bundle = make_bundle(TASK_SETS[2], num_train=128, num_eval=16)
    config = make_config(
      optimizer={"learning_rate": 1e-2},
      loop={
        "train_steps": 40,
        "steps_per_loop": 10,
        "checkpoint_every": 20,
        "summary_every": 10,
        "eval_every": 0,
        "eval_batch_size": 64,
      },
    )
    messages = []

    def train(path, parts):
      run = run_dir_lib.prepare(str(path), {"test": "1"}, overwrite=False)
      return loop.Trainer(config, bundle, parts, run, log=messages.append).run()

    whole = components_lib.build(config, bundle)
    whole_metrics = train(tmp_path / "whole", whole)
    # "Interrupt" after 20 steps: the same run, stopped at its first checkpoint.
    first_half = dataclasses.replace(components_lib.build(config, bundle), total_steps=20)
    assert train(tmp_path / "split", first_half)["steps"] == 20
    messages.clear()
    resumed = components_lib.build(config, bundle)
    resumed_metrics = train(tmp_path / "split", resumed)
    assert any(m.startswith("Resumed") and "step 20" in m for m in messages), messages
    assert resumed_metrics["steps"] == whole_metrics["steps"] == 40
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights()):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert resumed_metrics["test"]["price"]["mse"] == pytest.approx(whole_metrics["test"]["price"]["mse"], rel=1e-4)

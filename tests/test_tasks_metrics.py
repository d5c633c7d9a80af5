"""Task specs, per-example losses and evaluation metrics against hand-computed values."""

import math

import numpy as np
import pytest
import tensorflow as tf

from mtl_research import metrics, tasks
from mtl_research.errors import UserError

REG = tasks.TaskSpec("price", tasks.REGRESSION)
BINARY = tasks.TaskSpec("click", tasks.CLASSIFICATION, 2)
THREE = tasks.TaskSpec("kind", tasks.CLASSIFICATION, 3)

LN2, LN3 = math.log(2.0), math.log(3.0)


class TestTaskSpec:
  def test_unknown_kind_raises_user_error_naming_task_and_kind(self):
    with pytest.raises(UserError, match=r"'rank'.*'ranking'"):
      tasks.TaskSpec("rank", "ranking")

  @pytest.mark.parametrize("num_classes", [0, 1])
  def test_classification_needs_two_classes(self, num_classes):
    with pytest.raises(UserError, match="at least 2 classes"):
      tasks.TaskSpec("kind", tasks.CLASSIFICATION, num_classes)

  def test_regression_needs_no_classes(self):
    assert REG.num_classes == 0
    assert REG.output_units == 1

  def test_output_units_and_dtypes(self):
    assert THREE.output_units == 3
    assert BINARY.output_units == 2
    assert REG.label_dtype == tf.float32
    assert THREE.label_dtype == tf.int32

  def test_loss_metric(self):
    assert REG.loss_metric == "mse"
    assert THREE.loss_metric == "cross_entropy"

  def test_metrics_per_kind_auc_only_for_binary(self):
    assert REG.metrics == ("mse", "mae", "r2")
    assert THREE.metrics == ("accuracy", "cross_entropy")
    assert BINARY.metrics == ("accuracy", "cross_entropy", "auc")

  def test_every_metric_a_task_reports_has_one_direction(self):
    """Model selection and Δm look each metric up in metrics.py: none may be missing or in both sets."""
    reported = set(REG.metrics) | set(BINARY.metrics) | set(THREE.metrics)
    assert reported == metrics.HIGHER_IS_BETTER | metrics.LOWER_IS_BETTER
    assert not metrics.HIGHER_IS_BETTER & metrics.LOWER_IS_BETTER


class TestPerExampleLoss:
  def test_regression_is_squared_error(self):
    logits = tf.constant([[1.0], [3.0], [-0.5]])
    labels = tf.constant([2.0, 1.0, -0.5])
    loss = tasks.per_example_loss(REG, labels, logits)
    assert loss.shape == (3,)
    np.testing.assert_allclose(loss.numpy(), [1.0, 4.0, 0.0], rtol=1e-6)

  def test_classification_is_softmax_cross_entropy_on_logits(self):
    # Rows: uniform over 3 -> ln 3; probs (1/4, 1/4, 1/2) -> -ln(1/4) for class 0
    # and -ln(1/2) for class 2; a +100 shift of all logits changes nothing.
    logits = tf.constant([[0.0, 0.0, 0.0], [0.0, 0.0, LN2], [0.0, 0.0, LN2], [100.0, 100.0, 100.0 + LN2]])
    labels = tf.constant([1, 0, 2, 2])
    loss = tasks.per_example_loss(THREE, labels, logits)
    np.testing.assert_allclose(loss.numpy(), [LN3, 2 * LN2, LN2, LN2], rtol=1e-5)

  def test_classification_does_not_apply_softmax_twice(self):
    # Logits (0, ln 3): p = (1/4, 3/4). On softmax outputs instead of logits the
    # loss would be -log softmax((1/4, 3/4))[1] = log(1 + e^{-1/2}) ≈ 0.474.
    loss = tasks.per_example_loss(BINARY, tf.constant([1, 0]), tf.constant([[0.0, LN3], [0.0, LN3]]))
    np.testing.assert_allclose(loss.numpy(), [math.log(4 / 3), math.log(4)], rtol=1e-5)


class TestRegressionMetrics:
  def test_hand_computed(self):
    # err = (0, 0, 0, 2): mse 4/4, mae 2/4; SS_tot about 2.5 = 2.25+0.25+0.25+2.25 = 5.
    result = metrics.regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([[1.0], [2.0], [3.0], [6.0]]))
    assert result == pytest.approx({"mse": 1.0, "mae": 0.5, "r2": 1.0 - 4.0 / 5.0})

  def test_mean_prediction_has_zero_r2_and_worse_is_negative(self):
    labels = np.array([0.0, 2.0, 4.0])
    assert metrics.regression_metrics(labels, np.full(3, 2.0))["r2"] == pytest.approx(0.0)
    # err = (2, 2, 2): SS_res 12 > SS_tot 8.
    assert metrics.regression_metrics(labels, labels + 2.0)["r2"] == pytest.approx(1.0 - 12.0 / 8.0)

  def test_constant_target_has_nan_r2(self):
    result = metrics.regression_metrics(np.ones(4), np.array([1.0, 2.0, 1.0, 1.0]))
    assert math.isnan(result["r2"])
    assert result["mse"] == pytest.approx(0.25)
    assert result["mae"] == pytest.approx(0.25)


class TestClassificationMetrics:
  def test_accuracy_and_cross_entropy_three_classes(self):
    # Row probabilities: (1/4, 1/4, 1/2), (3/5, 1/5, 1/5), (1/6, 4/6, 1/6).
    logits = np.array([[0.0, 0.0, LN2], [LN3, 0.0, 0.0], [0.0, math.log(4.0), 0.0]])
    labels = np.array([2, 0, 0])  # Right, right, wrong (argmax 1).
    result = metrics.classification_metrics(labels, logits)
    assert set(result) == {"accuracy", "cross_entropy"}
    assert result["accuracy"] == pytest.approx(2.0 / 3.0)
    # (ln 2 + ln 5/3 + ln 6) / 3 = ln 20 / 3.
    assert result["cross_entropy"] == pytest.approx(math.log(20.0) / 3.0)

  def test_cross_entropy_is_stable_for_large_logits(self):
    result = metrics.classification_metrics(np.array([0]), np.array([[1000.0, 1000.0 + LN3]]))
    assert result["cross_entropy"] == pytest.approx(math.log(4.0))

  def test_binary_auc_without_ties(self):
    # Positives score 0.35, 0.8; negatives 0.1, 0.4: 3 of 4 pairs ordered right.
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1])
    assert metrics.binary_auc(labels, scores) == pytest.approx(0.75)
    logits = np.stack([np.zeros(4), scores], axis=1)
    result = metrics.classification_metrics(labels, logits)
    assert set(result) == {"accuracy", "cross_entropy", "auc"}
    assert result["auc"] == pytest.approx(0.75)
    # Predicted class 1 iff score > 0: all predicted 1, so accuracy is 2/4.
    assert result["accuracy"] == pytest.approx(0.5)

  def test_binary_auc_counts_ties_as_half(self):
    # Positives (0.5, 0.9) vs negatives (0.5, 0.5): 0.9 wins both, 0.5 ties both.
    labels = np.array([0, 1, 0, 1])
    scores = np.array([0.5, 0.5, 0.5, 0.9])
    assert metrics.binary_auc(labels, scores) == pytest.approx((2 + 0.5 * 2) / 4)
    logits = np.stack([np.zeros(4), scores], axis=1)
    assert metrics.classification_metrics(labels, logits)["auc"] == pytest.approx(0.75)

  def test_binary_auc_all_tied_is_half_and_perfect_is_one(self):
    assert metrics.binary_auc(np.array([1, 0, 1, 0, 0]), np.zeros(5)) == pytest.approx(0.5)
    assert metrics.binary_auc(np.array([0, 0, 1, 1]), np.array([-3.0, -1.0, 2.0, 5.0])) == pytest.approx(1.0)
    assert metrics.binary_auc(np.array([1, 1, 0, 0]), np.array([-3.0, -1.0, 2.0, 5.0])) == pytest.approx(0.0)

  def test_binary_auc_with_one_class_is_nan(self):
    assert math.isnan(metrics.binary_auc(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3])))
    assert math.isnan(metrics.binary_auc(np.array([0, 0]), np.array([0.1, 0.2])))


class TestTaskMetrics:
  @pytest.mark.parametrize(
    "task,outputs,labels",
    [
      (REG, np.array([[0.5], [1.0], [2.0]]), np.array([0.0, 1.0, 3.0])),
      (BINARY, np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]]), np.array([1, 0, 0])),
      (THREE, np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), np.array([1, 0, 2])),
    ],
    ids=["regression", "binary", "three_classes"],
  )
  def test_keys_are_the_task_metrics(self, task, outputs, labels):
    assert tuple(sorted(metrics.task_metrics(task, labels, outputs))) == tuple(sorted(task.metrics))

  def test_dispatches_regression_and_classification(self):
    reg = metrics.task_metrics(REG, np.array([0.0, 1.0, 3.0]), np.array([[0.5], [1.0], [2.0]]))
    # err (0.5, 0, -1): mse 1.25/3; SS_tot = (4/3)^2 + (1/3)^2 + (5/3)^2 = 42/9.
    assert reg["mse"] == pytest.approx(1.25 / 3)
    assert reg["r2"] == pytest.approx(1 - 1.25 / (42 / 9))
    cls = metrics.task_metrics(
      THREE, np.array([1, 0, 2]), np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    )
    assert cls["accuracy"] == pytest.approx(2.0 / 3.0)

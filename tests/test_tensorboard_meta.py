"""The custom-scalars layout is derived from what a run logs per task, never from a balancer's name."""

import re

from conftest import build_config, make_bundle
import pytest

from mtl_research import tags, tasks
from mtl_research.train import components as components_lib
from mtl_research.train import tensorboard_meta

SPECS = (tasks.TaskSpec("price", tasks.REGRESSION), tasks.TaskSpec("kind", tasks.CLASSIFICATION, 3))


@pytest.mark.parametrize(
  "balancer, expected",
  [
    ("fixed", []),
    ("uncertainty", ["uncertainty/log_var"]),
    # gradnorm/l_grad is a scalar: no per-task chart.
    ("gradnorm", ["gradnorm/grad_norm", "gradnorm/loss_ratio", "gradnorm/target"]),
  ],
)
def test_per_task_diagnostics_come_from_the_balancer(balancer, expected):
  parts = components_lib.build(build_config(balancer=balancer), make_bundle(SPECS, num_train=64, num_eval=8))
  assert sorted(parts.train_loop.per_task_diagnostics()) == expected


BINARY_SPECS = (*SPECS, tasks.TaskSpec("churn", tasks.CLASSIFICATION, 2), tasks.TaskSpec("age", tasks.REGRESSION))


def _categories(specs, prefixes):
  """{category: {chart title: [compiled tag regexes]}} of the layout."""
  return {
    category.title: {chart.title: [re.compile(regex) for regex in chart.multiline.tag] for chart in category.chart}
    for category in tensorboard_meta.layout(specs, prefixes).category
  }


def _matching(charts, tag):
  """Titles of the charts that show `tag`."""
  return [title for title, regexes in charts.items() if any(regex.search(tag) for regex in regexes)]


def test_every_chart_holds_one_scale():
  """Scale-free metrics share a chart across tasks; metrics, losses in a task's units get a chart per task."""
  categories = _categories(BINARY_SPECS, ["gradnorm/grad_norm", tags.CONFLICT_GRAD_NORM])
  assert list(categories) == ["validation metrics", "task losses", "weights and balancer"]
  metrics = categories["validation metrics"]
  assert list(metrics) == [
    "mse: price",
    "mse: age",
    "mae: price",
    "mae: age",
    "r2",
    "accuracy",
    "cross_entropy: kind",
    "cross_entropy: churn",
    "auc",
  ]
  assert _matching(metrics, tags.eval_metric("price", "r2")) == ["r2"]
  assert _matching(metrics, tags.eval_metric("age", "r2")) == ["r2"]
  assert _matching(metrics, tags.eval_metric("kind", "accuracy")) == ["accuracy"]
  assert _matching(metrics, tags.eval_metric("churn", "auc")) == ["auc"]
  assert _matching(metrics, tags.eval_metric("price", "mse")) == ["mse: price"]
  # A task name that is a prefix of another's, or holds regex characters, matches only itself.
  assert _matching(metrics, tags.eval_metric("price2", "mse")) == []

  losses = categories["task losses"]
  assert _matching(losses, "loss/price") == ["loss: price (train, validation)"]
  assert _matching(losses, "weighted_loss/kind") == ["weighted loss: kind"]
  for tag in (tags.TOTAL_LOSS, tags.MEAN_LOSS, "weight/price", "gradnorm/grad_norm/price"):
    assert _matching(losses, tag) == []

  balancer = categories["weights and balancer"]
  assert list(balancer) == ["task weights", "gradnorm/grad_norm", tags.CONFLICT_GRAD_NORM]
  for task in ("price", "kind", "churn", "age"):
    assert _matching(balancer, f"weight/{task}") == ["task weights"]
    assert _matching(balancer, f"gradnorm/grad_norm/{task}") == ["gradnorm/grad_norm"]
  assert _matching(balancer, "gradnorm/target/kind") == []


def test_regex_characters_in_task_names_are_literal():
  specs = (tasks.TaskSpec("a.b", tasks.REGRESSION), tasks.TaskSpec("a+b", tasks.REGRESSION))
  metrics = _categories(specs, [])["validation metrics"]
  assert _matching(metrics, tags.eval_metric("a.b", "mse")) == ["mse: a.b"]
  assert _matching(metrics, tags.eval_metric("axb", "mse")) == []
  assert _matching(metrics, tags.eval_metric("a+b", "mse")) == ["mse: a+b"]
  assert _matching(metrics, tags.eval_metric("aab", "mse")) == []  # `a+b` as a regex would match it

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


def _charts(prefixes):
  (category,) = tensorboard_meta.layout(prefixes).category
  return {chart.title: [re.compile(regex) for regex in chart.multiline.tag] for chart in category.chart}


def _matches(regexes, tag):
  return any(regex.search(tag) for regex in regexes)


def test_one_chart_per_prefix_holding_every_task_and_nothing_else():
  charts = _charts([*tags.TASK_PREFIXES, "gradnorm/grad_norm", tags.CONFLICT_GRAD_NORM])
  assert list(charts) == [
    "task losses",
    "weighted task losses",
    "task weights",
    "gradnorm/grad_norm",
    tags.CONFLICT_GRAD_NORM,
    "validation metrics",
  ]
  losses = charts["task losses"]
  assert _matches(losses, "loss/price") and _matches(losses, "loss/kind")
  assert not _matches(losses, tags.TOTAL_LOSS) and not _matches(losses, tags.MEAN_LOSS)
  assert not _matches(losses, "weighted_loss/price")
  norms = charts["gradnorm/grad_norm"]
  assert _matches(norms, "gradnorm/grad_norm/kind") and not _matches(norms, "gradnorm/target/kind")
  assert _matches(charts["validation metrics"], tags.eval_metric("kind", "accuracy"))

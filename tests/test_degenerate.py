"""Configurations that train, but not as their flags say: each is warned about in one sentence.

(Those that would train nothing are refused: tests/test_bad_inputs.py, e.g. every task weight 0.)
"""

from __future__ import annotations

from conftest import build_config, make_bundle
import pytest

from mtl_research import tasks
from mtl_research.train import components as components_lib

SPECS = (tasks.TaskSpec("price", tasks.REGRESSION), tasks.TaskSpec("kind", tasks.CLASSIFICATION, 2))


@pytest.mark.parametrize(
  "balancer, optimizer, tasks_kept, warning",
  [
    ("gradnorm", {}, 1, "--balancer=gradnorm weighs tasks against each other, and this run has one task (price)"),
    ("fixed", {"schedule": "step", "decay_steps": 8}, 2, "--lr_decay_steps=8 is not less than the run's 8 steps"),
  ],
)
def test_a_configuration_that_trains_but_not_as_its_flags_say_is_warned_about(
  balancer, optimizer, tasks_kept, warning, capsys
):
  bundle = make_bundle(SPECS[:tasks_kept])
  config = build_config(balancer=balancer, optimizer=optimizer, loop={"train_steps": 8})
  components_lib.build(config, bundle)
  lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
  assert len(lines) == 1 and warning in lines[0], lines
  components_lib.build(build_config(balancer=balancer, loop={"train_steps": 8}), make_bundle(SPECS))
  assert "warning: " not in capsys.readouterr().err  # two tasks, a constant schedule: nothing to say

"""Uncertainty and GradNorm train from the CLI, their weights move, and TensorBoard shows them."""

import json
import os

from conftest import read_scalars
import pytest

TASKS = ("price", "kind")
# Weights at step 0: uncertainty's c_t·exp(−s_t) with s_t = 0 (½ regression, 1 classification).
INITIAL = {"uncertainty": {"price": 0.5, "kind": 1.0}, "gradnorm": {"price": 1.0, "kind": 1.0}}
EXPECTED_TAGS = {
  "uncertainty": ["uncertainty/log_var/price", "uncertainty/log_var/kind"],
  "gradnorm": ["gradnorm/grad_norm/price", "gradnorm/target/kind", "gradnorm/loss_ratio/price", "gradnorm/l_grad"],
}


@pytest.mark.parametrize("balancer", ["uncertainty", "gradnorm"])
def test_balancer_trains_from_cli(balancer, tmp_path, train_cli):
  run = str(tmp_path / "run")
  proc = train_cli(
    f"--run_dir={run}",
    f"--balancer={balancer}",
    "--num_train=1024",
    "--num_val=128",
    "--num_test=128",
    "--train_steps=300",
    "--summary_every=50",
    "--eval_every=0",
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(os.path.join(run, "metrics.json"), encoding="utf-8") as handle:
    metrics = json.load(handle)
  weights = metrics["weights"]
  assert metrics["balancer"] == balancer and metrics["steps"] == 300
  assert max(abs(weights[t] - INITIAL[balancer][t]) for t in TASKS) > 0.05, weights
  scalars = read_scalars(os.path.join(run, "train"))
  for tag in EXPECTED_TAGS[balancer] + [f"weight/{t}" for t in TASKS]:
    assert [step for step, _ in scalars[tag]] == list(range(50, 301, 50)), tag
  # metrics.json holds the final effective weights, the last logged ones (those of step 300's update).
  if balancer == "gradnorm":
    assert sum(weights.values()) == pytest.approx(len(TASKS), rel=1e-5)  # Σ w = T
  for task in TASKS:
    assert scalars[f"weight/{task}"][-1][1] == pytest.approx(weights[task], rel=0.05)

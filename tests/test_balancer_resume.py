"""Checkpoint/resume of balancer state (uncertainty's s, GradNorm's w, L(0) and
its own Adam slots, Nash-MTL's kept α): a run interrupted after N steps and restored into freshly
built components continues exactly like the uninterrupted run.
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
from mtl_research.train import components as components_lib

TASKS = (
  tasks_lib.TaskSpec("value", tasks_lib.REGRESSION),
  tasks_lib.TaskSpec("scaled", tasks_lib.REGRESSION),
  tasks_lib.TaskSpec("kind", tasks_lib.CLASSIFICATION, 3),
)
BATCH = 16
FIRST, MORE = 6, 7  # steps before the checkpoint, steps after it


def _bundle():
  rng = np.random.default_rng(7)
  rows = 80  # 5 batches per epoch, so the resumed run crosses an epoch boundary
  x = rng.normal(size=(3 * rows, 6))
  labels = {
    "value": x[:, 0] - x[:, 1] ** 2 + 0.1 * rng.normal(size=len(x)),
    "scaled": 20.0 * np.tanh(x[:, 2] + x[:, 3]),
    "kind": np.argmax(x[:, 3:6] + rng.gumbel(size=(len(x), 3)), axis=1),
  }
  return helpers.make_bundle(TASKS, x, labels, (rows, rows, rows))


def _balancer_state(balancer) -> dict[str, np.ndarray]:
  state = {}
  if hasattr(balancer, "log_var"):
    state["log_var"] = balancer.log_var.numpy().copy()
  if hasattr(balancer, "initial_losses"):  # GradNorm
    state["w"] = balancer.w.numpy().copy()
    state["initial_losses"] = balancer.initial_losses.numpy().copy()
    state.update({f"gradnorm_adam/{k}": v for k, v in helpers.optimizer_values(balancer.optimizer).items()})
  if isinstance(getattr(balancer, "alpha", None), tf.Variable):  # Nash-MTL's α (GradNorm's alpha is a float)
    state["alpha"] = balancer.alpha.numpy().copy()
  # Every variable the balancer holds (EMAs, tracked gradients, accumulators, the weights it used).
  state.update({f"variable{i}:{v.name}": v.numpy().copy() for i, v in enumerate(balancer.variables)})
  return state


def _assert_same(a: dict, b: dict, what: str):
  assert sorted(a) == sorted(b), what
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{what}: {key}")


CASES = [
  ("uncertainty", {}),
  ("gradnorm", {}),
  # L(0) averaged over the first 8 steps: the checkpoint falls inside that window.
  ("gradnorm", {"gradnorm_l0_steps": 8, "gradnorm_scope": "shared"}),
  # α solved at steps 0, 4, 8, 12 and reused in between: the checkpoint (step 6) holds step 4's α.
  ("nash_mtl", {"nash_mtl_update_weights_every": 4}),
  # Random: every step redraws its masks from (seed, step), so the resumed run draws what the first drew.
  ("graddrop", {"graddrop_marginalize_batch": False}),
  # The moving average of the gradients, shaped like the shared variables (made in `build`), with a decaying rate.
  ("db_mtl", {"db_mtl_beta_sigma": 0.5}),
  # Tracked gradients Y (made in `build`) and the weights λ.
  ("moco", {}),
  # AdaGrad accumulators (made in `build`), the first step's estimates and the weights.
  ("excess_mtl", {"excess_mtl_step_size": 0.1}),
  # Random task orders from (seed, step).
  ("pcgrad", {}),
  # Cosine targets (made in `build`) and random orders.
  ("gradvac", {}),
  # Epoch means: the checkpoint (step 6) falls in epoch 1, the weights change at step 10 (epoch 2).
  ("dwa", {}),
  # Weights drawn from (seed, step).
  ("rlw", {"rlw_distribution": "dirichlet"}),
  # The logits ξ and their Adam state, learned from the losses after each update.
  ("famo", {}),
  # The nadir is measured over epoch 1 (steps 5-9): the checkpoint falls inside it; STCH from step 10.
  ("stch", {"stch_warmup_epochs": 2}),
  # The scales s_t, trained by the model's optimizer.
  ("imtl_l", {}),
]


@pytest.mark.parametrize(
  "balancer, overrides",
  CASES,
  ids=[
    "uncertainty",
    "gradnorm",
    "gradnorm-l0window-shared",
    "nash_mtl-every4",
    "graddrop-per-element",
    "db_mtl",
    "moco",
    "excess_mtl",
    "pcgrad",
    "gradvac",
    "dwa",
    "rlw-dirichlet",
    "famo",
    "stch-warmup2",
    "imtl_l",
  ],
)
def test_resume_continues_exactly(tmp_path, balancer, overrides):
  bundle = _bundle()
  config = helpers.make_config(
    tmp_path / "run", balancer, hidden_units=(16, 8), batch_size=BATCH, train_steps=FIRST + MORE, seed=5, **overrides
  )

  original = components_lib.build(config, bundle)
  initial_state = _balancer_state(original.balancer)
  helpers.run_loop(original, FIRST, chunk=4)  # two loop calls: 4 + 2 steps
  manager = tf.train.CheckpointManager(original.checkpoint, str(tmp_path / "ckpt"), max_to_keep=2)
  path = manager.save(checkpoint_number=FIRST)
  saved_balancer = _balancer_state(original.balancer)
  saved_model = helpers.model_values(original.model)
  saved_optimizer = helpers.optimizer_values(original.optimizer)
  # The saved state must differ from a fresh build, or "restored" would prove nothing.
  held = overrides.get("gradnorm_l0_steps", 1) > FIRST  # GradNorm holds w until L(0) is final
  for key in ("log_var", "w", "initial_losses", "alpha"):
    if key in saved_balancer and not (held and key == "w"):
      assert not np.allclose(saved_balancer[key], initial_state[key]), key
  if balancer == "gradnorm":
    # w's optimizer steps only from step K-1 on, once L(0) over K steps is final.
    expected = max(FIRST - (overrides.get("gradnorm_l0_steps", 1) - 1), 0)
    assert int(original.balancer.optimizer.iterations.numpy()) == expected

  # Uninterrupted: the same run keeps going.
  helpers.run_loop(original, MORE, chunk=5)

  resumed = components_lib.build(config, bundle)
  assert int(resumed.global_step.numpy()) == 0
  status = resumed.checkpoint.restore(manager.latest_checkpoint)
  status.assert_existing_objects_matched()
  assert manager.latest_checkpoint == path
  assert int(resumed.global_step.numpy()) == FIRST
  _assert_same(saved_balancer, _balancer_state(resumed.balancer), "restored balancer state")
  _assert_same(saved_model, helpers.model_values(resumed.model), "restored model")
  _assert_same(saved_optimizer, helpers.optimizer_values(resumed.optimizer), "restored model optimizer")

  helpers.run_loop(resumed, MORE, chunk=3)

  assert int(resumed.global_step.numpy()) == int(original.global_step.numpy()) == FIRST + MORE
  _assert_same(_balancer_state(original.balancer), _balancer_state(resumed.balancer), "balancer after resume")
  _assert_same(helpers.model_values(original.model), helpers.model_values(resumed.model), "model after resume")
  _assert_same(
    helpers.optimizer_values(original.optimizer), helpers.optimizer_values(resumed.optimizer), "optimizer after resume"
  )
  # And training did move on after the checkpoint.
  after = _balancer_state(resumed.balancer)
  changed = [key for key in after if key.startswith("variable") and not np.array_equal(after[key], saved_balancer[key])]
  assert changed, "no balancer variable moved after the checkpoint"

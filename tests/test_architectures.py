"""Every registered architecture against the interface the step and the balancers rely on (models/base.py).

The declaration of shared and task-specific variables is checked against what each task's loss actually
reaches on a tape, so a wrong declaration fails here, whoever adds the next architecture: a variable
reached by more than one task's loss must be in `shared_variables`, one reached by exactly one task's in
that task's `task_variables`, and the two together are every trainable variable. GradNorm's variables
are shared; the representation Z reaches every task and every shared variable reaches Z.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

try:
  from tests.conftest import build_config, make_bundle
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  from conftest import build_config, make_bundle

from mtl_research import tasks as tasks_lib
from mtl_research.features import EMBEDDED, NUMERIC, FeatureSpec
from mtl_research.models import ARCHITECTURES
from mtl_research.models import experts as experts_lib
from mtl_research.train import components as components_lib

FEATURES = FeatureSpec(numeric_dim=5, embedded_vocab_sizes=(4, 7))
BATCH = 6


def mixed_tasks(count: int) -> tuple[tasks_lib.TaskSpec, ...]:
  """`count` tasks alternating regression and 3-class classification."""
  return tuple(
    tasks_lib.TaskSpec(f"reg{i}", tasks_lib.REGRESSION)
    if i % 2 == 0
    else tasks_lib.TaskSpec(f"cls{i}", tasks_lib.CLASSIFICATION, 3)
    for i in range(count)
  )


def default_params(name: str, **overrides) -> dict:
  params = {p.name: p.parse(p.default) for p in ARCHITECTURES.get(name).params}
  params.update(overrides)
  return params


# Every registered architecture at its defaults, and the variants whose structure differs (CGC is PLE
# with one level; three levels have two intermediate ones).
VARIANTS = {"ple:1": ("ple", {"ple_levels": 1}), "ple:3": ("ple", {"ple_levels": 3, "task_experts": 2})}
CASES = [*ARCHITECTURES.names(), *VARIANTS]


def build(case: str, task_specs, **overrides):
  name, preset = VARIANTS.get(case, (case, {}))
  model = ARCHITECTURES.get(name).component(task_specs, FEATURES, default_params(name, **preset, **overrides))
  features = example_features()
  model.build_for(features)
  return model, features


def example_features(seed: int = 0) -> dict[str, tf.Tensor]:
  rng = np.random.default_rng(seed)
  return {
    NUMERIC: tf.constant(rng.normal(size=(BATCH, FEATURES.numeric_dim)), tf.float32),
    EMBEDDED: tf.constant(
      np.stack([rng.integers(0, size, BATCH) for size in FEATURES.embedded_vocab_sizes], axis=1), tf.int32
    ),
  }


def reach(model, features) -> tuple[dict[int, set[str]], dict[str, bool]]:
  """For each trainable variable (by id), the tasks whose loss it reaches; and whether each loss reaches Z.

  "Reaches" is dependence: the gradient of the task's output sum is not None and not all zeros (at random
  weights and inputs a real dependence gives a nonzero gradient; a structural zero, such as the slices of a
  concatenation another task does not read, does not count).
  """
  with tf.GradientTape(persistent=True) as tape:
    outputs, representation = model.forward(features, training=False)
    scalars = {name: tf.reduce_sum(out) for name, out in outputs.items()}
  reached: dict[int, set[str]] = {id(v): set() for v in model.trainable_variables}
  for name, scalar in scalars.items():
    for variable, grad in zip(model.trainable_variables, tape.gradient(scalar, model.trainable_variables)):
      if grad is not None and np.any(tf.convert_to_tensor(grad).numpy() != 0):
        reached[id(variable)].add(name)
  through_z = {name: tape.gradient(scalar, representation) is not None for name, scalar in scalars.items()}
  return reached, through_z


@pytest.mark.parametrize("num_tasks", [1, 2, 4])
@pytest.mark.parametrize("name", CASES)
def test_forward_shapes_for_mixed_tasks(name, num_tasks):
  task_specs = mixed_tasks(num_tasks)
  model, features = build(name, task_specs)
  outputs, representation = model.forward(features, training=False)
  assert sorted(outputs) == sorted(t.name for t in task_specs)
  for task in task_specs:
    assert tuple(outputs[task.name].shape) == (BATCH, task.output_units)
  assert representation.shape.rank == 2 and representation.shape[0] == BATCH
  np.testing.assert_array_equal(model(features)[task_specs[0].name].numpy(), outputs[task_specs[0].name].numpy())


@pytest.mark.parametrize("num_tasks", [2, 4])
@pytest.mark.parametrize("name", CASES)
def test_declared_sharing_matches_what_the_losses_reach(name, num_tasks):
  task_specs = mixed_tasks(num_tasks)
  model, features = build(name, task_specs)
  reached, through_z = reach(model, features)
  by_id = {id(v): v for v in model.trainable_variables}
  shared = {id(v) for v in model.shared_variables}
  assert len(shared) == len(model.shared_variables), "a shared variable declared twice"
  want_shared = {key for key, tasks in reached.items() if len(tasks) > 1}
  assert shared == want_shared, (
    sorted(by_id[k].path for k in shared ^ want_shared),
    "declared shared vs reached by several tasks",
  )
  declared_tasks = {task.name: {id(v) for v in model.task_variables(task.name)} for task in task_specs}
  for task in task_specs:
    want = {key for key, tasks in reached.items() if tasks == {task.name}}
    assert declared_tasks[task.name] == want, (
      task.name,
      sorted(by_id[k].path for k in declared_tasks[task.name] ^ want),
    )
  covered = shared.union(*declared_tasks.values())
  assert covered == set(by_id), sorted(by_id[k].path for k in set(by_id) - covered)
  assert {id(v) for v in model.gradnorm_variables} <= shared and model.gradnorm_variables
  assert all(through_z.values()), through_z
  counts = model.parameter_counts()
  assert counts["total"] == sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  assert counts["shared"] + sum(counts["per_task"].values()) == counts["total"]


@pytest.mark.parametrize("name", CASES)
def test_every_shared_variable_reaches_the_representation(name):
  """Z is what the representation scope back-propagates through: every shared variable must feed it."""
  model, features = build(name, mixed_tasks(2))
  with tf.GradientTape() as tape:
    _, representation = model.forward(features, training=False)
    total = tf.reduce_sum(representation)
  grads = tape.gradient(total, model.shared_variables)
  assert all(g is not None for g in grads), [v.path for v, g in zip(model.shared_variables, grads) if g is None]


@pytest.mark.parametrize("name", CASES)
def test_the_representation_is_a_cut_between_shared_and_task_variables(name):
  """Every path from a shared variable to a task's loss passes through Z: back-propagating ∇_Z L_t
  through the shared part gives ∇ L_t of every shared variable exactly (what the representation
  scope relies on; an MoE whose gates read the features directly must put them in Z)."""
  model, features = build(name, mixed_tasks(2))
  with tf.GradientTape(persistent=True) as tape:
    outputs, representation = model.forward(features, training=False)
    scalars = [tf.reduce_sum(out**2) for out in outputs.values()]
  for scalar in scalars:
    direct = tape.gradient(scalar, model.shared_variables)
    via_z = tape.gradient(
      representation, model.shared_variables, output_gradients=tape.gradient(scalar, representation)
    )
    for variable, got, want in zip(model.shared_variables, via_z, direct):
      got, want = tf.convert_to_tensor(got).numpy(), tf.convert_to_tensor(want).numpy()
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=variable.path)


def test_the_connectivity_check_catches_a_wrong_declaration():
  """The check above can fail: a head declared shared is reached by one task only."""
  task_specs = mixed_tasks(2)
  model, features = build("shared_bottom", task_specs)
  reached, _ = reach(model, features)
  head = model.task_variables(task_specs[0].name)[0]
  assert reached[id(head)] == {task_specs[0].name}
  assert all(len(reached[id(v)]) == 2 for v in model.shared_variables)


SMOKE_TASKS = mixed_tasks(2)
SMOKE_BUNDLE = make_bundle(SMOKE_TASKS, num_train=64, num_eval=32)


# A balancer sees an architecture only through what the step hands it, so every path of the step is
# run with every architecture: no per-task gradients (fixed), joint variables (uncertainty), a draw in
# begin_step (rlw), the losses after the update (famo), the GradNorm layer (gradnorm), the shared
# variables' Gramian (mgda) and aggregate (pcgrad, random orders), state shaped like the shared
# variables (db_mtl), and the representation scope (mgda@representation, graddrop reading Z's rows).
# Every balancer × shared_bottom is test_compilation's XLA-vs-graph test; the full product for the other
# architectures would cost the suite ~25 s more for no path not covered here. Dropout and L2 are on
# (an L2 penalty does not reach the biases: that once crashed every aggregating balancer).
ENGINE_PATHS = [
  "fixed",
  "uncertainty",
  "rlw",
  "famo",
  "gradnorm",
  "mgda",
  "pcgrad",
  "db_mtl",
  "mgda@representation",
  "graddrop",
]


@pytest.mark.parametrize("balancer", ENGINE_PATHS)
@pytest.mark.parametrize("name", [n for n in ARCHITECTURES.names() if n != "shared_bottom"])
def test_every_balancer_path_trains_every_architecture(name, balancer):
  balancer, _, scope = balancer.partition("@")
  config = build_config(
    model=name,
    model_params={"dropout": 0.1, "l2": 1e-4},
    balancer=balancer,
    balancer_params={"gradient_scope": scope} if scope else {},
    loop={"train_steps": 4, "steps_per_loop": 4},
  )
  parts = components_lib.build(config, SMOKE_BUNDLE)
  before = [v.numpy().copy() for v in parts.model.shared_variables]
  logs = parts.train_loop.run(4)
  assert np.all(np.isfinite(logs["losses"])) and bool(logs["healthy"]), logs
  assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, parts.model.shared_variables))


def test_mmoe_gates_sum_to_one_and_report_expert_utilization():
  model, features = build("mmoe", mixed_tasks(2), num_experts=3)
  encoded = model.encoder(features)
  for gates in model.gate_weights(encoded).values():
    np.testing.assert_allclose(gates.numpy().sum(axis=1), 1.0, rtol=1e-6)
    assert gates.shape == (BATCH, 3)
  summaries = model.summaries(features)
  assert sorted(summaries) == sorted(f"gate/{t}/expert_{e}" for t in ("reg0", "cls1") for e in range(3))
  for task, gates in model.gate_weights(encoded).items():
    means = [float(summaries[f"gate/{task}/expert_{e}"]) for e in range(3)]
    np.testing.assert_allclose(means, gates.numpy().mean(axis=0), rtol=1e-6)
    assert sum(means) == pytest.approx(1.0, rel=1e-6)


def test_the_train_loop_logs_the_architectures_summaries():
  config = build_config(model="mmoe", model_params={"num_experts": 2}, loop={"train_steps": 4, "steps_per_loop": 4})
  parts = components_lib.build(config, SMOKE_BUNDLE)
  logs = parts.train_loop.run(4)
  for task in SMOKE_TASKS:
    shares = [float(logs["diagnostics"][f"gate/{task.name}/expert_{e}"]) for e in range(2)]
    assert sum(shares) == pytest.approx(1.0, rel=1e-5) and min(shares) > 0


@pytest.mark.parametrize("name", [n for n in ARCHITECTURES.names() if n != "shared_bottom"])
def test_a_restored_checkpoint_continues_exactly(tmp_path, name):
  """Dropout on: the checkpoint holds the architecture's layers and their random state (shared-bottom's
  resume is tests/test_balancer_resume.py and the interruption tests)."""
  config = build_config(model=name, model_params={"dropout": 0.2}, loop={"train_steps": 13, "steps_per_loop": 13})
  original = components_lib.build(config, SMOKE_BUNDLE)
  original.train_loop.run(6)
  manager = tf.train.CheckpointManager(original.checkpoint, str(tmp_path / "ckpt"), max_to_keep=1)
  manager.save(checkpoint_number=6)
  original.train_loop.run(7)
  resumed = components_lib.build(config, SMOKE_BUNDLE)
  resumed.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
  resumed.train_loop.run(7)
  assert len(original.model.variables) == len(resumed.model.variables)
  for got, want in zip(resumed.model.variables, original.model.variables):
    np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.path)


def test_cross_stitch_at_identity_is_independent_columns_and_starts_as_the_paper():
  """α = I: each task's output is its own column's, as if trained alone (the other columns do not reach
  it); the default unit has 0.9 on the diagonal and 0.1/(T − 1) elsewhere, rows summing to 1."""
  task_specs = mixed_tasks(3)
  model, features = build("cross_stitch", task_specs, cross_stitch_init=1.0)
  with tf.GradientTape(persistent=True) as tape:
    outputs, _ = model.forward(features)
    scalars = {name: tf.reduce_sum(out**2) for name, out in outputs.items()}
  kernel = model.columns.kernels[0]  # [T, in, out]: column j's first layer is kernel[j]
  for i, name in enumerate(model.names):
    grads = tape.gradient(scalars[name], kernel).numpy()
    for j in range(len(model.names)):
      assert np.any(grads[j] != 0) == (i == j), (name, j)
  # The same output computed by column 1 alone, as plain Dense layers with its slices, no unit in between.
  hidden = model.encoder(features)
  for k, b in zip(model.columns.kernels, model.columns.biases):
    hidden = tf.nn.relu(hidden @ k[1] + b[1])
  np.testing.assert_allclose(
    outputs[model.names[1]].numpy(), model.heads[model.names[1]](hidden).numpy(), rtol=1e-5, atol=1e-7
  )
  default, _ = build("cross_stitch", task_specs)
  for unit in default.units:
    np.testing.assert_allclose(unit.numpy(), [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]], rtol=1e-6)


@pytest.mark.parametrize("per_expert_inputs", [False, True])
def test_an_expert_bank_is_separate_dense_stacks(per_expert_inputs):
  """Float64 NumPy reference: expert i is relu(relu(x_i·K0[i] + b0[i])·K1[i] + b1[i]) with its own slices,
  whether every expert reads one input or each its own; the L2 penalty is the experts' penalties summed;
  each expert's kernel is drawn as Keras's Dense draws its own (Glorot uniform on its own fans)."""
  count, units, l2 = 3, [40, 5], 0.01
  bank = experts_lib.ExpertBank(count, units, l2=l2)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(4, count, 6) if per_expert_inputs else (4, 6))
  bank(tf.constant(x, tf.float32))  # builds
  for k in bank.kernels:
    k.assign(k + 0.1 * rng.normal(size=k.shape))  # biases start at zero: make them (and kernels) arbitrary
  for b in bank.biases:
    b.assign(rng.normal(size=b.shape))
  got = bank(tf.constant(x, tf.float32)).numpy()
  kernels = [k.numpy().astype(np.float64) for k in bank.kernels]
  biases = [b.numpy().astype(np.float64) for b in bank.biases]
  assert got.shape == (4, count, 5)
  for i in range(count):
    hidden = x[:, i] if per_expert_inputs else x
    for kernel, bias in zip(kernels, biases):
      hidden = np.maximum(hidden @ kernel[i] + bias[i], 0.0)
    np.testing.assert_allclose(got[:, i], hidden, rtol=1e-5, atol=1e-6)
  penalty = sum(l2 * np.sum(kernel[i] ** 2) for kernel in kernels for i in range(count))
  assert float(tf.add_n(bank.losses)) == pytest.approx(penalty, rel=1e-5)
  assert bank.matmul_shapes() == [(6, 40)] * count + [(40, 5)] * count
  fresh = experts_lib.ExpertBank(count, units)
  fresh(tf.zeros([1, 6]))
  for kernel, (fan_in, fan_out) in zip(fresh.kernels, [(6, 40), (40, 5)]):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    values = np.abs(kernel.numpy())
    assert values.max() <= limit and values.max() > 0.8 * limit, (values.max(), limit)

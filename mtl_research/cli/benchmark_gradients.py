"""mtl-benchmark's measurements of per-task gradients: how to compute them, and which scope to weigh.

  per-task gradients  the gradients of each task's loss with respect to the shared variables, for one
              batch after another inside one XLA program: T backward passes of a persistent tape (what
              the step does) against one `tape.jacobian` of the loss vector with
              `experimental_use_pfor` (vectorized over the tasks), on the tutorial trunk and on a wide one;
  scopes      each Gramian balancer's loop on the wide trunk with `--gradient_scope=parameters` (T
              backward passes through the trunk) and `representation` (the gradients with respect to
              the trunk's output: one backward pass through the trunk).

Both are timed as the rest of the benchmark: warmed up, then the median of
interleaved repetitions; `benchmark.py` calls them and prints the ratios.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import statistics
import time

import numpy as np
import tensorflow as tf

from mtl_research.balancers import gramian
from mtl_research.train import components as components_lib

WIDE_HIDDEN_UNITS = (1024, 1024)


class PerTaskGradientTimer:
  """Batches/s of computing every task's gradients of the shared variables, one way, in an XLA loop."""

  def __init__(self, parts: components_lib.Components, jacobian: bool, batches: int):
    loop = parts.train_loop
    model, shared = parts.model, parts.model.shared_variables
    rows = np.asarray(loop.order.batches(0, batches), np.int32)
    self.batches = batches

    def gradients(indices):
      features, labels = loop.data.gather(indices)
      with tf.GradientTape(persistent=not jacobian) as tape:
        losses = loop.task_losses(labels, model(features, training=True))
        stacked = tf.stack(losses)
      if jacobian:
        per_variable = tape.jacobian(stacked, shared, experimental_use_pfor=True)  # each [T, *shape]
        return tf.add_n([tf.reduce_sum(tf.square(g)) for g in per_variable])
      return tf.add_n([tf.reduce_sum(tf.square(g)) for loss in losses for g in tape.gradient(loss, shared)])

    def run(block):
      def body(i, total):
        return i + 1, total + gradients(block[i])  # each batch its own rows: nothing to hoist out of the loop

      return tf.while_loop(lambda i, _: i < len(rows), body, (tf.constant(0), tf.constant(0.0)))[1]

    self._block = tf.constant(rows)
    self._run = tf.function(run, jit_compile=True, autograph=False)
    # Compiles, and keeps what it computed: Σ of every squared per-task gradient over the batches,
    # which the two ways must agree on.
    self.total = float(self._run(self._block).numpy())

  def batches_per_s(self) -> float:
    tick = time.perf_counter()
    self._run(self._block).numpy()
    return self.batches / (time.perf_counter() - tick)


def measure_per_task_gradients(
  build: Callable[[Sequence[int]], components_lib.Components],
  widths: Mapping[str, Sequence[int]],
  batches: int,
  repeats: int,
  log: Callable[[str], None],
) -> dict:
  """`per_task_grads_<trunk>_{backward,jacobian}_batches_per_s` and `per_task_grads_<trunk>_backward_vs_jacobian`."""
  timers = {}
  for trunk, units in widths.items():
    parts = build(units)
    for way in ("backward", "jacobian"):
      log(f"compiling per-task gradients by {way} on the {trunk} trunk…")
      timers[f"{trunk}_{way}"] = PerTaskGradientTimer(parts, way == "jacobian", batches)
  samples: dict[str, list[float]] = {key: [] for key in timers}
  for r in range(repeats):
    for key, timer in timers.items():
      log(f"timing per-task gradients, {key.replace('_', ' ')} {r + 1}/{repeats}…")
      samples[key].append(timer.batches_per_s())
  rate = {key: statistics.median(values) for key, values in samples.items()}
  result: dict = {f"per_task_grads_{key}_batches_per_s": value for key, value in rate.items()}
  for trunk in widths:  # > 1: T backward passes are faster than the vectorized Jacobian
    result[f"per_task_grads_{trunk}_backward_vs_jacobian"] = rate[f"{trunk}_backward"] / rate[f"{trunk}_jacobian"]
  result["per_task_grads_samples"] = samples
  return result


def gramian_balancers(names: Sequence[str]) -> list[str]:
  """The balancers of `names` that offer --gradient_scope."""
  from mtl_research.balancers import BALANCERS  # pylint: disable=g-import-not-at-top

  return [name for name in names if any(p.name == gramian.SCOPE_PARAM.name for p in BALANCERS.get(name).params)]


def measure_scopes(
  timer: Callable[[str, str], Callable[[], float]],
  names: Sequence[str],
  repeats: int,
  log: Callable[[str], None],
) -> dict:
  """`<balancer>_wide_<scope>_steps_per_s` and `<balancer>_wide_representation_vs_parameters` (> 1: faster).

  `timer(name, scope)` compiles the loop of balancer `name` on the wide trunk and
  returns its steps/s function.
  """
  timers = {}
  for name in names:
    for scope in (gramian.PARAMETERS, gramian.REPRESENTATION):
      log(f"compiling {name} on the wide trunk, --gradient_scope={scope}…")
      timers[f"{name}_wide_{scope}"] = timer(name, scope)
  samples: dict[str, list[float]] = {key: [] for key in timers}
  for r in range(repeats):
    for key, steps_per_s in timers.items():
      log(f"timing {key.replace('_', ' ')} {r + 1}/{repeats}…")
      samples[key].append(steps_per_s())
  rate = {key: statistics.median(values) for key, values in samples.items()}
  result: dict = {f"{key}_steps_per_s": value for key, value in rate.items()}
  for name in names:
    result[f"{name}_wide_representation_vs_parameters"] = (
      rate[f"{name}_wide_{gramian.REPRESENTATION}"] / rate[f"{name}_wide_{gramian.PARAMETERS}"]
    )
  result["scope_samples"] = samples
  return result

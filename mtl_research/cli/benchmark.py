"""`mtl-benchmark`: training throughput of our compiled loop against the seed recipe.

One invocation measures, on the same data (the `synthetic` dataset: 10 features,
regression `price` + 3-class `kind`) and the same batch size:

  seed fit    the tutorial this project replaces: a functional Keras model
              Input(10) → Dense(128, relu) → Dense(64, relu) → Dense(1), Dense(3, softmax),
              compiled with adam and [mse, sparse_categorical_crossentropy] and trained
              with `model.fit(x, [y1, y2], batch_size, shuffle=True)`;
  tuned fit   the same model compiled with steps_per_execution=100, jit_compile=True
              (a reference: the best plain Keras gets without our loop);
  <balancer>  our loop (`mtl_research.train.components.build` + `TrainLoop.run`) under each
              balancer of --balancers (default: every registered one), once as one XLA
              program (`--jit_compile=on`) and once as a TensorFlow graph (`off`), each
              with its first-call compile time;
  variants    the fixed loop with the hand-written speedups undone, to see whether
              they still pay: Keras's own Adam instead of mtl_research/optim/adam.py (XLA
              and graph), TensorFlow's default executor for the graph loop (whose
              `auto` is single-threaded on a CPU) and the single-threaded one under XLA;
              and the XLA loop with dropout, its masks drawn with the Philox algorithm
              named (ours) and with TensorFlow's `auto_select` (the same bits);
  large       our loop in the default mode on a compute-bound configuration (batch 1024,
              trunk 1024,1024,1024, the two heads), its FLOP/s against a bare `tf.matmul`
              loop of the same total FLOPs per step (the faster of XLA and graph);
  wall        `python -m mtl_research.cli.train` of the default example (2,500 steps) and of
              --wall_long_steps steps, each with --jit_compile=off and auto, in fresh
              processes: wall time with TensorFlow's start-up, and the training time the
              trainer logs (compilation included, start-up excluded).

Each loop measurement is warmed up first (so tracing and compilation are
excluded), then timed --repeats times, interleaved (seed fit, tuned fit,
balancers, seed fit, ...), and the median is reported, because a small machine
is noisy. A balancer's time relative to `fixed` is the median of paired ratios:
each of its repetitions against one of `fixed`'s timed just before it.

Prints a table, and as the last line of stdout one JSON object with the results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
import contextlib
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import (
  app,  # noqa: E402
  flags,  # noqa: E402
)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_research import config as config_lib  # noqa: E402
from mtl_research.balancers import BALANCERS, gramian  # noqa: E402
from mtl_research.cli import benchmark_gradients, benchmark_sweep  # noqa: E402
from mtl_research.cli.common import entry_point, parse_flags  # noqa: E402
from mtl_research.data import DATASETS  # noqa: E402
from mtl_research.data.pipeline import steps_per_epoch  # noqa: E402
from mtl_research.errors import UserError  # noqa: E402
from mtl_research.models import ARCHITECTURES, base  # noqa: E402
from mtl_research.train import compilation  # noqa: E402
from mtl_research.train import components as components_lib  # noqa: E402
from mtl_research.train.train_loop import TrainLoop  # noqa: E402

keras = tf.keras

DATASET = "synthetic"
ARCHITECTURE = "shared_bottom"
BASELINE = "fixed"  # the balancer every other one is compared with
MODES = ("xla", "graph")  # our loop's two forms: --jit_compile=on and off
HIDDEN_UNITS = (128, 64)  # the seed recipe's trunk; ours is built with the same widths
DEFAULT_TRAIN_ROWS = 8000  # the synthetic dataset's default
DATASET_PARAMS = {"num_train": DEFAULT_TRAIN_ROWS, "num_val": 1000, "num_test": 1000, "synthetic_noise": 0.3}
MODEL_PARAMS = {"hidden_units": HIDDEN_UNITS, "dropout": 0.0, "l2": 0.0, "embedding_dim": 8}
TUNED_STEPS_PER_EXECUTION = 100
LARGE_HIDDEN_UNITS = (1024, 1024, 1024)
LARGE_BATCH_SIZE = 1024
LARGE_TRAIN_ROWS = 8192
# Defaults sized for a few minutes on 2 cores.
DEFAULT_REPEATS = 3
DEFAULT_FIT_EPOCHS = 8
DEFAULT_LOOP_STEPS = 1000
DEFAULT_LOOP_CALLS = 15
DEFAULT_WARMUP_STEPS = 200
DEFAULT_BATCH_SIZE = 32
DEFAULT_LARGE_STEPS = 10
DEFAULT_WALL_LONG_STEPS = 20000
DEFAULT_GRADIENT_BATCHES = 200
SCOPE_LOOP_STEPS = 50  # steps per call of the wide trunk's loops (a step there takes milliseconds)
SCOPE_LOOP_CALLS = 2
TRAINED_LINE = re.compile(r"^Trained (\d+) steps in ([0-9.]+) s", re.MULTILINE)

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the benchmark's flags in `flag_values`; run() calls it when the program starts.

  Not on import: mtl-ablate has a --balancers of its own, and a process that
  imports both modules (a test session) must not define a flag twice. The
  other names are chosen not to clash with mtl_research.flags (the trainer's
  flags and every component Param).
  """
  flags.DEFINE_list(
    "balancers",
    None,
    f"Balancers whose loop is timed; default: every registered one "
    f"(now: {','.join(BALANCERS.names())}). '{BASELINE}' is always included.",
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "repeats",
    DEFAULT_REPEATS,
    "Timed repetitions of every measurement; the median is reported.",
    lower_bound=1,
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "fit_epochs",
    DEFAULT_FIT_EPOCHS,
    "Epochs of Keras fit per timed repetition (after a 1-epoch warm-up).",
    lower_bound=1,
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "loop_steps", DEFAULT_LOOP_STEPS, "Steps per call of our compiled loop.", lower_bound=1, flag_values=flag_values
  )
  flags.DEFINE_integer(
    "loop_calls", DEFAULT_LOOP_CALLS, "Calls of our loop per timed repetition.", lower_bound=1, flag_values=flag_values
  )
  flags.DEFINE_integer(
    "warmup_steps",
    DEFAULT_WARMUP_STEPS,
    "Steps of the untimed warm-up call of our loop (after its compilation).",
    lower_bound=1,
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "bench_batch_size", DEFAULT_BATCH_SIZE, "Batch size of every measurement.", lower_bound=1, flag_values=flag_values
  )
  flags.DEFINE_integer(
    "bench_train_rows",
    DEFAULT_TRAIN_ROWS,
    "Rows of the synthetic train split (an epoch of fit).",
    lower_bound=1,
    flag_values=flag_values,
  )
  flags.DEFINE_integer("bench_seed", 0, "Seed of the data, the models and the shuffles.", flag_values=flag_values)
  flags.DEFINE_list(
    "bench_hidden_units",
    [str(units) for units in HIDDEN_UNITS],
    "Trunk widths of our loop's model (the seed recipe keeps the tutorial's 128,64).",
    flag_values=flag_values,
  )
  flags.DEFINE_list(
    "bench_models",
    [],
    "Architectures whose loop is also timed under fixed and gradnorm against shared-bottom's, with their "
    f"FLOPs per step (now registered: {','.join(ARCHITECTURES.names())}); default: none.",
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "bench_models_batch_size",
    0,
    "Batch size of the --bench_models comparison (0: --bench_batch_size); a large one shows the FLOPs' share "
    "of the step, a small one the per-operation overhead's.",
    lower_bound=0,
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "large_steps",
    DEFAULT_LARGE_STEPS,
    "Steps per timed repetition of the large configuration (0: skip it).",
    lower_bound=0,
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "gradient_batches",
    DEFAULT_GRADIENT_BATCHES,
    "Batches per timed repetition of the per-task gradient measurement; also turns on the Gramian "
    "balancers' scope comparison on the wide trunk (0: skip both).",
    lower_bound=0,
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "wall_long_steps",
    DEFAULT_WALL_LONG_STEPS,
    "Steps of the long wall-time run of the default example (0: skip the wall-time runs).",
    lower_bound=0,
    flag_values=flag_values,
  )

  flags.DEFINE_bool(
    "sweep",
    False,
    "Measure packed training instead (benchmark_sweep.py): S runs in one compiled loop against one alone, and "
    "a sweep one process per run against the same sweep packed.",
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "sweep_seeds",
    benchmark_sweep.DEFAULT_SEEDS,
    "--sweep: seeds (runs of a pack).",
    lower_bound=1,
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "sweep_steps", benchmark_sweep.DEFAULT_STEPS, "--sweep: steps of every run.", lower_bound=1, flag_values=flag_values
  )
  flags.DEFINE_list(
    "sweep_balancers",
    list(benchmark_sweep.DEFAULT_BALANCERS),
    "--sweep: balancers of the timed sweep.",
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "sweep_parallel",
    benchmark_sweep.DEFAULT_PARALLEL,
    "--sweep: --parallel of both sweeps (0: skip the sweep, time the packed loop only).",
    lower_bound=0,
    flag_values=flag_values,
  )


def _stderr(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def balancer_params(name: str, overrides: dict | None = None) -> config_lib.ComponentConfig:
  """`name` with the defaults of the Params it declares, then `overrides`."""
  params = {p.name: p.parse(p.default) for p in BALANCERS.get(name).params}
  return config_lib.ComponentConfig(name, config_lib.frozen_mapping({**params, **(overrides or {})}))


def make_config(
  balancer: str,
  batch_size: int,
  seed: int,
  num_train: int,
  train_steps: int,
  steps_per_loop: int = DEFAULT_LOOP_STEPS,
  jit_compile: str = config_lib.JitMode.AUTO,
  hidden_units: Sequence[int] = HIDDEN_UNITS,
  executor: str = config_lib.Executor.AUTO,
  dropout: float = 0.0,
  balancer_overrides: dict | None = None,
  model: str = ARCHITECTURE,
) -> config_lib.Config:
  """The Config of one timed loop: library defaults plus the benchmark's data and model.

  `model` other than shared-bottom: that architecture at its defaults (no dropout).
  """
  if model == ARCHITECTURE:
    model_params = dict(MODEL_PARAMS, hidden_units=tuple(hidden_units), dropout=dropout)
  else:
    model_params = {**{p.name: p.parse(p.default) for p in ARCHITECTURES.get(model).params}, "dropout": dropout}
  return config_lib.Config(
    run_dir="",  # nothing is written
    seed=seed,
    dataset=config_lib.ComponentConfig(DATASET, config_lib.frozen_mapping(dict(DATASET_PARAMS, num_train=num_train))),
    model=config_lib.ComponentConfig(model, config_lib.frozen_mapping(model_params)),
    balancer=balancer_params(balancer, balancer_overrides),
    optimizer=config_lib.OptimizerConfig(),
    loop=config_lib.LoopConfig(
      batch_size=batch_size,
      train_steps=train_steps,
      steps_per_loop=steps_per_loop,
      jit_compile=jit_compile,
      executor=executor,
    ),
  )


def resolve_balancers(names: Sequence[str] | None) -> list[str]:
  """The balancers to time, baseline first; raises UserError on an unknown name."""
  registered = BALANCERS.names()
  names = list(registered if not names else names)
  unknown = [n for n in names if n not in registered]
  if unknown:
    raise UserError(
      f"--balancers names {', '.join(map(repr, unknown))}, not registered (registered: {', '.join(registered)})."
    )
  ordered = [BASELINE] + [n for n in names if n != BASELINE]
  return list(dict.fromkeys(ordered))


def default_mode() -> str:
  """The mode --jit_compile=auto chooses for one device on this machine."""
  return "xla" if compilation.resolve(config_lib.JitMode.AUTO, None)[0] else "graph"


def synthetic_bundle(num_train: int, seed: int):
  return DATASETS.get(DATASET).component(config_lib.frozen_mapping(dict(DATASET_PARAMS, num_train=num_train)), seed)


# --- the seed recipe ---------------------------------------------------------


def seed_model(num_features: int, num_classes: int, seed: int, **compile_args) -> tf.keras.Model:
  """The tutorial's functional two-head model, compiled as the tutorial does."""
  keras.utils.set_random_seed(seed)
  inputs = keras.Input(shape=(num_features,))
  hidden = inputs
  for units in HIDDEN_UNITS:
    hidden = keras.layers.Dense(units, activation="relu")(hidden)
  price = keras.layers.Dense(1)(hidden)
  kind = keras.layers.Dense(num_classes, activation="softmax")(hidden)
  model = keras.Model(inputs, [price, kind])
  model.compile(optimizer="adam", loss=["mse", "sparse_categorical_crossentropy"], **compile_args)
  return model


class FitTimer:
  """Times `model.fit` epochs; the first (warm-up) epoch builds and traces."""

  def __init__(self, model: tf.keras.Model, x: np.ndarray, ys: list[np.ndarray], batch_size: int, epochs: int):
    self.model, self.x, self.ys = model, x, ys
    self.batch_size, self.epochs = batch_size, epochs
    self.batches = epochs * -(-len(x) // batch_size)  # fit keeps the short last batch
    self._fit(1)

  def _fit(self, epochs: int) -> None:
    self.model.fit(self.x, self.ys, batch_size=self.batch_size, epochs=epochs, shuffle=True, verbose=0)

  def steps_per_s(self) -> float:
    tick = time.perf_counter()
    self._fit(self.epochs)  # fit returns after its last step has run
    return self.batches / (time.perf_counter() - tick)


# --- our loop ----------------------------------------------------------------


class LoopTimer:
  """Times calls of our compiled loop under one configuration, after compiling and a warm-up."""

  def __init__(
    self,
    config: config_lib.Config,
    bundle,
    warmup_steps: int,
    steps: int,
    calls: int,
    keras_adam: bool = False,
  ):
    self.name = config.balancer.name
    self.parts = components_lib.build(config, bundle)
    if keras_adam:
      self.parts.train_loop = with_keras_adam(self.parts.train_loop, config.optimizer.learning_rate)
    tick = time.perf_counter()
    self.parts.train_loop.compile()  # traces (and under XLA compiles) the loop, running no step
    self.compile_s = time.perf_counter() - tick
    self.steps, self.calls = steps, calls
    self._call(warmup_steps)

  def _call(self, num_steps: int) -> dict:
    # The logs come back as NumPy values: the clock sees the whole loop.
    return self.parts.train_loop.run(num_steps)

  def steps_per_s(self) -> float:
    tick = time.perf_counter()
    for _ in range(self.calls):
      logs = self._call(self.steps)
    elapsed = time.perf_counter() - tick
    if not np.isfinite(logs["objective"]):
      raise RuntimeError(f"{self.name}: the objective is not finite ({logs['objective']}).")
    return self.steps * self.calls / elapsed


def with_keras_adam(loop: TrainLoop, learning_rate: float) -> TrainLoop:
  """`loop` with `keras.optimizers.Adam` in place of mtl_research's Adam (same arithmetic, other op count)."""
  optimizer = tf.keras.optimizers.Adam(learning_rate)
  optimizer.build(loop.trained_variables)
  return TrainLoop(
    loop.model,
    loop.balancer,
    optimizer,
    loop.data,
    loop.order,
    loop.global_step,
    loop.steps_per_call,
    loop.log_grad_conflict,
    loop.requested_executor,
    loop.nan_policy,
    None,
    loop.jit_compile,
  )


@contextlib.contextmanager
def dropout_rng_alg(alg: str) -> Iterator[None]:
  """Every Dropout layer traced in the block draws its masks with `alg`."""
  saved = base.Dropout.rng_alg
  base.Dropout.rng_alg = alg
  try:
    yield
  finally:
    base.Dropout.rng_alg = saved


@dataclasses.dataclass(frozen=True)
class Variant:
  """The fixed loop with one hand-written speedup undone (or, for `dropout`, the setting it speeds up)."""

  key: str
  xla: bool
  executor: str = config_lib.Executor.AUTO
  keras_adam: bool = False  # Keras's Adam instead of mtl_research/optim/adam.py
  dropout: float = 0.0
  rng_alg: str = base.Dropout.rng_alg  # of every Dropout layer


DROPOUT_RATE = 0.2
VARIANTS = (
  Variant("fixed_xla_keras_adam", True, keras_adam=True),
  Variant("fixed_graph_keras_adam", False, keras_adam=True),
  Variant("fixed_graph_default_executor", False, executor=config_lib.Executor.DEFAULT),
  Variant("fixed_xla_single_threaded", True, executor=config_lib.Executor.SINGLE_THREADED),
  Variant("fixed_xla_dropout", True, dropout=DROPOUT_RATE),
  Variant("fixed_xla_dropout_auto_rng", True, dropout=DROPOUT_RATE, rng_alg="auto_select"),
)


def dense_flops(layer_shapes: Sequence[tuple[int, int]], batch_size: int) -> int:
  """FLOPs of one training step's matrix products for Dense layers of (inputs, units), in order.

  Forward x·W (2·B·n·m per layer), the kernel gradient xᵀ·δ (the same) and the
  input gradient δ·Wᵀ (the same, except for the first layer: nothing needs the
  gradient of the data). Element-wise work (activations, Adam) is left out;
  it is O(B·units + parameters), three orders below the products here.
  """
  first = layer_shapes[0]
  total = sum(3 * 2 * batch_size * n * m for n, m in layer_shapes)
  return total - 2 * batch_size * first[0] * first[1]


def model_dense_shapes(model) -> list[tuple[int, int]]:
  """(inputs, units) of every matrix product of a model's layers, in the order Keras tracks them.

  A Dense layer is one product; a layer with `matmul_shapes()` (an `ExpertBank`) lists its experts' own.
  The first layer's input gradient is left out of `dense_flops` (nothing needs the data's gradient): for an
  architecture whose several first layers read the input it counts that gradient for all but one, a
  slight overestimate of its FLOPs.
  """
  shapes = []
  for layer in model._flatten_layers(include_self=False):
    if isinstance(layer, tf.keras.layers.Dense):
      shapes.append((int(layer.kernel.shape[0]), int(layer.kernel.shape[1])))
    elif hasattr(layer, "matmul_shapes"):
      shapes.extend(layer.matmul_shapes())
  return shapes


class MatmulTimer:
  """A loop of bare `tf.matmul`s [batch, width]·[width, width] of `flops` FLOPs per step."""

  def __init__(self, batch_size: int, width: int, flops: int, jit_compile: bool, seed: int):
    rng = np.random.default_rng(seed)
    self.per_matmul = 2 * batch_size * width * width
    self.count = max(1, round(flops / self.per_matmul))
    self.x = tf.constant(rng.normal(size=(batch_size, width)).astype(np.float32))
    # An orthogonal matrix keeps the repeated product's scale (no overflow, no denormals).
    self.w = tf.constant(np.linalg.qr(rng.normal(size=(width, width)))[0].astype(np.float32))

    def products(x, w, steps):
      total = steps * self.count
      return tf.while_loop(lambda i, _: i < total, lambda i, y: (i + 1, tf.matmul(y, w)), (tf.constant(0), x))[1]

    self._run = tf.function(products, jit_compile=jit_compile)
    self._run(self.x, self.w, tf.constant(1)).numpy()

  def flops_per_s(self, steps: int) -> float:
    tick = time.perf_counter()
    self._run(self.x, self.w, tf.constant(steps)).numpy()
    return steps * self.count * self.per_matmul / (time.perf_counter() - tick)


def time_paired(
  timers: Mapping[Any, Callable[[], float]],
  compared: Mapping[Any, Any],
  repeats: int,
  label: Callable[[Any], str],
  log: Callable[[str], None],
) -> tuple[dict, dict]:
  """Times every timer `repeats` times, interleaved; ({key: steps/s samples}, {key: paired ratios}).

  A step of a few tens of µs is timed over ~0.3 s, and this machine's speed drifts between runs of
  seconds (measured: `fixed` 31k-56k steps/s within one invocation, slow and fast spells each lasting
  several balancers' timings). So each key of `compared` is timed right after its baseline
  `compared[key]`, and its ratio is the baseline's steps/s over its own, repetition by repetition.
  """
  samples: dict = {key: [] for key in timers}
  paired: dict = {key: [] for key in compared}
  for r in range(repeats):
    for key, steps_per_s in timers.items():
      log(f"timing {label(key)} {r + 1}/{repeats}…")
      baseline = timers[compared[key]]() if key in compared else None
      samples[key].append(steps_per_s())
      if baseline is not None:
        paired[key].append(baseline / samples[key][-1])
  return samples, paired


MODEL_BALANCERS = (BASELINE, "gradnorm")


def measure_models(
  models: Sequence[str],
  bundle,
  batch_size: int,
  seed: int,
  num_train: int,
  warmup_steps: int,
  loop_steps: int,
  loop_calls: int,
  repeats: int,
  log: Callable[[str], None],
) -> dict:
  """Each architecture's loop (default mode) under fixed and gradnorm, against shared-bottom's.

  Keys: `<model>_<balancer>_steps_per_s`, `<model>_<balancer>_time_vs_shared_bottom` (the median of
  paired ratios, each repetition against shared-bottom's timed just before it), `<model>_parameters`,
  `<model>_flops_per_step` (the Dense layers' matrix products, `dense_flops`) and
  `<model>_flops_vs_shared_bottom`: a time ratio well above the FLOPs ratio is overhead to explain.
  """
  mode = default_mode()
  total = warmup_steps + repeats * loop_calls * loop_steps * len(models)
  timers, result = {}, {}
  for model in (ARCHITECTURE, *[m for m in models if m != ARCHITECTURE]):
    for name in MODEL_BALANCERS:
      log(f"compiling our loop, model {model}, balancer {name}, {mode}…")
      config = make_config(
        name,
        batch_size,
        seed,
        num_train,
        total,
        max(loop_steps, warmup_steps),
        config_lib.JitMode.ON if mode == "xla" else config_lib.JitMode.OFF,
        model=model,
      )
      timer = LoopTimer(config, bundle, warmup_steps, loop_steps, loop_calls)
      timers[(model, name)] = timer.steps_per_s
      counts = timer.parts.model.parameter_counts()
      result[f"{model}_parameters"] = counts["total"]
      result[f"{model}_flops_per_step"] = dense_flops(model_dense_shapes(timer.parts.model), batch_size)
  compared = {(model, name): (ARCHITECTURE, name) for model, name in timers if model != ARCHITECTURE}
  samples, paired = time_paired(timers, compared, repeats, lambda key: f"model {key[0]}, balancer {key[1]}", log)
  for (model, name), values in samples.items():
    result[f"{model}_{name}_steps_per_s"] = statistics.median(values)
  for (model, name), values in paired.items():
    result[f"{model}_{name}_time_vs_{ARCHITECTURE}"] = statistics.median(values)
  for model in models:
    result[f"{model}_flops_vs_{ARCHITECTURE}"] = (
      result[f"{model}_flops_per_step"] / result[f"{ARCHITECTURE}_flops_per_step"]
    )
  result["models"] = [ARCHITECTURE, *[m for m in models if m != ARCHITECTURE]]
  return result


def measure_large(steps: int, repeats: int, seed: int, log: Callable[[str], None]) -> dict:
  """Our loop (default mode) on the large configuration, against bare matmuls of the same FLOPs."""
  mode = default_mode()
  bundle = synthetic_bundle(LARGE_TRAIN_ROWS, seed)
  bundle.validate(LARGE_BATCH_SIZE)
  config = make_config(
    BASELINE,
    LARGE_BATCH_SIZE,
    seed,
    LARGE_TRAIN_ROWS,
    2 * (repeats + 1) * steps,
    steps,
    config_lib.JitMode.ON if mode == "xla" else config_lib.JitMode.OFF,
    LARGE_HIDDEN_UNITS,
  )
  log(f"large configuration: compiling our loop ({mode}) and bare matmuls…")
  loop = LoopTimer(config, bundle, 1, steps, 1)
  flops = dense_flops(model_dense_shapes(loop.parts.model), LARGE_BATCH_SIZE)
  matmuls = {jit: MatmulTimer(LARGE_BATCH_SIZE, LARGE_HIDDEN_UNITS[-1], flops, jit, seed) for jit in (True, False)}
  ours: list[float] = []
  bare: dict[bool, list[float]] = {jit: [] for jit in matmuls}
  for r in range(repeats):
    log(f"timing the large configuration {r + 1}/{repeats}…")
    ours.append(loop.steps_per_s() * flops)
    for jit, timer in matmuls.items():
      bare[jit].append(timer.flops_per_s(steps))
  ours_rate = statistics.median(ours)
  bare_rate = {jit: statistics.median(values) for jit, values in bare.items()}
  best = max(bare_rate.values())
  return {
    "large_mode": mode,
    "large_flops_per_step": flops,
    "large_steps_per_s": ours_rate / flops,
    "large_flops_per_s": ours_rate,
    "large_compile_s": loop.compile_s,
    "matmul_xla_flops_per_s": bare_rate[True],
    "matmul_graph_flops_per_s": bare_rate[False],
    "flops_fraction_of_matmul": ours_rate / best,
    "large_samples": {
      "ours_flops_per_s": ours,
      "matmul_xla_flops_per_s": bare[True],
      "matmul_graph_flops_per_s": bare[False],
    },
  }


# --- per-task gradients and the Gramian balancers' scopes (benchmark_gradients.py) ---------------


def measure_gradients(
  names: Sequence[str],
  bundle,
  batch_size: int,
  seed: int,
  num_train: int,
  hidden_units: Sequence[int],
  batches: int,
  repeats: int,
  log: Callable[[str], None],
) -> dict:
  """Per-task gradients by backward passes vs a vectorized Jacobian; each Gramian balancer's two scopes."""

  def build(units: Sequence[int]) -> components_lib.Components:
    config = make_config(BASELINE, batch_size, seed, num_train, batches, batches, config_lib.JitMode.ON, units)
    return components_lib.build(config, bundle)

  widths = {"tutorial": tuple(hidden_units), "wide": benchmark_gradients.WIDE_HIDDEN_UNITS}
  result = benchmark_gradients.measure_per_task_gradients(build, widths, batches, repeats, log)
  mode = config_lib.JitMode.ON if default_mode() == "xla" else config_lib.JitMode.OFF
  total = SCOPE_LOOP_STEPS * (1 + repeats * SCOPE_LOOP_CALLS)

  def timer(name: str, scope: str) -> Callable[[], float]:
    config = make_config(
      name,
      batch_size,
      seed,
      num_train,
      total,
      SCOPE_LOOP_STEPS,
      mode,
      benchmark_gradients.WIDE_HIDDEN_UNITS,
      balancer_overrides={gramian.SCOPE_PARAM.name: scope},
    )
    return LoopTimer(config, bundle, SCOPE_LOOP_STEPS, SCOPE_LOOP_STEPS, SCOPE_LOOP_CALLS).steps_per_s

  scoped = benchmark_gradients.gramian_balancers(names)
  if scoped:
    result.update(benchmark_gradients.measure_scopes(timer, scoped, repeats, log))
  result["scope_balancers"] = scoped
  return result


# --- wall time of whole runs ------------------------------------------------------


def _train_process(steps: int | None, jit_compile: str, run_dir: str) -> tuple[float, float]:
  """(wall seconds, training seconds logged by the trainer) of one fresh `mtl-train` process."""
  args = [sys.executable, "-m", "mtl_research.cli.train", f"--run_dir={run_dir}", f"--jit_compile={jit_compile}"]
  if steps is not None:
    args.append(f"--train_steps={steps}")
  tick = time.perf_counter()
  proc = subprocess.run(
    args, capture_output=True, text=True, check=False, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  )
  wall = time.perf_counter() - tick
  if proc.returncode != 0:
    raise RuntimeError(f"the training run failed: {proc.stderr[-2000:]}")
  trained = TRAINED_LINE.search(proc.stdout)
  if trained is None:
    raise RuntimeError(f"the training run logged no 'Trained ... steps in ... s' line: {proc.stdout[-2000:]}")
  return wall, float(trained.group(2))


def measure_wall(long_steps: int, log: Callable[[str], None]) -> dict:
  """The default example (2,500 steps) and a `long_steps` run, graph vs auto, in fresh processes."""
  result: dict = {}
  with tempfile.TemporaryDirectory() as scratch:
    for label, steps in (("default_run", None), ("long_run", long_steps)):
      for mode in (config_lib.JitMode.OFF, config_lib.JitMode.AUTO):
        log(f"wall time: {label.replace('_', ' ')} with --jit_compile={mode}…")
        wall, trained = _train_process(steps, mode, os.path.join(scratch, f"{label}-{mode}"))
        result[f"{label}_{mode}_wall_s"] = wall
        result[f"{label}_{mode}_train_s"] = trained
    result["default_run_auto_minus_off_wall_s"] = result["default_run_auto_wall_s"] - result["default_run_off_wall_s"]
    result["long_run_auto_vs_off_train_time"] = result["long_run_auto_train_s"] / result["long_run_off_train_s"]
    result["long_run_steps"] = long_steps
  return result


# --- the benchmark -----------------------------------------------------------


def measure(
  balancers: Sequence[str] | None = None,
  repeats: int = DEFAULT_REPEATS,
  fit_epochs: int = DEFAULT_FIT_EPOCHS,
  loop_steps: int = DEFAULT_LOOP_STEPS,
  loop_calls: int = DEFAULT_LOOP_CALLS,
  warmup_steps: int = DEFAULT_WARMUP_STEPS,
  batch_size: int = DEFAULT_BATCH_SIZE,
  num_train: int = DEFAULT_TRAIN_ROWS,
  seed: int = 0,
  large_steps: int = DEFAULT_LARGE_STEPS,
  hidden_units: Sequence[int] = HIDDEN_UNITS,
  wall_long_steps: int = DEFAULT_WALL_LONG_STEPS,
  gradient_batches: int = DEFAULT_GRADIENT_BATCHES,
  models: Sequence[str] = (),
  models_batch_size: int = 0,
  log: Callable[[str], None] = _stderr,
) -> dict:
  """Runs every measurement and returns the results (the JSON line's object).

  Keys: `seed_fit_steps_per_s`, `tuned_fit_steps_per_s`, `<balancer>_<mode>_steps_per_s`
  and `<balancer>_<mode>_compile_s` for mode xla and graph (medians over
  `repeats`), `<balancer>_steps_per_s` (the default mode), `ratio_fixed_vs_seed_fit`
  and `ratio_fixed_vs_tuned_fit` (default mode), `ratio_xla_vs_graph` (fixed),
  `<balancer>_time_vs_fixed` (step-time ratio in the default mode, for balancers
  other than fixed) and `<balancer>_<mode>_time_vs_fixed`, the variants
  (`<variant>_steps_per_s`, `<variant>_compile_s`) and their ratios
  `adam_ours_vs_keras_<mode>`, `executor_auto_vs_default_graph` and
  `executor_single_vs_default_xla`, `dropout_philox_vs_auto_xla`, the large configuration's
  `flops_fraction_of_matmul` and its parts (`large_*`, `matmul_*`), the
  wall-time runs (`default_run_*`, `long_run_*`), the
  settings, and `samples` (every repetition's steps/s).
  """
  names = resolve_balancers(balancers)
  bundle = synthetic_bundle(num_train, seed)
  bundle.validate(batch_size)
  loop_total = warmup_steps + repeats * loop_calls * loop_steps
  mode = default_mode()

  x = bundle.train.features["numeric"]
  ys = [bundle.train.labels[task.name] for task in bundle.tasks]
  num_classes = next(task.num_classes for task in bundle.tasks if task.name == "kind")

  timers: dict[str, Callable[[], float]] = {}
  compile_s: dict[str, float] = {}
  log("warming up seed fit (1 epoch)…")
  timers["seed_fit"] = FitTimer(seed_model(x.shape[1], num_classes, seed), x, ys, batch_size, fit_epochs).steps_per_s
  log("warming up tuned fit (1 epoch, XLA compile)…")
  tuned = seed_model(x.shape[1], num_classes, seed, steps_per_execution=TUNED_STEPS_PER_EXECUTION, jit_compile=True)
  timers["tuned_fit"] = FitTimer(tuned, x, ys, batch_size, fit_epochs).steps_per_s
  # Each other balancer's repetition is paired with one of the baseline's, timed just before it.
  paired_total = loop_total + repeats * loop_calls * loop_steps * (len(names) - 1)
  for name in names:
    for loop_mode in MODES:
      key = f"{name}_{loop_mode}"
      log(f"compiling our loop, balancer {name}, {loop_mode}, and warming up ({warmup_steps} steps)…")
      config = make_config(
        name,
        batch_size,
        seed,
        num_train,
        paired_total if name == BASELINE else loop_total,
        max(loop_steps, warmup_steps),
        config_lib.JitMode.ON if loop_mode == "xla" else config_lib.JitMode.OFF,
        hidden_units,
      )
      timer = LoopTimer(config, bundle, warmup_steps, loop_steps, loop_calls)
      timers[key], compile_s[key] = timer.steps_per_s, timer.compile_s

  for variant in VARIANTS:
    log(f"compiling the variant {variant.key.replace('_', ' ')}…")
    config = make_config(
      BASELINE,
      batch_size,
      seed,
      num_train,
      loop_total,
      max(loop_steps, warmup_steps),
      config_lib.JitMode.ON if variant.xla else config_lib.JitMode.OFF,
      hidden_units,
      executor=variant.executor,
      dropout=variant.dropout,
    )
    with dropout_rng_alg(variant.rng_alg):  # the loop is traced (and compiled) here, once
      timer = LoopTimer(config, bundle, warmup_steps, loop_steps, loop_calls, keras_adam=variant.keras_adam)
    timers[variant.key], compile_s[variant.key] = timer.steps_per_s, timer.compile_s

  compared = {f"{n}_{m}": f"{BASELINE}_{m}" for n in names if n != BASELINE for m in MODES}
  samples, paired = time_paired(timers, compared, repeats, lambda key: key.replace("_", " "), log)

  rate = {key: statistics.median(values) for key, values in samples.items()}
  result: dict = {f"{key}_steps_per_s": value for key, value in rate.items()}
  result["paired_time_vs_fixed"] = paired
  result.update({f"{key}_compile_s": value for key, value in compile_s.items()})
  result.update({f"{name}_steps_per_s": rate[f"{name}_{mode}"] for name in names})
  result["default_mode"] = mode
  result["ratio_fixed_vs_seed_fit"] = rate[f"{BASELINE}_{mode}"] / rate["seed_fit"]
  result["ratio_fixed_vs_tuned_fit"] = rate[f"{BASELINE}_{mode}"] / rate["tuned_fit"]
  result["ratio_xla_vs_graph"] = rate[f"{BASELINE}_xla"] / rate[f"{BASELINE}_graph"]
  # > 1: the hand-written piece is faster than what it replaces.
  result["adam_ours_vs_keras_xla"] = rate[f"{BASELINE}_xla"] / rate["fixed_xla_keras_adam"]
  result["adam_ours_vs_keras_graph"] = rate[f"{BASELINE}_graph"] / rate["fixed_graph_keras_adam"]
  result["executor_auto_vs_default_graph"] = rate[f"{BASELINE}_graph"] / rate["fixed_graph_default_executor"]
  result["executor_single_vs_default_xla"] = rate["fixed_xla_single_threaded"] / rate[f"{BASELINE}_xla"]
  result["dropout_philox_vs_auto_xla"] = rate["fixed_xla_dropout"] / rate["fixed_xla_dropout_auto_rng"]
  for name in names:
    if name == BASELINE:
      continue
    for loop_mode in MODES:  # = step time of name / step time of fixed, in that mode: the median paired ratio
      result[f"{name}_{loop_mode}_time_vs_fixed"] = statistics.median(paired[f"{name}_{loop_mode}"])
    result[f"{name}_time_vs_fixed"] = result[f"{name}_{mode}_time_vs_fixed"]
  if gradient_batches:
    result.update(
      measure_gradients(names, bundle, batch_size, seed, num_train, hidden_units, gradient_batches, repeats, log)
    )
  if models:
    model_batch = models_batch_size or batch_size
    bundle.validate(model_batch)
    result.update(
      measure_models(models, bundle, model_batch, seed, num_train, warmup_steps, loop_steps, loop_calls, repeats, log)
    )
    result["models_batch_size"] = model_batch
  if large_steps:
    result.update(measure_large(large_steps, repeats, seed, log))
  if wall_long_steps:
    result.update(measure_wall(wall_long_steps, log))
  result.update(
    {
      "balancers": names,
      "batch_size": batch_size,
      "hidden_units": list(hidden_units),
      "train_rows": len(bundle.train),
      "fit_steps_per_epoch": -(-len(bundle.train) // batch_size),
      "loop_steps_per_epoch": steps_per_epoch(len(bundle.train), batch_size),
      "fit_epochs": fit_epochs,
      "loop_steps": loop_steps,
      "loop_calls": loop_calls,
      "repeats": repeats,
      "cpu_count": os.cpu_count(),
      "gpus": len(tf.config.list_physical_devices("GPU")),
      "tf_version": tf.__version__,
      "samples": samples,
    }
  )
  return result


def format_table(result: dict) -> str:
  """One row per measured thing: steps/s, ms/step, speed relative to the seed fit, compile time."""
  seed_rate = result["seed_fit_steps_per_s"]
  rows = [
    ("seed fit (Keras fit)", seed_rate, None),
    (f"tuned fit (spe={TUNED_STEPS_PER_EXECUTION}, XLA)", result["tuned_fit_steps_per_s"], None),
  ]
  rows += [
    (f"ours, {name}, {mode}", result[f"{name}_{mode}_steps_per_s"], result[f"{name}_{mode}_compile_s"])
    for name in result["balancers"]
    for mode in MODES
  ]
  rows += [
    (f"variant: {key.replace('_', ' ')}", result[f"{key}_steps_per_s"], result[f"{key}_compile_s"])
    for key in (variant.key for variant in VARIANTS)
  ]
  width = max(len(label) for label, _, _ in rows)
  lines = [
    f"{'measurement':<{width}}  {'steps/s':>10}  {'ms/step':>8}  {'vs seed fit':>11}  {'compile s':>9}",
    "-" * (width + 48),
  ]
  for label, rate, compile_s in rows:
    compiled = f"{compile_s:>9.2f}" if compile_s is not None else f"{'':>9}"
    lines.append(f"{label:<{width}}  {rate:>10,.0f}  {1000 / rate:>8.3f}  {rate / seed_rate:>10.2f}x  {compiled}")
  lines.append(
    f"default mode {result['default_mode']}: ratio_fixed_vs_seed_fit {result['ratio_fixed_vs_seed_fit']:.1f}, "
    f"ratio_xla_vs_graph {result['ratio_xla_vs_graph']:.2f}, "
    + ", ".join(
      f"{name}_time_vs_fixed {result[f'{name}_time_vs_fixed']:.2f}" for name in result["balancers"] if name != BASELINE
    )
  )
  lines.append(
    f"hand-written speedups: our Adam vs Keras's {result['adam_ours_vs_keras_xla']:.2f}x (XLA), "
    f"{result['adam_ours_vs_keras_graph']:.2f}x (graph); single-threaded vs default executor "
    f"{result['executor_auto_vs_default_graph']:.2f}x (graph), "
    f"{result['executor_single_vs_default_xla']:.2f}x (XLA); dropout {DROPOUT_RATE} with Philox named vs "
    f"auto_select {result['dropout_philox_vs_auto_xla']:.2f}x (XLA)"
  )
  if "flops_fraction_of_matmul" in result:
    lines.append(
      f"large (batch {LARGE_BATCH_SIZE}, trunk {','.join(map(str, LARGE_HIDDEN_UNITS))}, "
      f"{result['large_mode']}): {result['large_steps_per_s']:.2f} steps/s, "
      f"{result['large_flops_per_s'] / 1e9:.1f} GFLOP/s; bare matmul {result['matmul_xla_flops_per_s'] / 1e9:.1f} "
      f"(XLA) and {result['matmul_graph_flops_per_s'] / 1e9:.1f} (graph) GFLOP/s; "
      f"flops_fraction_of_matmul {result['flops_fraction_of_matmul']:.2f}"
    )
  if "per_task_grads_tutorial_backward_vs_jacobian" in result:
    lines.append(
      "per-task gradients (XLA), backward passes vs vectorized Jacobian: "
      + ", ".join(
        f"{trunk} trunk {result[f'per_task_grads_{trunk}_backward_batches_per_s']:,.0f} vs "
        f"{result[f'per_task_grads_{trunk}_jacobian_batches_per_s']:,.0f} batches/s "
        f"(x{result[f'per_task_grads_{trunk}_backward_vs_jacobian']:.2f})"
        for trunk in ("tutorial", "wide")
      )
    )
    for name in result.get("scope_balancers", []):
      lines.append(
        f"{name} on the wide trunk ({','.join(map(str, benchmark_gradients.WIDE_HIDDEN_UNITS))}): parameters "
        f"{result[f'{name}_wide_parameters_steps_per_s']:,.0f}, representation "
        f"{result[f'{name}_wide_representation_steps_per_s']:,.0f} steps/s "
        f"(representation x{result[f'{name}_wide_representation_vs_parameters']:.2f})"
      )
  for model in result.get("models", []):
    times = ", ".join(
      f"{name} {result[f'{model}_{name}_steps_per_s']:,.0f} steps/s"
      + ("" if model == ARCHITECTURE else f" (x{result[f'{model}_{name}_time_vs_{ARCHITECTURE}']:.2f} the time)")
      for name in MODEL_BALANCERS
    )
    flops = result[f"{model}_flops_per_step"]
    relative = "" if model == ARCHITECTURE else f" (x{result[f'{model}_flops_vs_{ARCHITECTURE}']:.2f})"
    lines.append(
      f"model {model} (batch {result['models_batch_size']}): {times}; {flops / 1e6:.2f} MFLOP/step{relative}, "
      f"{result[f'{model}_parameters']:,} parameters"
    )
  if "default_run_off_wall_s" in result:
    lines.append(
      f"default run (2,500 steps) wall: off {result['default_run_off_wall_s']:.2f} s, auto "
      f"{result['default_run_auto_wall_s']:.2f} s ({result['default_run_auto_minus_off_wall_s']:+.2f} s); "
      f"{result['long_run_steps']:,}-step run training time: off {result['long_run_off_train_s']:.2f} s, "
      f"auto {result['long_run_auto_train_s']:.2f} s (x{result['long_run_auto_vs_off_train_time']:.2f})"
    )
  lines.append(
    f"batch {result['batch_size']}, trunk {','.join(map(str, result['hidden_units']))}, "
    f"{result['train_rows']} train rows, median of "
    f"{result['repeats']} runs, {result['cpu_count']} CPUs, {result['gpus']} GPUs, "
    f"TensorFlow {result['tf_version']}"
  )
  return "\n".join(lines)


def _widths(values: Sequence[str]) -> tuple[int, ...]:
  try:
    widths = tuple(int(value) for value in values)
  except ValueError:
    widths = ()
  if not widths or min(widths) < 1:
    raise UserError(f"--bench_hidden_units={','.join(values)} must be positive integers, e.g. 128,64.")
  return widths


def _models(names: Sequence[str]) -> tuple[str, ...]:
  unknown = [name for name in names if name not in ARCHITECTURES.names()]
  if unknown:
    raise UserError(
      f"--bench_models names {', '.join(map(repr, unknown))}, not registered (registered: "
      f"{', '.join(ARCHITECTURES.names())})."
    )
  return tuple(names)


def measure_packing(
  seeds: int, steps: int, balancers: Sequence[str], parallel: int, repeats: int, batch_size: int, log=_stderr
) -> dict:
  """benchmark_sweep's two measurements on the benchmark's data and model (fixed, XLA where available)."""
  resolve_balancers(balancers)  # an unknown name is refused before anything runs

  def config(seed: int) -> config_lib.Config:
    return make_config(BASELINE, batch_size, seed, DEFAULT_TRAIN_ROWS, steps, steps_per_loop=steps)

  result = benchmark_sweep.measure_packed_loop(
    config, lambda seed: synthetic_bundle(DEFAULT_TRAIN_ROWS, seed), seeds, steps, repeats, log
  )
  if parallel:
    result.update(benchmark_sweep.measure_sweep(balancers, seeds, steps, parallel, log))
  return result


def _main() -> None:
  began = time.perf_counter()
  if FLAGS.sweep:
    result = measure_packing(
      FLAGS.sweep_seeds,
      FLAGS.sweep_steps,
      FLAGS.sweep_balancers,
      FLAGS.sweep_parallel,
      FLAGS.repeats,
      FLAGS.bench_batch_size,
    )
    result["wall_s"] = time.perf_counter() - began
    print(benchmark_sweep.format_table(result))
    print(json.dumps(result, sort_keys=True), flush=True)
    return
  result = measure(
    balancers=FLAGS.balancers,
    repeats=FLAGS.repeats,
    fit_epochs=FLAGS.fit_epochs,
    loop_steps=FLAGS.loop_steps,
    loop_calls=FLAGS.loop_calls,
    warmup_steps=FLAGS.warmup_steps,
    batch_size=FLAGS.bench_batch_size,
    num_train=FLAGS.bench_train_rows,
    seed=FLAGS.bench_seed,
    large_steps=FLAGS.large_steps,
    wall_long_steps=FLAGS.wall_long_steps,
    gradient_batches=FLAGS.gradient_batches,
    hidden_units=_widths(FLAGS.bench_hidden_units),
    models=_models(FLAGS.bench_models),
    models_batch_size=FLAGS.bench_models_batch_size,
  )
  result["wall_s"] = time.perf_counter() - began
  print(format_table(result))
  print(json.dumps(result, sort_keys=True), flush=True)


main = entry_point(_main)


def run() -> None:
  """Console-script entry point."""
  define_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()

"""`mtl-benchmark`: training throughput of our compiled loop against the seed recipe.

One invocation measures, on the same data (the `synthetic` dataset: 10 features,
regression `price` + 3-class `kind`) and the same batch size:

  seed fit    the tutorial this project replaces: a functional Keras model
              Input(10) → Dense(128, relu) → Dense(64, relu) → Dense(1), Dense(3, softmax),
              compiled with adam and [mse, sparse_categorical_crossentropy] and trained
              with `model.fit(x, [y1, y2], batch_size, shuffle=True)`;
  tuned fit   the same model compiled with steps_per_execution=100, jit_compile=True
              (a reference: the best plain Keras gets without our loop);
  <balancer>  our loop (`mtl_research.train.components.build` + `TrainStep.loop`) under each
              balancer of --balancers (default: every registered one).

Each measurement is warmed up first (so tracing and compilation are excluded),
then timed --repeats times, interleaved (seed fit, tuned fit, balancers, seed
fit, ...), and the median is reported, because a small machine is noisy.

Prints a table, and as the last line of stdout one JSON object with the results.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_research import config as config_lib  # noqa: E402
from mtl_research.cli.common import entry_point, parse_flags  # noqa: E402
from mtl_research.balancers import BALANCERS  # noqa: E402
from mtl_research.data import DATASETS  # noqa: E402
from mtl_research.data.pipeline import steps_per_epoch  # noqa: E402
from mtl_research.errors import UserError  # noqa: E402
from mtl_research.train import components as components_lib  # noqa: E402

keras = tf.keras

DATASET = "synthetic"
ARCHITECTURE = "shared_bottom"
BASELINE = "fixed"  # the balancer every other one is compared with
HIDDEN_UNITS = (128, 64)  # the seed recipe's trunk; ours is built with the same widths
DATASET_PARAMS = {"num_train": 8000, "num_val": 1000, "num_test": 1000, "synthetic_noise": 0.3}
MODEL_PARAMS = {"hidden_units": HIDDEN_UNITS, "dropout": 0.0, "l2": 0.0, "embedding_dim": 8}
TUNED_STEPS_PER_EXECUTION = 100
# Defaults sized for 1-2 minutes on 2 cores with three balancers (about 90 s measured).
DEFAULT_REPEATS = 3
DEFAULT_FIT_EPOCHS = 8
DEFAULT_LOOP_STEPS = 1000
DEFAULT_LOOP_CALLS = 15
DEFAULT_WARMUP_STEPS = 200
DEFAULT_BATCH_SIZE = 32

# Names chosen not to clash with mtl_research.flags (the trainer's flags and every
# component Param), so both modules can be imported into one process.
FLAGS = flags.FLAGS
flags.DEFINE_list("balancers", None,
                  f"Balancers whose loop is timed; default: every registered one "
                  f"(now: {','.join(BALANCERS.names())}). '{BASELINE}' is always included.")
flags.DEFINE_integer("repeats", DEFAULT_REPEATS, "Timed repetitions of every measurement; the median is reported.",
                     lower_bound=1)
flags.DEFINE_integer("fit_epochs", DEFAULT_FIT_EPOCHS,
                     "Epochs of Keras fit per timed repetition (after a 1-epoch warm-up).", lower_bound=1)
flags.DEFINE_integer("loop_steps", DEFAULT_LOOP_STEPS, "Steps per call of our compiled loop.", lower_bound=1)
flags.DEFINE_integer("loop_calls", DEFAULT_LOOP_CALLS, "Calls of our loop per timed repetition.", lower_bound=1)
flags.DEFINE_integer("warmup_steps", DEFAULT_WARMUP_STEPS,
                     "Steps of the untimed warm-up call of our loop (traces it).", lower_bound=1)
flags.DEFINE_integer("bench_batch_size", DEFAULT_BATCH_SIZE, "Batch size of every measurement.", lower_bound=1)
flags.DEFINE_integer("bench_train_rows", DATASET_PARAMS["num_train"],
                     "Rows of the synthetic train split (an epoch of fit).", lower_bound=1)
flags.DEFINE_integer("bench_seed", 0, "Seed of the data, the models and the shuffles.")


def _stderr(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def balancer_params(name: str) -> config_lib.ComponentConfig:
  """`name` with the defaults of the Params it declares."""
  params = {p.name: p.parse(p.default) for p in BALANCERS.get(name).params}
  return config_lib.ComponentConfig(name, config_lib.frozen_mapping(params))


def make_config(balancer: str, batch_size: int, seed: int, num_train: int, train_steps: int,
                steps_per_loop: int = DEFAULT_LOOP_STEPS) -> config_lib.Config:
  """The Config of one timed balancer: library defaults plus the benchmark's data and model."""
  return config_lib.Config(
      run_dir="",  # nothing is written
      seed=seed,
      dataset=config_lib.ComponentConfig(
          DATASET, config_lib.frozen_mapping(dict(DATASET_PARAMS, num_train=num_train))),
      model=config_lib.ComponentConfig(ARCHITECTURE, config_lib.frozen_mapping(MODEL_PARAMS)),
      balancer=balancer_params(balancer),
      optimizer=config_lib.OptimizerConfig(),
      loop=config_lib.LoopConfig(batch_size=batch_size, train_steps=train_steps, steps_per_loop=steps_per_loop),
  )


def resolve_balancers(names: Sequence[str] | None) -> list[str]:
  """The balancers to time, baseline first; raises UserError on an unknown name."""
  registered = BALANCERS.names()
  names = list(registered if not names else names)
  unknown = [n for n in names if n not in registered]
  if unknown:
    raise UserError(f"--balancers names {', '.join(map(repr, unknown))}, not registered "
                    f"(registered: {', '.join(registered)}).")
  ordered = [BASELINE] + [n for n in names if n != BASELINE]
  return list(dict.fromkeys(ordered))


# --- the seed recipe ---------------------------------------------------------


def seed_model(num_features: int, num_classes: int, seed: int, **compile_args) -> keras.Model:
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

  def __init__(self, model: keras.Model, x: np.ndarray, ys: list[np.ndarray], batch_size: int, epochs: int):
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
  """Times calls of our compiled loop under one balancer, after a tracing warm-up."""

  def __init__(self, config: config_lib.Config, bundle, warmup_steps: int, steps: int, calls: int):
    self.name = config.balancer.name
    self.parts = components_lib.build(config, bundle)
    self.steps, self.calls = steps, calls
    self._call(warmup_steps)

  def _call(self, num_steps: int) -> dict:
    # The logs come back as NumPy values: the clock sees the whole loop.
    return self.parts.train_step.run(num_steps)

  def steps_per_s(self) -> float:
    tick = time.perf_counter()
    for _ in range(self.calls):
      logs = self._call(self.steps)
    elapsed = time.perf_counter() - tick
    if not np.isfinite(logs["objective"]):
      raise RuntimeError(f"{self.name}: the objective is not finite ({logs['objective']}).")
    return self.steps * self.calls / elapsed


# --- the benchmark -----------------------------------------------------------


def measure(balancers: Sequence[str] | None = None, repeats: int = DEFAULT_REPEATS,
            fit_epochs: int = DEFAULT_FIT_EPOCHS, loop_steps: int = DEFAULT_LOOP_STEPS,
            loop_calls: int = DEFAULT_LOOP_CALLS, warmup_steps: int = DEFAULT_WARMUP_STEPS,
            batch_size: int = DEFAULT_BATCH_SIZE,
            num_train: int = DATASET_PARAMS["num_train"], seed: int = 0,
            log: Callable[[str], None] = _stderr) -> dict:
  """Runs every measurement and returns the results (the JSON line's object).

  Keys: `seed_fit_steps_per_s`, `tuned_fit_steps_per_s`, `<balancer>_steps_per_s`
  (medians over `repeats`), `ratio_fixed_vs_seed_fit`, `ratio_fixed_vs_tuned_fit`,
  `<balancer>_time_vs_fixed` (step-time ratio, for balancers other than fixed),
  the settings, and `samples` (every repetition's steps/s).
  """
  names = resolve_balancers(balancers)
  bundle = DATASETS.get(DATASET).component(
      config_lib.frozen_mapping(dict(DATASET_PARAMS, num_train=num_train)), seed)
  bundle.validate(batch_size)
  loop_total = warmup_steps + repeats * loop_calls * loop_steps

  x = bundle.train.features["numeric"]
  ys = [bundle.train.labels[task.name] for task in bundle.tasks]
  num_classes = next(task.num_classes for task in bundle.tasks if task.name == "kind")

  timers: dict[str, Callable[[], float]] = {}
  log("warming up seed fit (1 epoch)…")
  timers["seed_fit"] = FitTimer(seed_model(x.shape[1], num_classes, seed), x, ys, batch_size,
                                fit_epochs).steps_per_s
  log("warming up tuned fit (1 epoch, XLA compile)…")
  tuned = seed_model(x.shape[1], num_classes, seed, steps_per_execution=TUNED_STEPS_PER_EXECUTION,
                     jit_compile=True)
  timers["tuned_fit"] = FitTimer(tuned, x, ys, batch_size, fit_epochs).steps_per_s
  for name in names:
    log(f"warming up our loop, balancer {name} ({warmup_steps} steps, traces the loop)…")
    config = make_config(name, batch_size, seed, num_train, loop_total, max(loop_steps, warmup_steps))
    timers[name] = LoopTimer(config, bundle, warmup_steps, loop_steps, loop_calls).steps_per_s

  samples: dict[str, list[float]] = {key: [] for key in timers}
  for r in range(repeats):
    for key, timer in timers.items():
      log(f"timing {key.replace('_', ' ')} {r + 1}/{repeats}…")
      samples[key].append(timer())

  rate = {key: statistics.median(values) for key, values in samples.items()}
  result: dict = {f"{key}_steps_per_s": rate[key] for key in timers}
  result["ratio_fixed_vs_seed_fit"] = rate[BASELINE] / rate["seed_fit"]
  result["ratio_fixed_vs_tuned_fit"] = rate[BASELINE] / rate["tuned_fit"]
  for name in names:
    if name != BASELINE:
      result[f"{name}_time_vs_fixed"] = rate[BASELINE] / rate[name]  # = step time of name / of fixed
  result.update({
      "balancers": names,
      "batch_size": batch_size,
      "train_rows": len(bundle.train),
      "fit_steps_per_epoch": -(-len(bundle.train) // batch_size),
      "loop_steps_per_epoch": steps_per_epoch(len(bundle.train), batch_size),
      "fit_epochs": fit_epochs,
      "loop_steps": loop_steps,
      "loop_calls": loop_calls,
      "repeats": repeats,
      "cpu_count": os.cpu_count(),
      "tf_version": tf.__version__,
      "samples": samples,
  })
  return result


def format_table(result: dict) -> str:
  """One row per measured thing: steps/s, ms/step, speed relative to the seed fit."""
  seed_rate = result["seed_fit_steps_per_s"]
  rows = [("seed fit (Keras fit)", seed_rate),
          (f"tuned fit (spe={TUNED_STEPS_PER_EXECUTION}, XLA)", result["tuned_fit_steps_per_s"])]
  rows += [(f"ours, {name}", result[f"{name}_steps_per_s"]) for name in result["balancers"]]
  width = max(len(label) for label, _ in rows)
  lines = [f"{'measurement':<{width}}  {'steps/s':>10}  {'ms/step':>8}  {'vs seed fit':>11}",
           "-" * (width + 37)]
  for label, rate in rows:
    lines.append(f"{label:<{width}}  {rate:>10,.0f}  {1000 / rate:>8.3f}  {rate / seed_rate:>10.2f}x")
  lines.append(f"batch {result['batch_size']}, {result['train_rows']} train rows, median of "
               f"{result['repeats']} runs, {result['cpu_count']} CPUs, TensorFlow {result['tf_version']}")
  return "\n".join(lines)


def _main() -> None:
  began = time.perf_counter()
  result = measure(
      balancers=FLAGS.balancers, repeats=FLAGS.repeats, fit_epochs=FLAGS.fit_epochs,
      loop_steps=FLAGS.loop_steps, loop_calls=FLAGS.loop_calls, warmup_steps=FLAGS.warmup_steps,
      batch_size=FLAGS.bench_batch_size, num_train=FLAGS.bench_train_rows, seed=FLAGS.bench_seed)
  result["wall_s"] = time.perf_counter() - began
  print(format_table(result))
  print(json.dumps(result, sort_keys=True), flush=True)


main = entry_point(_main)


def run() -> None:
  """Console-script entry point."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()

"""`mtl-train`: train one configuration into a run directory."""

from __future__ import annotations

from collections.abc import Callable
import os
import shutil
import sys
import tempfile

from absl import app
import tensorflow as tf

from mtl_research import config as config_lib
from mtl_research import flags as flags_lib
from mtl_research.balancers.base import Balancer
from mtl_research.cli.common import entry_point, parse_flags
from mtl_research.data import DATASETS
from mtl_research.data import summary as data_summary
from mtl_research.errors import UserError
from mtl_research.files import write_text_atomic
from mtl_research.optim import model_optimizer
from mtl_research.train import components as components_lib
from mtl_research.train import distribution, loop, run_dir, run_lock
from mtl_research.train.interrupt import Interrupted, StopRequest


def train(strategy: tf.distribute.Strategy | None = None) -> dict | None:
  """Trains from the parsed flags; raises UserError before writing on bad input.

  `strategy`: the tf.distribute strategy made by `distribution.create` (None:
  one device). Returns the metrics, or None if SIGTERM/SIGINT stopped training
  (after a checkpoint was saved).
  """
  # The run directory's lock (train/run_lock.py) is released on every way out, after the last write.
  with StopRequest() as stop, run_lock.RunLock() as lock:
    try:
      return _train(stop, lock, strategy)
    except Interrupted as interrupted:
      print(interrupted, file=sys.stderr)
      return None


def _train(stop: StopRequest, lock: run_lock.RunLock, strategy: tf.distribute.Strategy | None) -> dict:
  flags_lib.check_unused_flags()
  config = flags_lib.config_from_flags()
  # Every worker of multi_worker trains and saves (checkpoints may need all of
  # them); only the chief writes the run directory, the others a scratch one.
  chief = strategy is None or distribution.is_chief(strategy)
  if chief and os.path.isdir(config.run_dir):  # before reading it: a second trainer is refused at once
    lock.acquire(config.run_dir)
  contract = (
    config.run_dir,
    flags_lib.flag_values(config.run_dir),
    config.overwrite,
    flags_lib.OPERATIONAL,
    flags_lib.flag_defaults(),
  )
  length = flags_lib.run_length(config.loop)
  # The schedule's declaration is known before the data: a refused extension loads nothing.
  found = run_dir.check(*contract, length=length, length_users=_length_users(config))
  resuming = found.resume
  # A resumed run encodes its data with the preprocessing it was trained with.
  fitted = run_dir.read_preprocessing(config.run_dir) if resuming else None
  bundle = DATASETS.get(config.dataset.name).component(config.dataset.params, config.seed, fitted)
  if config.single_task:
    bundle = bundle.only(config.single_task)
  # Before validating: what was inferred helps read a refusal too (an empty split, too few rows).
  summary = data_summary.render(bundle.summary) if bundle.summary is not None else None
  if summary is not None:
    print(summary, end="")
  bundle.validate(config.loop.batch_size)
  parts = components_lib.build(config, bundle, strategy)
  length_users = _length_users(config, parts.balancer)
  if found.extension is not None:  # the balancer's declaration needs the built balancer
    run_dir.check(*contract, length=length, length_users=length_users)
  scratch = None
  try:
    if not chief:
      scratch = tempfile.mkdtemp(prefix=f"mtl-{distribution.worker_name(strategy)}-")
    trainer = loop.Trainer(
      config,
      bundle,
      parts,
      run_dir.RunDir(scratch or config.run_dir),
      hparams=flags_lib.hparam_values(),
      stop=stop,
      resume_from=run_dir.RunDir(config.run_dir),
      resume=resuming,
    )
    if resuming:
      trainer.restore()  # before anything is written: damaged checkpoints are refused here
    trainer.compile()  # before anything is written too: --jit_compile=on is refused here if XLA cannot serve
    if chief:
      if not lock.held:  # a new directory: locked once created, before anything is written into it
        _lock_new_run_dir(
          lock, config.run_dir, found, lambda: run_dir.check(*contract, length=length, length_users=length_users)
        )
      run_dir.prepare(*contract, preprocessing=bundle.fitted, length=length, length_users=length_users)
      if found.extension is not None:
        print(f"Extending {config.run_dir} from {found.extension}.")
      if summary is not None:
        write_text_atomic(os.path.join(config.run_dir, data_summary.SUMMARY_FILE), summary)
    metrics = trainer.run()
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)
  if chief:
    _report(trainer.run_dir, metrics)
  else:
    print(f"{distribution.worker_name(strategy)} finished; the chief wrote {config.run_dir}.")
  return metrics


def _lock_new_run_dir(
  lock: run_lock.RunLock, path: str, found: run_dir.Found, check: Callable[[], run_dir.Found]
) -> None:
  """Creates run directory `path`, which did not exist when training started, and locks it.

  Not before: a refused command must not leave a directory behind. Another
  trainer may have written a run there since `found` (what `check` said then)
  was read, while this one loaded its data: refused unless `check` still says
  the same.
  """
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as error:
    raise UserError(f"--run_dir={path} cannot be written: {error.strerror}.") from None
  lock.acquire(path)
  if check() != found:
    raise UserError(
      f"--run_dir={path} was written by another trainer while this one was starting; run the command again "
      "to continue from what it wrote, or choose another --run_dir."
    )


def _length_users(config: config_lib.Config, balancer: Balancer | None = None) -> list[str]:
  """The flags whose components declare that their rule reads the run's length (an extension is refused).

  The components say so themselves (the schedule in model_optimizer, a balancer
  by `uses_run_length`); `balancer` None: not built yet.
  """
  users = []
  schedule = model_optimizer.run_length_dependence(config.optimizer)
  if schedule is not None:
    users.append(schedule)
  if balancer is not None and balancer.uses_run_length:
    users.append(f"--balancer={config.balancer.name}")
  return users


def _report(run: run_dir.RunDir, metrics: dict) -> None:
  for task, values in metrics["test"].items():
    shown = ", ".join(f"{name} {_number(value)}" for name, value in values.items())
    print(f"test {task}: {shown}")
  print(f"weights: {', '.join(f'{k} {v:.4f}' for k, v in metrics['weights'].items())}")
  print(f"Results: {run.metrics_file}")
  print(f"TensorBoard: tensorboard --logdir {os.path.abspath(run.path)}")


def _number(value: float | None) -> str:
  return "undefined" if value is None else f"{value:.4f}"  # null in metrics.json: the log said why


def _main() -> None:
  # Before TensorFlow runs anything: a sweep runs several trainings side by side.
  if flags_lib.FLAGS.intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(flags_lib.FLAGS.intra_op_threads)
  if flags_lib.FLAGS.inter_op_threads:
    tf.config.threading.set_inter_op_parallelism_threads(flags_lib.FLAGS.inter_op_threads)
  # Before any TensorFlow op: logical devices and collectives are fixed at start-up.
  strategy = distribution.create(flags_lib.FLAGS.strategy, flags_lib.FLAGS.cpu_replicas)
  try:
    train(strategy)
  except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
    if strategy is None:
      raise
    reason = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    raise UserError(
      f"the workers lost contact ({reason[:200]}); once all are up, run the same command on "
      "each to resume from the last checkpoint."
    ) from None


main = entry_point(_main)


def run() -> None:
  """Console-script entry point."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()

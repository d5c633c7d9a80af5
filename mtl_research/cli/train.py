"""`mtl-train`: train one configuration into a run directory."""

from __future__ import annotations

import os
import sys

from absl import app
import tensorflow as tf

from mtl_research import flags as flags_lib
from mtl_research.cli.common import entry_point
from mtl_research.data import DATASETS
from mtl_research.train import loop, run_dir
from mtl_research.train.interrupt import Interrupted, StopRequest


def train() -> dict | None:
  """Trains from the parsed flags; raises UserError before writing on bad input.

  Returns the metrics, or None if SIGTERM/SIGINT stopped training (after a
  checkpoint was saved).
  """
  with StopRequest() as stop:
    try:
      return _train(stop)
    except Interrupted as interrupted:
      print(interrupted, file=sys.stderr)
      return None


def _train(stop: StopRequest) -> dict:
  flags_lib.check_unused_flags()
  config = flags_lib.config_from_flags()
  contract = (config.run_dir, flags_lib.flag_values(config.run_dir), config.overwrite, flags_lib.OPERATIONAL,
              flags_lib.flag_defaults())
  # A resumed run encodes its data with the preprocessing it was trained with.
  resuming = run_dir.check(*contract)
  fitted = run_dir.read_preprocessing(config.run_dir) if resuming else None
  bundle = DATASETS.get(config.dataset.name).component(config.dataset.params, config.seed, fitted)
  if config.single_task:
    bundle = bundle.only(config.single_task)
  bundle.validate(config.loop.batch_size)
  parts = loop.build(config, bundle)
  trainer = loop.Trainer(config, bundle, parts, run_dir.RunDir(config.run_dir), hparams=flags_lib.hparam_values(),
                         stop=stop)
  if resuming:
    trainer.restore()  # before anything is written: damaged checkpoints are refused here
  run_dir.prepare(*contract, preprocessing=bundle.preprocessing)
  metrics = trainer.run()
  _report(trainer.run_dir, metrics)
  return metrics


def _report(run: run_dir.RunDir, metrics: dict) -> None:
  for task, values in metrics["test"].items():
    shown = ", ".join(f"{name} {value:.4f}" for name, value in values.items())
    print(f"test {task}: {shown}")
  print(f"weights: {', '.join(f'{k} {v:.4f}' for k, v in metrics['weights'].items())}")
  print(f"Results: {run.metrics_file}")
  print(f"TensorBoard: tensorboard --logdir {os.path.abspath(run.path)}")


def _main() -> None:
  # Before TensorFlow runs anything: a sweep runs several trainings side by side.
  if flags_lib.FLAGS.intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(flags_lib.FLAGS.intra_op_threads)
  if flags_lib.FLAGS.inter_op_threads:
    tf.config.threading.set_inter_op_parallelism_threads(flags_lib.FLAGS.inter_op_threads)
  train()


main = entry_point(_main)


def run() -> None:
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()

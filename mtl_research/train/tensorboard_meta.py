"""Run metadata for TensorBoard: HParams values and a custom-scalars layout.

Each run logs its hyperparameter values (the HParams dashboard pairs them with
its final metrics when a sweep root declares the experiment, see
reports/hparams.py) and a custom-scalars layout so related curves share one
chart: every task loss, every task weight, every gradient norm.
"""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary
from tensorboard.plugins.hparams import api as hp

HParamValue = bool | int | float | str

CHARTS = (
    ("task losses", r"^loss/(?!total|mean)"),
    ("weighted task losses", r"^weighted_loss/"),
    ("task weights", r"^weight/"),
    ("gradient norms", r"^(gradnorm/grad_norm|conflict/grad_norm)/"),
    ("validation metrics", r"^eval/"),
)


def layout() -> layout_pb2.Layout:
  charts = [layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=[regex]))
            for title, regex in CHARTS]
  return layout_pb2.Layout(category=[layout_pb2.Category(title="multi-task", chart=charts)])


def write_run_metadata(logdir: str, hparams: Mapping[str, HParamValue]) -> None:
  """Writes the run's HParams values and the custom-scalars layout into `logdir`."""
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default(step=0):
    hp.hparams(dict(hparams))
    tf.summary.experimental.write_raw_pb(custom_scalar_summary.pb(layout()).SerializeToString(), step=0)
  writer.close()

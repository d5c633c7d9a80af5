"""Run metadata for TensorBoard: HParams values and a custom-scalars layout.

Each run logs its hyperparameter values (the HParams dashboard pairs them with
its final metrics when a sweep root declares the experiment, see
reports/hparams.py) and a custom-scalars layout so that the curves of all
tasks share one chart per quantity. The charts are derived from what the run
logs per task: the losses, weighted losses and weights, every per-task
diagnostic the balancer declares (`TrainLoop.per_task_diagnostics`), and the
gradient-conflict norms when they are logged; no balancer is named here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import re

from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary
from tensorboard.plugins.hparams import api as hp
import tensorflow as tf

from mtl_research import tags

HParamValue = bool | int | float | str

_TITLES = {tags.LOSS: "task losses", tags.WEIGHTED_LOSS: "weighted task losses", tags.WEIGHT: "task weights"}


def layout(per_task_prefixes: Sequence[str]) -> layout_pb2.Layout:
  """One chart per prefix (every task's `<prefix>/<task>` on it), and one of the validation metrics."""
  charts = []
  for prefix in per_task_prefixes:
    # `loss/` also holds loss/total and the eval run's loss/mean: not task curves.
    exclude = r"(?!total$|mean$)" if prefix == tags.LOSS else ""
    charts.append(
      layout_pb2.Chart(
        title=_TITLES.get(prefix, prefix),
        multiline=layout_pb2.MultilineChartContent(tag=[rf"^{re.escape(prefix)}/{exclude}[^/]+$"]),
      )
    )
  charts.append(
    layout_pb2.Chart(title="validation metrics", multiline=layout_pb2.MultilineChartContent(tag=[rf"^{tags.EVAL}/"]))
  )
  return layout_pb2.Layout(category=[layout_pb2.Category(title="multi-task", chart=charts)])


def write_run_metadata(logdir: str, hparams: Mapping[str, HParamValue], per_task_prefixes: Sequence[str]) -> None:
  """Writes the run's HParams values and the custom-scalars layout into `logdir`."""
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default(step=0):
    hp.hparams(dict(hparams))
    tf.summary.experimental.write_raw_pb(
      custom_scalar_summary.pb(layout(per_task_prefixes)).SerializeToString(), step=0
    )
  writer.close()

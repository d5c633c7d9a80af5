"""Export a trained model as a SavedModel that serves raw feature columns.

The serving signature `serve` takes one 1-D tensor per feature column of the
training table (numbers as float32 with NaN for missing, categories as
strings) and returns, per task, `<task>` (regression value in original units,
or the predicted class name) and, for classification, `<task>_probabilities`
[batch, classes] and `<task>_classes` [batch, classes], the class names in the
order of the probabilities' columns. The names are repeated on every row because
a signature's outputs must all be batch-major for TF Serving's row ("instances")
format; a client labels row i's probabilities with row i's names.
The preprocessing of `tabular.py` is rebuilt from the run's
`preprocessing.Preprocessing` (read from preprocessing.json) in TensorFlow ops,
so the model can be served or reloaded with plain TensorFlow
(`tf.saved_model.load(dir).signatures["serve"]`), without this package.
The model comes restored from its run (`checkpoints.restore_model`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
import shutil
import tempfile

import tensorflow as tf

from mtl_research import files
from mtl_research.data.csv_reader import MISSING_TOKENS
from mtl_research.data.preprocessing import (
  EMBEDDING,
  CategoricalFeature,
  NumericFeature,
  Preprocessing,
  RegressionTarget,
)
from mtl_research.data.tabular import MISSING
from mtl_research.errors import UserError
from mtl_research.features import EMBEDDED, NUMERIC
from mtl_research.models.base import MultiTaskModel


def _lookup_table(vocabulary: Sequence[str]) -> tf.lookup.StaticHashTable:
  """Category → its index in `vocabulary` + 1; 0 for a category never seen in training."""
  return tf.lookup.StaticHashTable(
    tf.lookup.KeyValueTensorInitializer(
      tf.constant(list(vocabulary)), tf.range(1, len(vocabulary) + 1, dtype=tf.int64)
    ),
    default_value=0,
  )


def _category_index(values: tf.Tensor, table: tf.lookup.StaticHashTable) -> tf.Tensor:
  values = tf.strings.strip(values)
  missing = tf.reduce_any(tf.equal(values[:, None], tf.constant(MISSING_TOKENS)[None, :]), axis=1)
  return table.lookup(tf.where(missing, MISSING, values))


class ServingModule(tf.Module):
  """Preprocessing + model + postprocessing, as one tf.function."""

  def __init__(self, model: MultiTaskModel, state: Preprocessing):
    super().__init__()
    self.model = model
    self.state = state
    # Created here, not while tracing, so that the SavedModel tracks them.
    self.lookups = {f.name: _lookup_table(f.vocabulary) for f in state.features if isinstance(f, CategoricalFeature)}
    signature = {
      f.name: tf.TensorSpec([None], tf.float32 if isinstance(f, NumericFeature) else tf.string, f.name)
      for f in state.features
    }
    self.serve = tf.function(self._serve, input_signature=[signature])

  def _features(self, columns: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    numeric, embedded = [], []
    for feature in self.state.features:
      column = columns[feature.name]
      if isinstance(feature, NumericFeature):
        missing = tf.math.is_nan(column)
        filled = tf.where(missing, tf.cast(feature.mean, tf.float32), column)
        numeric.append(((filled - feature.mean) / feature.std)[:, None])
        if feature.indicator:
          numeric.append(tf.cast(missing, tf.float32)[:, None])
        continue
      index = _category_index(column, self.lookups[feature.name])
      if feature.encoding == EMBEDDING:
        embedded.append(tf.cast(index, tf.int32))
      else:
        numeric.append(tf.one_hot(index, len(feature.vocabulary) + 1, dtype=tf.float32))
    rows = tf.shape(next(iter(columns.values())))[0]
    features = {NUMERIC: tf.concat(numeric, axis=1) if numeric else tf.zeros([rows, 0])}
    if embedded:
      features[EMBEDDED] = tf.stack(embedded, axis=1)
    return features

  def _serve(self, columns):
    outputs = self.model(self._features(columns), training=False)
    result = {}
    for task in self.model.task_specs:
      target = self.state.target(task.name)
      out = outputs[task.name]
      if isinstance(target, RegressionTarget):
        result[task.name] = out[:, 0] * target.std + target.mean
      else:
        probabilities = tf.nn.softmax(out)
        classes = tf.constant(list(target.classes))
        result[task.name] = tf.gather(classes, tf.argmax(probabilities, axis=1))
        result[f"{task.name}_probabilities"] = probabilities
        result[f"{task.name}_classes"] = tf.tile(classes[None, :], [tf.shape(probabilities)[0], 1])
    return result


def output_names(state: Preprocessing) -> dict[str, str]:
  """{output name: task} of the `serve` signature: `<task>`, and `<task>_probabilities`, `<task>_classes`
  for a classification task. Raises UserError when two tasks would share a name (one output would
  silently replace the other)."""
  owners: dict[str, str] = {}
  for task in state.task_names:
    names = [task]
    if not isinstance(state.target(task), RegressionTarget):
      names += [f"{task}_probabilities", f"{task}_classes"]
    for name in names:
      if name in owners:
        raise UserError(
          f"--export_dir: the SavedModel output {name!r} would belong to both task {owners[name]!r} and task "
          f"{task!r}; rename one of their target columns."
        )
      owners[name] = task
  return owners


def export(model: MultiTaskModel, state: Preprocessing, export_dir: str) -> None:
  """Writes the SavedModel with the `serve` signature into `export_dir`, missing or empty, in an existing directory.

  Written beside it under a temporary name and renamed when complete, so a
  crash never leaves a half-written SavedModel at `export_dir`. The caller
  checks `export_dir` before writing anything (mtl-evaluate:
  `cli.common.check_output_dir`); should it fail all the same (the disk full,
  a file put there meanwhile), UserError names it.
  """
  output_names(state)
  module = ServingModule(model, state)
  parent = os.path.dirname(os.path.abspath(export_dir))
  prefix, suffix = files.partial_name(export_dir)
  staging = None
  try:
    staging = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix)
    tf.saved_model.save(module, staging, signatures={"serve": module.serve})
    if os.path.isdir(export_dir):
      os.rmdir(export_dir)  # empty, as the caller checked
    os.rename(staging, export_dir)
  except (OSError, tf.errors.OpError) as error:  # TensorFlow's file system reports with OpError
    reason = getattr(error, "strerror", None) or (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    raise UserError(f"--export_dir={export_dir} cannot be written: {reason}.") from None
  finally:
    if staging is not None and os.path.isdir(staging):
      shutil.rmtree(staging)

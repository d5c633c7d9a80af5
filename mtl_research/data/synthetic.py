"""The default example: the tutorial's scenario (10 features, one regression and one
3-class task) with learnable, shared structure instead of independent noise.

Both tasks read the same latent representation `h = tanh(x U)` of the inputs, so a
shared trunk helps both:

  price = standardize(h a + 0.5·x0·x1) + noise·ε,           ε ~ N(0, 1)
  kind  ~ Categorical(softmax(sharpness · h C))

With the default noise 0.3 the best possible test R² of `price` is about
1/(1 + 0.3²) ≈ 0.92; with sharpness 2 the Bayes accuracy of `kind` (the mean over
inputs of the largest class probability) is 0.86-0.88 for seeds 0-2 (chance is
1/3). Everything is drawn from `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mtl_research import tasks as tasks_lib
from mtl_research.data.bundle import DatasetBundle, Split
from mtl_research.data.registry import DATASETS
from mtl_research.params import FLOAT, INT, Param

NUM_FEATURES = 10
LATENT = 8
NUM_CLASSES = 3
SHARPNESS = 2.0

# Split sizes are shared by every generated dataset, hence their generic names.
SIZE_PARAMS = (
  Param("num_train", INT, 8000, "Training rows of a generated dataset.", lower=1),
  Param("num_val", INT, 1000, "Validation rows of a generated dataset.", lower=1),
  Param("num_test", INT, 1000, "Test rows of a generated dataset.", lower=1),
)
PARAMS = SIZE_PARAMS + (
  Param("synthetic_noise", FLOAT, 0.3, "Std of the Gaussian noise on the synthetic regression target.", lower=0.0),
)


def split_rows(
  features: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], sizes: tuple[int, int, int]
) -> tuple[Split, Split, Split]:
  """Cuts generated arrays into consecutive train/val/test splits of the given sizes."""
  bounds = np.cumsum((0,) + sizes)
  train, val, test = (
    Split({k: v[lo:hi] for k, v in features.items()}, {k: v[lo:hi] for k, v in labels.items()})
    for lo, hi in zip(bounds[:-1], bounds[1:])
  )
  return train, val, test


@DATASETS.register("synthetic", params=PARAMS)
def load(params: Mapping[str, Any], seed: int, fitted: Mapping | None = None) -> DatasetBundle:
  """The tutorial scenario: 10 features, regression `price` and 3-class `kind`."""
  del fitted  # generated data needs no fitted preprocessing
  sizes = (params["num_train"], params["num_val"], params["num_test"])
  rng = np.random.default_rng(seed)
  total = sum(sizes)
  # The task (its parameters) is drawn first, so that the split sizes change
  # only how many rows are sampled, never the function being learned.
  u = rng.normal(size=(NUM_FEATURES, LATENT)) / np.sqrt(NUM_FEATURES)
  a = rng.normal(size=LATENT)
  c = rng.normal(size=(LATENT, NUM_CLASSES))
  x = rng.normal(size=(total, NUM_FEATURES))
  h = np.tanh(x @ u * 1.5)
  signal = h @ a + 0.5 * x[:, 0] * x[:, 1]
  train = signal[: sizes[0]]
  signal = (signal - train.mean()) / train.std()  # train rows only: nothing leaks from val/test
  price = signal + params["synthetic_noise"] * rng.normal(size=total)
  logits = SHARPNESS * (h @ c)
  # Gumbel-max draws exactly from softmax(logits).
  kind = np.argmax(logits + rng.gumbel(size=logits.shape), axis=-1)
  splits = split_rows(
    {"numeric": x.astype(np.float32)}, {"price": price.astype(np.float32), "kind": kind.astype(np.int32)}, sizes
  )
  task_specs = (
    tasks_lib.TaskSpec("price", tasks_lib.REGRESSION),
    tasks_lib.TaskSpec("kind", tasks_lib.CLASSIFICATION, NUM_CLASSES),
  )
  return DatasetBundle(task_specs, *splits)

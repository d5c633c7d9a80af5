"""The synthetic two-task regression of MMoE, with a controllable task correlation p.

Ma, Zhao, Yi, Chen, Hong and Chi, "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018, §3.2 ("Synthetic Data
Generation"). With input dimension d, scale c, correlation -1 ≤ p ≤ 1 and m
sinusoids, everything drawn from `numpy.random.default_rng(seed)` in this order
(so the functions do not depend on the split sizes):

  u1, u2 ∈ R^d orthogonal unit vectors     (QR of a d×2 standard-normal matrix)
  w1 = c·u1,   w2 = c·(p·u1 + √(1−p²)·u2)
  α_i, β_i ~ N(0, 0.01),  i = 1..m         (variance 0.01, std 0.1)
  x ~ N(0, I_d)                            (the features given to the model)
  y1 = w1ᵀx + Σ_i sin(α_i·w1ᵀx + β_i) + ε1
  y2 = w2ᵀx + Σ_i sin(α_i·w2ᵀx + β_i) + ε2,   ε1, ε2 ~ N(0, 0.01) i.i.d.

Defaults follow the paper's experiments: d = 100, c = 1, m = 10. The α_i, β_i
are shared by both tasks, so the tasks differ only through w1 versus w2.

p is the cosine between w1 and w2, which is exactly p (see `task_weights`). It is
not the Pearson correlation of the labels: the sinusoids and the noise make the
label correlation somewhat smaller in magnitude, but it is monotone in p (as the
paper notes) and 0 in expectation at p = 0 (w1ᵀx and w2ᵀx are then independent).
With α_i, β_i of std 0.1 the sinusoids are a mild nonlinearity: the linear part
w_kᵀx explains about 98-99% of each label's variance, and on 20000 rows the
label correlation is about 0.88-0.89 at p = 0.9 and 0.98-0.99 at p = 1 (the noise
sets that ceiling). Some public re-implementations draw α_i, β_i with std 1
instead, which makes the labels strongly nonlinear and their correlation far
below p (about 0.1 at p = 0.5); N(0, 0.01) is read here as variance 0.01, the
usual N(μ, σ²) notation, for α_i, β_i and for the noise alike.

Targets are not rescaled. Tasks: y1, y2 (regression).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mtl_research import tasks as tasks_lib
from mtl_research.data.bundle import DatasetBundle
from mtl_research.data.registry import DATASETS
from mtl_research.data.synthetic import SIZE_PARAMS, split_rows
from mtl_research.errors import UserError
from mtl_research.params import FLOAT, INT, Param

SHAPE_VARIANCE = 0.01  # variance of α_i and β_i
NOISE_VARIANCE = 0.01  # variance of ε1 and ε2

PARAMS = SIZE_PARAMS + (
  Param(
    "mmoe_correlation",
    FLOAT,
    0.5,
    "Task correlation p in [-1, 1] of the MMoE synthetic data: the cosine between w1 and w2.",
    lower=-1.0,
  ),
  Param("mmoe_input_dim", INT, 100, "Input dimension d of the MMoE synthetic data.", lower=2),
  Param("mmoe_num_sinusoids", INT, 10, "Number m of sinusoids in the MMoE synthetic labels.", lower=0),
  Param("mmoe_scale", FLOAT, 1.0, "Scale c (the norm of w1 and w2) of the MMoE synthetic data.", lower=0.0),
)


def task_weights(
  input_dim: int, scale: float, correlation: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """(w1, w2) of norm `scale` whose cosine is `correlation`, from orthonormal u1, u2."""
  basis, _ = np.linalg.qr(rng.normal(size=(input_dim, 2)))
  u1, u2 = basis[:, 0], basis[:, 1]
  w1 = scale * u1
  w2 = scale * (correlation * u1 + np.sqrt(1.0 - correlation**2) * u2)
  return w1, w2


def _label(projection: np.ndarray, alphas: np.ndarray, betas: np.ndarray, noise: np.ndarray) -> np.ndarray:
  waves = np.sin(projection[:, None] * alphas + betas).sum(axis=1)
  return projection + waves + noise


@DATASETS.register("mmoe_synthetic", params=PARAMS)
def load(params: Mapping[str, Any], seed: int, fitted: Mapping | None = None) -> DatasetBundle:
  """MMoE's synthetic regression (Ma et al. 2018): tasks y1, y2 with correlation p."""
  del fitted  # generated data needs no fitted preprocessing
  correlation = params["mmoe_correlation"]
  if not -1.0 <= correlation <= 1.0:
    raise UserError(f"--mmoe_correlation={correlation} must be in [-1, 1].")
  input_dim, num_sinusoids = params["mmoe_input_dim"], params["mmoe_num_sinusoids"]
  sizes = (params["num_train"], params["num_val"], params["num_test"])
  total = sum(sizes)
  rng = np.random.default_rng(seed)
  w1, w2 = task_weights(input_dim, params["mmoe_scale"], correlation, rng)
  alphas = rng.normal(0.0, np.sqrt(SHAPE_VARIANCE), size=num_sinusoids)
  betas = rng.normal(0.0, np.sqrt(SHAPE_VARIANCE), size=num_sinusoids)
  x = rng.normal(size=(total, input_dim))
  noise = rng.normal(0.0, np.sqrt(NOISE_VARIANCE), size=(2, total))
  labels = {
    "y1": _label(x @ w1, alphas, betas, noise[0]).astype(np.float32),
    "y2": _label(x @ w2, alphas, betas, noise[1]).astype(np.float32),
  }
  splits = split_rows({"numeric": x.astype(np.float32)}, labels, sizes)
  task_specs = (tasks_lib.TaskSpec("y1", tasks_lib.REGRESSION), tasks_lib.TaskSpec("y2", tasks_lib.REGRESSION))
  return DatasetBundle(task_specs, *splits)

"""Δm: the mean relative change of a multi-task method against single-task baselines.

Maninis, Radosavovic & Kokkinos, "Attentive Single-Tasking of Multiple Tasks",
CVPR 2019; Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks:
A Survey", TPAMI 2021 (Eq. 11):

    Δm% = (100 / T) · Σ_t (−1)^{l_t} · (M_t − B_t) / B_t

  T     number of tasks;
  M_t   the method's value of task t's primary metric (mean over seeds);
  B_t   the single-task baseline's value of the same metric (mean over seeds);
  l_t   1 when lower is better for that metric (mse, mae, cross_entropy),
        0 when higher is better (accuracy, auc, r2).

Sign convention: positive Δm means better than the single-task baselines on
average (a lower-is-better metric that goes down, or a higher-is-better metric
that goes up, contributes a positive term); negative means worse.

Δm is linear in each M_t, so the mean over seeds of per-seed Δm (each seed's
values against the same baseline means) equals Δm of the seed means.
"""

from __future__ import annotations

from collections.abc import Mapping
import math

from mtl_research.metrics import HIGHER_IS_BETTER, LOWER_IS_BETTER

FORMULA = "Δm% = (100/T)·Σ_t (−1)^{l_t}·(M_t − B_t)/B_t"
CITATION = "Maninis et al., CVPR 2019; Vandenhende et al., TPAMI 2021"


def lower_is_better(metric: str) -> bool:
  """True for mse, mae, cross_entropy; False for accuracy, auc, r2; ValueError otherwise."""
  if metric in LOWER_IS_BETTER:
    return True
  if metric in HIGHER_IS_BETTER:
    return False
  raise ValueError(f"unknown metric {metric!r}: its better direction is not known")


def relative_terms(
  method: Mapping[str, float], baseline: Mapping[str, float], lower: Mapping[str, bool]
) -> dict[str, float]:
  """Per-task signed relative change (−1)^{l_t}·(M_t − B_t)/B_t (not yet × 100/T).

  `method`, `baseline` and `lower` are keyed by task and must have the same keys.
  Raises ValueError if they do not, or if a baseline value is zero or not finite
  (the relative change is then undefined).
  """
  if not (set(method) == set(baseline) == set(lower)):
    raise ValueError(f"tasks differ: method {sorted(method)}, baseline {sorted(baseline)}, directions {sorted(lower)}")
  if not method:
    raise ValueError("no tasks")
  terms = {}
  for task in method:
    b, m = float(baseline[task]), float(method[task])
    if not math.isfinite(b) or b == 0.0:
      raise ValueError(f"the baseline of task {task!r} is {b}, so its relative change is undefined")
    sign = -1.0 if lower[task] else 1.0
    terms[task] = sign * (m - b) / b
  return terms


def delta_m(method: Mapping[str, float], baseline: Mapping[str, float], lower: Mapping[str, bool]) -> float:
  """Δm in percent: (100/T)·Σ_t (−1)^{l_t}·(M_t − B_t)/B_t; positive = better than the baselines."""
  terms = relative_terms(method, baseline, lower)
  return 100.0 * sum(terms.values()) / len(terms)

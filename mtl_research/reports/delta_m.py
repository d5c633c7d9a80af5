"""Δm: the mean relative change of a multi-task method against single-task baselines.

Maninis, Radosavovic & Kokkinos, "Attentive Single-Tasking of Multiple Tasks",
CVPR 2019; Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks:
A Survey", TPAMI 2021 (Eq. 11):

    Δm% = (100 / T) · Σ_t (−1)^{l_t} · (M_t − B_t) / B_t

  T     number of tasks;
  M_t   the method's value of task t's primary metric;
  B_t   the single-task baseline's value of the same metric;
  l_t   1 when lower is better for that metric (mse, mae, cross_entropy),
        0 when higher is better (accuracy, auc, r2).

Sign convention: positive Δm means better than the single-task baselines on
average (a lower-is-better metric that goes down, or a higher-is-better metric
that goes up, contributes a positive term); negative means worse.

Over seeds, a table row shows the mean ± std of one Δm per seed of the method,
computed in one of two ways (aggregation.py chooses one per table, Table.delta_m_baseline gives
each run's B):

  paired     Δm_s = Δm(M_s, B_s): seed s of the method against the baselines
             trained with the same seed s. With the generated datasets --seed
             also draws the data, so a seed's method and baselines share their
             data and the seed-to-seed spread of the data cancels out of Δm_s
             (a 300-step sweep: gradnorm −2.77 ± 4.50 unpaired, −2.34 and −3.33
             paired). Defined only when every seed of the method has a baseline
             of every task with the same seed. The mean of the Δm_s is not Δm of
             the seed means (each seed has its own B_s).
  unpaired   Δm_s = Δm(M_s, mean over seeds of B): every seed against the same
             baseline means. Δm is linear in each M_t, so the mean of these Δm_s
             equals Δm of the seed means; their spread also holds the spread of
             whatever the seed draws (data included).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    if not usable_baseline(b):
      raise ValueError(f"the baseline of task {task!r} is {b}, so its relative change is undefined")
    sign = -1.0 if lower[task] else 1.0
    terms[task] = sign * (m - b) / b
  return terms


def delta_m(method: Mapping[str, float], baseline: Mapping[str, float], lower: Mapping[str, bool]) -> float:
  """Δm in percent: (100/T)·Σ_t (−1)^{l_t}·(M_t − B_t)/B_t; positive = better than the baselines."""
  terms = relative_terms(method, baseline, lower)
  return 100.0 * sum(terms.values()) / len(terms)


def usable_baseline(value: float) -> bool:
  """A baseline value B_t that Δm can divide by: finite and non-zero."""
  return math.isfinite(value) and value != 0.0


def can_pair(seeds: Iterable[int], seed_baselines: Mapping[int, Mapping[str, float]], tasks: Iterable[str]) -> bool:
  """True when every seed has a usable baseline value of every task with the same seed (paired Δm is defined)."""
  tasks = list(tasks)
  return all(
    seed in seed_baselines and all(usable_baseline(seed_baselines[seed].get(task, math.nan)) for task in tasks)
    for seed in seeds
  )

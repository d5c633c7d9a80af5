"""Bad-input catalogue: values every flag's type accepts but no run can use (issue 14, class 3).

NaN and the infinities of a float flag (core flags and component Params alike,
in any spelling float() reads, 1e999 included), numbers beyond float32's range
(infinities where training computes), a momentum Keras's SGD refuses, seeds
outside the range NumPy seeds with, and the same mistakes in mtl-ablate's
--seeds and --grid values:
each is refused when the flags are parsed, before a run or sweep directory is
created, with one line naming the flag. The contract and the harness are in
tests/catalogue.py.
"""

from __future__ import annotations

from catalogue import ABLATE, Catalogue, check_refused, csv_flags
from conftest import SMALL_RUN_FLAGS
import pytest

from mtl_research.flags import MAX_SEED

catalogue = Catalogue()
case = catalogue.case

NOT_FINITE = "is not a finite number"
NOT_FLOAT32 = "beyond float32's range"


def _small(*extra: str):
  return lambda place: [*SMALL_RUN_FLAGS, *extra]


def _csv(place):
  return csv_flags(place.mixed_csv())


# (flag, value, the run's other flags, what the error line says besides naming the flag)
TRAIN_NON_FINITE = [
  # Core float flags.
  ("learning_rate", "inf", _small(), NOT_FINITE),
  ("learning_rate", "1e999", _small(), NOT_FINITE),  # float() overflows to inf
  ("learning_rate", "nan", _small(), "positive"),  # its own rule speaks first: NaN is not positive
  ("momentum", "nan", _small("--optimizer=sgd"), NOT_FINITE),
  ("momentum", "Infinity", _small("--optimizer=sgd"), "[0.0, 1.0]"),  # its bound speaks first
  ("weight_decay", "inf", _small("--optimizer=adamw"), NOT_FINITE),
  ("weight_decay", "-inf", _small("--optimizer=adamw"), "not a non-negative number"),
  ("lr_decay_rate", "NaN", _small("--lr_schedule=step"), "(0, 1]"),
  ("lr_decay_rate", "inf", _small("--lr_schedule=step"), "(0, 1]"),
  ("learning_rate", "1e39", _small(), NOT_FLOAT32),  # finite in float64, inf in float32
  ("momentum", "1.5", _small("--optimizer=sgd"), "[0.0, 1.0]"),  # Keras's SGD refuses it when built
  # Balancer Params.
  ("uncertainty_init_log_var", "inf", _small("--balancer=uncertainty"), NOT_FINITE),
  ("uncertainty_init_log_var", "-inf", _small("--balancer=uncertainty"), NOT_FINITE),
  ("uncertainty_init_log_var", "nan", _small("--balancer=uncertainty"), NOT_FINITE),
  ("gradnorm_alpha", "nan", _small("--balancer=gradnorm"), NOT_FINITE),
  ("gradnorm_lr", "inf", _small("--balancer=gradnorm"), NOT_FINITE),
  ("uncertainty_init_log_var", "-1e39", _small("--balancer=uncertainty"), NOT_FLOAT32),
  ("task_weights", "price:inf", _small(), "must be finite"),
  # Dataset Params (one float, lists of floats).
  ("synthetic_noise", "inf", _small(), NOT_FINITE),
  ("gradnorm_toy_sigmas", "1,inf", _small("--dataset=gradnorm_toy"), NOT_FINITE),
  ("gradnorm_toy_sigmas", "nan,100", _small("--dataset=gradnorm_toy"), NOT_FINITE),
  ("gradnorm_toy_sigmas", "1,1e39", _small("--dataset=gradnorm_toy"), NOT_FLOAT32),
  ("mmoe_correlation", "nan", _small("--dataset=mmoe_synthetic"), NOT_FINITE),
  ("mmoe_scale", "inf", _small("--dataset=mmoe_synthetic"), NOT_FINITE),
  ("split", "0.6,0.2,nan", _csv, NOT_FINITE),
  # Architecture Params.
  ("l2", "inf", _small(), NOT_FINITE),
  ("l2", "1e39", _small(), NOT_FLOAT32),
  ("dropout", "nan", _small(), NOT_FINITE),
]

for _flag, _value, _others, _says in TRAIN_NON_FINITE:

  @case(f"flag-{_flag}-{_value}")
  def _(place, flag=_flag, value=_value, others=_others, says=_says):
    return [*others(place), f"--{flag}={value}"], [f"--{flag}", says]


# --seed: NumPy's range [0, 2**32 - 1]; below it, and past it, as far as an int64 and further.
OUT_OF_RANGE_SEEDS = [-1, MAX_SEED + 1, 2**63, 2**70]
SEED_RANGE = f"[0, {MAX_SEED}]"

for _seed in OUT_OF_RANGE_SEEDS:

  @case(f"flag-seed-{_seed}")
  def _(place, seed=_seed):
    return [*SMALL_RUN_FLAGS, f"--seed={seed}"], [f"--seed={seed}", SEED_RANGE]


# mtl-ablate: every seed and every grid value is checked as the trainer would check it, before
# SWEEP_DIR is created (none of these sweeps may create it).


def _ablate(place, *args: str) -> list[str]:
  return [f"--sweep_dir={place.path('sweep')}", "--train_steps=40", *args]


for _seeds in ["0,99999999999999", "-1,0", f"0,1,{MAX_SEED + 1}"]:

  @case(f"seeds-{_seeds}", command=ABLATE)
  def _(place, seeds=_seeds):
    return _ablate(place, f"--seeds={seeds}"), [f"--seeds={seeds}", SEED_RANGE, "--seed"]


# (--grid item, the sweep's other flags, the grid value named in the error, what it says besides)
GRID = [
  ("l2=0,inf", (), "l2=inf", NOT_FINITE),
  ("learning_rate=0.01,nan", (), "learning_rate=nan", "positive"),
  ("learning_rate=0.01,-1", (), "learning_rate=-1", "positive"),
  ("weight_decay=0,1e999", ("--optimizer=adamw",), "weight_decay=1e999", NOT_FINITE),
  ("momentum=0.9,1.5", ("--optimizer=sgd",), "momentum=1.5", "[0.0, 1.0]"),
  ("l2=0,1e39", (), "l2=1e39", NOT_FLOAT32),
  ("uncertainty_init_log_var=0,-inf", ("--balancers=uncertainty",), "uncertainty_init_log_var=-inf", NOT_FINITE),
  ("gradnorm_toy_sigmas=1,100;1,inf", ("--dataset=gradnorm_toy",), "gradnorm_toy_sigmas=1,inf", NOT_FINITE),
  ("synthetic_noise=0.1,inf", (), "synthetic_noise=inf", NOT_FINITE),
  ("batch_size=32,abc", (), "batch_size=abc", "'abc'"),
  ("dropout=0.1,1.5", (), "dropout=1.5", "below 1.0"),
  ("hidden_units=16,x", (), "hidden_units=x", "'x' is not an integer"),
]

for _item, _others, _culprit, _says in GRID:

  @case(f"grid-{_item}", command=ABLATE)
  def _(place, item=_item, others=_others, culprit=_culprit, says=_says):
    return _ablate(place, *others, f"--grid={item}"), [f"--grid value {culprit} is invalid", says]


@pytest.mark.parametrize("case", catalogue.cases)
def test_bad_input_is_refused_with_one_line_and_nothing_changes(case, tmp_path, catalogue_run):
  check_refused(case, tmp_path, catalogue_run)

"""The command-line entry points define their own flags when they start, not on import.

mtl-ablate and mtl-benchmark both have a --balancers: defined on import, the two
modules could not share a process (absl's DuplicateFlagError). Each CLI's
flags are parsed here in a FlagValues of their own, and by the scripts
themselves, run as `__main__`.
"""

from __future__ import annotations

import os
import subprocess

from absl import flags
from absl.testing import flagsaver

# All in one process: importing them must not define a flag twice.
from conftest import REPO_ROOT, SMALL_RUN_FLAGS, metrics_of, run_script_in_process, run_train
import numpy as np
import pytest

from mtl_research import flags as flags_lib
from mtl_research.cli import ablate, benchmark, evaluate, summarize
from mtl_research.reports import aggregation

OWN_FLAGS = {
  ablate: (
    "sweep_dir",
    "balancers",
    "seeds",
    "grid",
    "with_single_task",
    "parallel",
    "regression_metric",
    "classification_metric",
  ),
  benchmark: (
    "balancers",
    "repeats",
    "fit_epochs",
    "loop_steps",
    "loop_calls",
    "warmup_steps",
    "bench_batch_size",
    "bench_train_rows",
    "bench_seed",
    "bench_hidden_units",
    "large_steps",
    "wall_long_steps",
  ),
  summarize: ("sweep_dir", "regression_metric", "classification_metric", "plots", "strict"),
  evaluate: ("predictions_out", "export_dir", "metrics_out"),
}


def defined(module) -> flags.FlagValues:
  flag_values = flags.FlagValues()
  module.define_flags(flag_values)
  return flag_values


@pytest.mark.parametrize("module", list(OWN_FLAGS), ids=lambda module: module.__name__.rsplit(".", 1)[-1])
def test_import_defines_none_of_a_clis_own_flags_and_define_flags_all_of_them(module):
  assert not set(OWN_FLAGS[module]) & set(flags.FLAGS)
  flag_values = defined(module)
  assert set(OWN_FLAGS[module]) <= set(flag_values)
  # ablate passes on the flags mtl_research.flags defines; its own must not look like those.
  assert {flag_values.find_module_defining_flag(name) for name in OWN_FLAGS[module]} == {module.__name__}


def test_ablate_parses_its_flags():
  flag_values = defined(ablate)
  flag_values(
    [
      "mtl-ablate",
      "--sweep_dir=/tmp/s",
      "--balancers=fixed,gradnorm",
      "--seeds=0,1",
      "--grid=learning_rate=0.1,0.01",
      "--grid=hidden_units=64,32;16",
      "--with_single_task",
      "--parallel=2",
      "--classification_metric=auc",
    ]
  )
  assert flag_values.sweep_dir == "/tmp/s" and flag_values.balancers == ["fixed", "gradnorm"]
  assert flag_values.seeds == ["0", "1"] and flag_values.parallel == 2 and flag_values.with_single_task
  assert flag_values.grid == ["learning_rate=0.1,0.01", "hidden_units=64,32;16"]
  # No metric given: the summarizer's default applies.
  assert flag_values.regression_metric is None and flag_values.classification_metric == "auc"
  with pytest.raises(flags.IllegalFlagValueError, match=r"<mae\|mse>"):
    flag_values(["mtl-ablate", "--regression_metric=r2"])


def test_benchmark_parses_its_flags():
  flag_values = defined(benchmark)
  flag_values(["mtl-benchmark", "--balancers=gradnorm", "--repeats=2", "--bench_hidden_units=32,16", "--large_steps=0"])
  assert flag_values.balancers == ["gradnorm"] and flag_values.repeats == 2
  assert flag_values.bench_hidden_units == ["32", "16"] and flag_values.large_steps == 0
  assert flag_values.wall_long_steps == benchmark.DEFAULT_WALL_LONG_STEPS
  with pytest.raises(flags.IllegalFlagValueError, match="repeats"):
    flag_values(["mtl-benchmark", "--repeats=0"])


def test_summarize_parses_its_flags_with_the_tables_metric_choices():
  flag_values = defined(summarize)
  flag_values(["mtl-summarize", "--sweep_dir=/tmp/s", "--noplots"])
  assert flag_values.sweep_dir == "/tmp/s" and not flag_values.plots
  assert flag_values.regression_metric == aggregation.DEFAULT_REGRESSION_METRIC == "mae"
  assert flag_values.classification_metric == aggregation.DEFAULT_CLASSIFICATION_METRIC == "accuracy"
  for name, choices in (
    ("regression_metric", aggregation.PRIMARY_REGRESSION_METRICS),
    ("classification_metric", aggregation.PRIMARY_CLASSIFICATION_METRICS),
  ):
    assert list(flag_values[name].parser.enum_values) == list(choices)
    assert list(defined(ablate)[name].parser.enum_values) == list(choices)
  summarize.define_flags(flag_values)  # a second call leaves the flags as they are


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
  """`python scripts/NAME.py ARGS`: the script itself, as `__main__`, in this process."""
  return run_script_in_process(os.path.join(REPO_ROOT, "scripts", f"{name}.py"), *args)


@pytest.mark.parametrize(
  "name, args, message",
  [
    ("benchmark", ("--repeats=0",), "error: flag --repeats=0: 0 is not a positive integer"),
    ("ablate", ("--sweep_dir=unused", "--parallel=0"), "error: flag --parallel=0: 0 is not a positive integer"),
  ],
)
def test_each_script_defines_its_flags_before_parsing(name, args, message):
  done = run_script(name, *args)
  assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == message, done.stderr[-2000:]


# Values of the right type that no run can use are refused when the flags are parsed (issue 14, class 3).

FLOAT_FLAGS = [name for name in flags_lib.our_flag_names() if isinstance(flags.FLAGS[name].parser, flags.FloatParser)]


def test_the_float_flags_are_the_core_ones_and_the_float_params():
  assert {"learning_rate", "momentum", "weight_decay", "lr_decay_rate"} <= set(FLOAT_FLAGS)  # core
  assert {"l2", "dropout", "synthetic_noise", "uncertainty_init_log_var", "gradnorm_alpha"} <= set(FLOAT_FLAGS)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e39"])  # 1e39: inf in float32
@pytest.mark.parametrize("name", FLOAT_FLAGS)
def test_every_float_flag_refuses_nan_and_infinities_naming_itself(name, text):
  with flagsaver.flagsaver():
    flags.FLAGS[name].parse("0.5")  # a value every one of them takes: the rule refuses only what it should
    flags.FLAGS.validate_all_flags()
    with pytest.raises(flags.IllegalFlagValueError, match=f"^flag --{name}="):
      flags.FLAGS[name].parse(text)  # a bound of the parser may refuse it already (-inf below 0)
      flags.FLAGS.validate_all_flags()


def test_seed_range_is_numpys():
  """keras.utils.set_random_seed seeds NumPy's global generator: the bound of --seed is NumPy's, no tighter."""
  np.random.seed(flags_lib.MAX_SEED)
  with pytest.raises(ValueError):
    np.random.seed(flags_lib.MAX_SEED + 1)
  parser = flags.FLAGS["seed"].parser
  assert parser.parse(0) == 0 and parser.parse(str(flags_lib.MAX_SEED)) == flags_lib.MAX_SEED
  for seed in (-1, flags_lib.MAX_SEED + 1):
    with pytest.raises(ValueError, match=f"^{seed} is not an integer in the range \\[0, {flags_lib.MAX_SEED}\\]$"):
      parser.parse(seed)


def test_a_run_trains_at_the_largest_seed(tmp_path):
  """Every seed derived from --seed (data, split shuffle, batch order, initializers, dropout) takes the largest."""
  run_dir = tmp_path / "run"
  proc = run_train(
    f"--run_dir={run_dir}", *SMALL_RUN_FLAGS, "--train_steps=4", "--dropout=0.5", f"--seed={flags_lib.MAX_SEED}"
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert metrics_of(str(run_dir))["test"]


def test_ablate_takes_the_seeds_seed_takes():
  # pylint: disable-next=protected-access
  assert ablate._parse_seeds(["0", str(flags_lib.MAX_SEED)]) == [0, flags_lib.MAX_SEED]

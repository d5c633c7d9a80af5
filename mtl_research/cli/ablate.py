"""`mtl-ablate`: train a sweep (balancers × grid × seeds, + single-task baselines) into one directory.

  python scripts/ablate.py --sweep_dir=DIR --balancers=fixed,uncertainty,gradnorm --seeds=0,1 \\
      --with_single_task --train_steps=300

Every training flag given here (all of `python scripts/train.py --helpfull` but
the ones the sweep sets: --run_dir, --balancer, --seed, --single_task,
--overwrite) is passed to every run. Everything is validated before
SWEEP_DIR is created or anything runs. Running the same command again skips
finished runs, resumes interrupted ones and retries failed ones. See README.md, "Sweeps".
"""

from __future__ import annotations

import os
import re
import sys

from absl import app, flags

from mtl_research import flags as flags_lib
from mtl_research.balancers import BALANCERS
from mtl_research.cli.common import entry_point, parse_flags
from mtl_research.data import DATASETS
from mtl_research.data.bundle import DatasetBundle
from mtl_research.errors import UserError
from mtl_research.files import write_json_atomic
from mtl_research.reports import aggregation, schema
from mtl_research.reports import summarize as summarize_lib
from mtl_research.sweep import pack_memory
from mtl_research.sweep import plan as plan_lib
from mtl_research.sweep import runner as runner_lib

FLAGS = flags.FLAGS
DEFAULT_BALANCERS = ("fixed", "uncertainty", "gradnorm")
LOCK_FILE = ".lock"
DEFAULT_PACK_SIZE = 32


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the sweep's own flags in `flag_values`; run() calls it when the program starts.

  Not on import: mtl-benchmark has a --balancers of its own, and a process that
  imports both modules (a test session) must not define a flag twice. The
  training flags are another matter: importing mtl_research.flags above defines
  them, so that every training flag is also an ablate flag. The names here are
  chosen not to clash with those (the trainer's flags and every component Param).
  """
  flags.DEFINE_string(
    "sweep_dir", None, "Directory of the sweep: sweep.json and runs/<name>/ per run.", flag_values=flag_values
  )
  flags.DEFINE_list(
    "balancers",
    list(DEFAULT_BALANCERS),
    f"Balancers of the multi-task runs (registered: {', '.join(BALANCERS.names())}).",
    flag_values=flag_values,
  )
  flags.DEFINE_list(
    "seeds", ["0", "1", "2"], "Seeds; every configuration is trained once per seed.", flag_values=flag_values
  )
  flags.DEFINE_multi_string(
    "grid",
    [],
    "FLAG=V1,V2,...: a training flag and its values; repeat for more flags (their "
    "cartesian product is trained). Values are separated by ';' instead when one "
    "holds a comma: --grid='hidden_units=64,32;128,64'.",
    flag_values=flag_values,
  )
  flags.DEFINE_bool(
    "with_single_task",
    False,
    "Also train one single-task baseline per task and seed (--balancer=fixed, no grid).",
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "parallel",
    1,
    "Runs trained at once; each gets cores/parallel TensorFlow threads.",
    lower_bound=1,
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "pack_size",
    DEFAULT_PACK_SIZE,
    "Runs trained together in one process and one compiled loop (a pack; README, Sweeps); 1 trains each run "
    "in its own process.",
    lower_bound=1,
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "shard",
    None,
    "i/n: train only the i-th (0 <= i < n) of n deterministic slices of the sweep's runs, so that n machines "
    "sharing a file system (a SLURM array job) train one sweep directory together.",
    flag_values=flag_values,
  )
  # The summarizer's metric choices (reports/aggregation.py), checked here before any training;
  # None leaves the choice to the summarizer's default.
  flags.DEFINE_enum(
    "regression_metric",
    None,
    aggregation.PRIMARY_REGRESSION_METRICS,
    "Test metric of regression tasks in the summary table (default: the summarizer's).",
    flag_values=flag_values,
  )
  flags.DEFINE_enum(
    "classification_metric",
    None,
    aggregation.PRIMARY_CLASSIFICATION_METRICS,
    "Test metric of classification tasks in the summary table (default: the summarizer's).",
    flag_values=flag_values,
  )


class SweepPlan:
  """A validated sweep, ready to run: its directory, definition (sweep.json), runs and passthrough flags."""

  def __init__(
    self,
    directory: str,
    definition: dict,
    specs: list[plan_lib.RunSpec],
    passthrough: list[str],
    shard: tuple[int, int] | None = None,
    pack_size: int = 1,
  ):
    self.directory = directory
    self.definition = definition
    self.specs = specs
    self.passthrough = passthrough
    self.shard = shard  # (i, n): this invocation trains the i-th of n slices of the runs
    self.pack_size = pack_size  # --pack_size, lowered to what fits in memory


def training_flag_names() -> list[str]:
  """Flags a training run accepts: those mtl_research.flags defines."""
  return flags_lib.our_flag_names()


def passthrough_flags() -> list[str]:
  """`--name=value` of every training flag given explicitly on the command line (or in a --flagfile)."""
  result = []
  for name in training_flag_names():
    if not FLAGS[name].present:
      continue
    if name in plan_lib.SWEEP_CONTROLLED:
      raise UserError(f"--{name} is set by the sweep for each run; use {plan_lib.SWEEP_CONTROLLED[name]}.")
    result.append(f"--{name}={flags_lib.value_text(name, FLAGS[name].value)}")
  return result


def _check_values(grid: dict[str, tuple[str, ...]]) -> None:
  """Every grid value must pass its flag's parser and validators, as the trainer would check it."""
  for name, values in grid.items():
    flag = FLAGS[name]
    if flag.present:
      raise UserError(f"--{name} is both given as a flag and swept by --grid; drop one of them.")
    value, present = flag.value, flag.present
    for text in values:
      try:
        flag.parse(text)
        FLAGS.validate_all_flags()
      except (flags.Error, ValueError) as error:
        reason = re.sub(rf"^flag --{re.escape(name)}=.*?: ", "", str(error), count=1)  # absl's, said once already
        raise UserError(f"--grid value {name}={text} is invalid: {reason}") from None
      finally:
        flag.value, flag.present = value, present


def _parse_seeds(items: list[str]) -> list[int]:
  """The seeds, each one that --seed accepts (its parser holds the range), so that no run fails on its seed."""
  try:
    seeds = [int(item) for item in items]
  except ValueError:
    raise UserError(f"--seeds={','.join(items)} is not a comma-separated list of integers.") from None
  for seed in seeds:
    try:
      FLAGS["seed"].parser.parse(str(seed))
    except ValueError as error:
      raise UserError(f"--seeds={','.join(items)}: {error}, the seeds --seed accepts.") from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise UserError(f"--seeds={','.join(items)} must list distinct integers.")
  return seeds


def _parse_balancers(items: list[str]) -> list[str]:
  known = BALANCERS.names()
  if not items:
    raise UserError("--balancers is empty; name at least one balancer.")
  for name in items:
    if name not in known:
      raise UserError(f"--balancers: {name!r} is not a balancer (registered: {', '.join(known)}).")
  if len(set(items)) != len(items):
    raise UserError(f"--balancers={','.join(items)} names a balancer twice.")
  return list(items)


def _bundle(seed: int) -> DatasetBundle:
  """The data the passthrough flags describe, for `seed` (loaded in-process, as the trainer would)."""
  config = flags_lib.config_from_flags()
  return DATASETS.get(config.dataset.name).component(config.dataset.params, seed, None)


def _task_names(bundle: DatasetBundle) -> list[str]:
  """Tasks of the sweep's data, for its single-task baselines."""
  config = flags_lib.config_from_flags()
  if ":" in config.selection and len(bundle.task_names) > 1:
    raise UserError(
      f"--selection={config.selection} names one task, so the single-task baselines of the "
      "others could not be selected; use --selection=mean_loss or last with --with_single_task."
    )
  return list(bundle.task_names)


def plan_from_flags() -> SweepPlan:
  """Validates every ablate flag and builds the sweep; raises UserError, writes nothing."""
  if not FLAGS.sweep_dir:
    raise UserError("--sweep_dir is required: the directory the sweep is written to.")
  balancers = _parse_balancers(FLAGS.balancers)
  seeds = _parse_seeds(FLAGS.seeds)
  passthrough = passthrough_flags()
  grid = plan_lib.parse_grid(FLAGS.grid, training_flag_names())
  _check_values(grid)
  flags_lib.config_from_flags()  # component params that only fail when the config is built
  # The data: its tasks name the baselines, its size bounds the packs (sweep/pack_memory.py).
  bundle = _bundle(seeds[0]) if FLAGS.with_single_task or FLAGS.pack_size > 1 else None
  tasks = _task_names(bundle) if FLAGS.with_single_task and bundle is not None else []
  model_owners = flags_lib.architecture_owners()
  plan_lib.check_model_axes(grid, model_owners, FLAGS.model)
  specs = plan_lib.expand(balancers, seeds, grid, tasks, flags_lib.balancer_owners(), model_owners, FLAGS.model)
  definition = plan_lib.definition(balancers, seeds, grid, passthrough, FLAGS.with_single_task)
  shard = plan_lib.parse_shard(FLAGS.shard) if FLAGS.shard else None
  if shard is not None:
    specs = plan_lib.shard(specs, *shard)
  _check_sweep_dir(FLAGS.sweep_dir, definition)
  pack_size = FLAGS.pack_size
  if bundle is not None and pack_size > 1:
    per_run, available = pack_memory.run_bytes(bundle), pack_memory.available_bytes()
    pack_size = pack_memory.fitting_pack_size(pack_size, FLAGS.parallel, per_run, available)
    if pack_size < FLAGS.pack_size:
      print(
        f"Packs of up to {pack_size} runs, not {FLAGS.pack_size}: a run of this data takes about "
        f"{per_run / 1e6:,.0f} MB, and {FLAGS.parallel} process(es) share {(available or 0) / 1e9:.1f} GB available.",
        file=sys.stderr,
      )
  return SweepPlan(os.path.abspath(FLAGS.sweep_dir), definition, specs, passthrough, shard, pack_size)


def _check_sweep_dir(path: str, definition: dict) -> None:
  """Read-only: a new or empty directory, or one that holds this very sweep (to resume)."""
  sweep_file = os.path.join(path, plan_lib.SWEEP_FILE)
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"--sweep_dir={path} exists and is not a directory.")
  if not os.path.isdir(path) or not os.listdir(path):
    return
  if not os.path.isfile(sweep_file):
    raise UserError(
      f"--sweep_dir={path} is not empty and has no {plan_lib.SWEEP_FILE}, so it is not a sweep; "
      "choose another --sweep_dir."
    )
  try:
    old = schema.read_sweep_file(sweep_file)  # the one reader of sweep.json, as mtl-summarize reads it
  except schema.UnreadableFile as error:
    raise UserError(f"{str(error).rstrip('.')}; choose another --sweep_dir.") from None
  diff = plan_lib.difference(old, definition)
  if diff:
    raise UserError(
      f"--sweep_dir={path} holds a different sweep ({diff}); choose another --sweep_dir, "
      "or run it with its own flags to resume it."
    )


def _write(sweep: SweepPlan) -> None:
  try:
    os.makedirs(os.path.join(sweep.directory, plan_lib.RUNS_DIR), exist_ok=True)
    write_json_atomic(os.path.join(sweep.directory, plan_lib.SWEEP_FILE), sweep.definition)
  except OSError as error:
    raise UserError(f"--sweep_dir={sweep.directory} cannot be written: {error.strerror}.") from None


def _lock(sweep: SweepPlan):
  """Holds SWEEP_DIR/.lock for this process's lifetime, so two invocations never train the same runs.

  The kernel drops the lock when the process dies, however it dies.
  """
  try:
    import fcntl  # pylint: disable=import-outside-toplevel
  except ImportError:  # not POSIX: no lock
    return None
  # One lock per shard: shards of one sweep run side by side (each run's own lock, train/run_lock.py, keeps
  # two trainers out of one run directory); the same shard twice, or the whole sweep twice, is refused.
  name = LOCK_FILE if sweep.shard is None else f"{LOCK_FILE}.shard{sweep.shard[0]}of{sweep.shard[1]}"
  handle = open(os.path.join(sweep.directory, name), "a", encoding="utf-8")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    handle.close()
    which = "" if sweep.shard is None else f" (--shard={sweep.shard[0]}/{sweep.shard[1]})"
    raise UserError(
      f"--sweep_dir={sweep.directory}{which} is being run by another mtl-ablate right now; "
      "wait for it to end or stop it first."
    ) from None
  return handle


def _summarize(directory: str) -> None:
  """Writes the sweep's tables, plots and HParams data (mtl_research.reports)."""
  regression = FLAGS.regression_metric or aggregation.DEFAULT_REGRESSION_METRIC  # None: the summarizer's default
  classification = FLAGS.classification_metric or aggregation.DEFAULT_CLASSIFICATION_METRIC
  try:
    result = summarize_lib.summarize(directory, regression, classification, plots=True)
  except UserError as error:
    print(f"No summary: {error}")
    return
  print(result["markdown"].rstrip())
  print(f"Summary table: {result['results_md']}")


def _main() -> None:
  sweep = plan_from_flags()
  _write(sweep)
  lock = _lock(sweep)  # noqa: F841  (held until the process ends)
  outcome = runner_lib.Runner(
    sweep.directory, sweep.specs, sweep.passthrough, FLAGS.parallel, pack_size=sweep.pack_size
  ).run()
  if outcome.interrupted is not None:
    sys.stderr.write(
      f"Sweep interrupted: {outcome.done} of {outcome.total} runs finished; run the same command again to resume it.\n"
    )
    sys.exit(128 + outcome.interrupted)
  print(
    f"Sweep {sweep.directory}: {outcome.done} of {outcome.total} runs finished "
    f"({outcome.skipped} skipped as already finished, {len(outcome.finished)} trained now), "
    f"{len(outcome.failed)} failed."
  )
  for name in outcome.failed:
    print(f"  failed: {os.path.join(sweep.directory, plan_lib.RUNS_DIR, name, runner_lib.FAILED_FILE)}")
  _summarize(sweep.directory)
  if not outcome.complete:
    sys.exit(1)


main = entry_point(_main)


def run() -> None:
  """Console-script entry point."""
  define_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()

"""`mtl-train`: train one configuration into a run directory."""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile

from absl import app
from absl import flags as absl_flags
import tensorflow as tf

from mtl_research import config as config_lib
from mtl_research import flags as flags_lib
from mtl_research.balancers.base import Balancer
from mtl_research.cli.common import check_flagfiles, entry_point, parse_flags
from mtl_research.data import DATASETS
from mtl_research.data import summary as data_summary
from mtl_research.errors import UserError
from mtl_research.files import write_text_atomic
from mtl_research.optim import model_optimizer
from mtl_research.sweep.plan import PACK_SHARED_FLAGS
from mtl_research.train import components as components_lib
from mtl_research.train import distribution, loop, run_dir, run_lock
from mtl_research.train import pack as pack_lib
from mtl_research.train.interrupt import Interrupted, StopRequest


def define_flags(flag_values: absl_flags.FlagValues = absl_flags.FLAGS) -> None:
  """mtl-train's own flags, which no run records (they choose how runs are trained, not what they are).

  Defined when the program starts, not on import (see cli/ablate.py: mtl-ablate
  has a --seeds of its own).
  """
  absl_flags.DEFINE_list(
    "seeds",
    None,
    "Train one run per seed in this process, together in one compiled loop (a pack): run k is written to "
    "<--run_dir>/seed<k>/ and is exactly the run --seed=k --run_dir=<--run_dir>/seed<k> trains alone.",
    flag_values=flag_values,
  )
  absl_flags.DEFINE_string(
    "pack_file",
    None,
    "Train the runs listed in this JSON file as one pack (written by mtl-ablate; README, Sweeps).",
    flag_values=flag_values,
  )


def _packed() -> bool:
  flags_obj = flags_lib.FLAGS
  return ("seeds" in flags_obj and bool(flags_obj.seeds)) or ("pack_file" in flags_obj and bool(flags_obj.pack_file))


def train(strategy: tf.distribute.Strategy | None = None) -> dict | None:
  """Trains from the parsed flags; raises UserError before writing on bad input.

  `strategy`: the tf.distribute strategy made by `distribution.create` (None:
  one device). Returns the metrics, or None if SIGTERM/SIGINT stopped training
  (after a checkpoint was saved).
  """
  if _packed():
    return _train_packed(strategy)
  # The run directory's lock (train/run_lock.py) is released on every way out, after the last write.
  with StopRequest() as stop, run_lock.RunLock() as lock:
    try:
      return _train(stop, lock, strategy)
    except Interrupted as interrupted:
      print(interrupted, file=sys.stderr)
      return None


@dataclasses.dataclass
class _Settings:
  """What a run takes from the parsed flags: its Config, flags.txt values and HParams."""

  config: config_lib.Config
  values: dict[str, str]
  hparams: dict
  defaults: dict[str, str]

  @classmethod
  def from_flags(cls) -> _Settings:
    config = flags_lib.config_from_flags()
    return cls(config, flags_lib.flag_values(config.run_dir), flags_lib.hparam_values(), flags_lib.flag_defaults())

  @property
  def contract(self) -> tuple[str, dict[str, str], bool, frozenset[str], dict[str, str]]:
    return (self.config.run_dir, self.values, self.config.overwrite, flags_lib.OPERATIONAL, self.defaults)


@dataclasses.dataclass
class _Setup:
  """A run checked, its data loaded and its components built and restored; nothing written yet."""

  settings: _Settings
  found: run_dir.Found
  trainer: loop.Trainer
  summary: str | None
  length: tuple[str, int]
  length_users: list[str]

  def check(self) -> run_dir.Found:
    return run_dir.check(*self.settings.contract, length=self.length, length_users=self.length_users)


def _setup(
  settings: _Settings,
  lock: run_lock.RunLock,
  stop: StopRequest,
  strategy: tf.distribute.Strategy | None,
  log: Callable[[str], None] = print,
  bundles: dict | None = None,
) -> _Setup:
  """Everything before the first write: the run directory checked (and locked when it exists), the data
  loaded (from `bundles`, a cache shared by a pack's runs, when given), the components built and restored.

  Raises UserError; writes nothing. Under multi_worker, a worker that is not
  the chief trains into a scratch directory (removed by the caller).
  """
  config = settings.config
  chief = strategy is None or distribution.is_chief(strategy)
  if chief and os.path.isdir(config.run_dir):  # before reading it: a second trainer is refused at once
    lock.acquire(config.run_dir)
  length = flags_lib.run_length(config.loop)
  # The schedule's declaration is known before the data: a refused extension loads nothing.
  found = run_dir.check(*settings.contract, length=length, length_users=_length_users(config))
  # A resumed run encodes its data with the preprocessing it was trained with.
  fitted = run_dir.read_preprocessing(config.run_dir) if found.resume else None
  key = (config.dataset.name, repr(sorted(config.dataset.params.items())), config.seed, config.single_task)
  bundle = None if bundles is None or fitted is not None else bundles.get(key)
  if bundle is None:
    bundle = DATASETS.get(config.dataset.name).component(config.dataset.params, config.seed, fitted)
    if config.single_task:
      bundle = bundle.only(config.single_task)
    if bundles is not None and fitted is None:
      bundles[key] = bundle
  # Before validating: what was inferred helps read a refusal too (an empty split, too few rows).
  summary = data_summary.render(bundle.summary) if bundle.summary is not None else None
  if summary is not None:
    log(summary.rstrip("\n"))
  bundle.validate(config.loop.batch_size)
  parts = components_lib.build(config, bundle, strategy)
  length_users = _length_users(config, parts.balancer)
  if found.extension is not None:  # the balancer's declaration needs the built balancer
    run_dir.check(*settings.contract, length=length, length_users=length_users)
  scratch = None if chief else tempfile.mkdtemp(prefix=f"mtl-{distribution.worker_name(strategy)}-")
  trainer = loop.Trainer(
    config,
    bundle,
    parts,
    run_dir.RunDir(scratch or config.run_dir),
    log=log,
    hparams=settings.hparams,
    stop=stop,
    resume_from=run_dir.RunDir(config.run_dir),
    resume=found.resume,
  )
  if found.resume:
    try:
      trainer.restore()  # before anything is written: damaged checkpoints are refused here
    except BaseException:
      if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
      raise
  return _Setup(settings, found, trainer, summary, length, length_users)


def _write_start(setup: _Setup, lock: run_lock.RunLock, log: Callable[[str], None] = print) -> None:
  """The first writes of a chief: the run directory created and locked (if new), flags.txt, the data summary."""
  config = setup.settings.config
  if not lock.held:  # a new directory: locked once created, before anything is written into it
    _lock_new_run_dir(lock, config.run_dir, setup.found, setup.check)
  run_dir.prepare(
    *setup.settings.contract,
    preprocessing=setup.trainer.bundle.fitted,
    length=setup.length,
    length_users=setup.length_users,
  )
  if setup.found.extension is not None:
    log(f"Extending {config.run_dir} from {setup.found.extension}.")
  if setup.summary is not None:
    write_text_atomic(os.path.join(config.run_dir, data_summary.SUMMARY_FILE), setup.summary)


def _train_packed(strategy: tf.distribute.Strategy | None) -> dict | None:
  """A pack's training; UserError naming the runs that failed (exit 1) once the others finished."""
  if strategy is not None:
    raise UserError(
      f"--seeds and --pack_file train on one device; --strategy={flags_lib.FLAGS.strategy} is refused with them."
    )
  with StopRequest() as stop:
    try:
      results = _train_pack(stop)
    except Interrupted as interrupted:
      print(interrupted, file=sys.stderr)
      return None
  failed = [result for result in results if result.error is not None]
  if failed:
    raise UserError(
      f"{len(failed)} of {len(results)} runs of the pack failed: "
      + "; ".join(f"{result.name}: {result.error}" for result in failed)
    )
  return {result.name: result.metrics for result in results}


def _train(stop: StopRequest, lock: run_lock.RunLock, strategy: tf.distribute.Strategy | None) -> dict:
  flags_lib.check_unused_flags()
  settings = _Settings.from_flags()
  # Every worker of multi_worker trains and saves (checkpoints may need all of
  # them); only the chief writes the run directory, the others a scratch one.
  chief = strategy is None or distribution.is_chief(strategy)
  setup = _setup(settings, lock, stop, strategy)
  trainer = setup.trainer
  try:
    trainer.compile()  # before anything is written too: --jit_compile=on is refused here if XLA cannot serve
    if chief:
      _write_start(setup, lock)
    metrics = trainer.run()
  finally:
    if not chief:
      shutil.rmtree(trainer.run_dir.path, ignore_errors=True)
  if chief:
    _report(trainer.run_dir, metrics)
  else:
    print(f"{distribution.worker_name(strategy)} finished; the chief wrote {settings.config.run_dir}.")
  return metrics


# --- packs: several runs in this process, trained by one compiled loop (train/pack.py) ------------


@dataclasses.dataclass
class _Member:
  """One run of a pack: its name, command-line arguments (None: the flags as parsed) and log."""

  name: str
  args: list[str] | None
  log: Callable[[str], None]


def _seed_members() -> list[_Member]:
  """The runs of --seeds: the parsed flags with --seed=k and --run_dir=<run_dir>/seed<k>, one per seed."""
  items = flags_lib.FLAGS.seeds
  try:
    seeds = [int(item) for item in items]
  except ValueError:
    raise UserError(f"--seeds={','.join(items)} is not a comma-separated list of integers.") from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise UserError(f"--seeds={','.join(items)} must list distinct integers.")
  for seed in seeds:
    try:
      flags_lib.FLAGS["seed"].parser.parse(str(seed))
    except ValueError as error:
      raise UserError(f"--seeds={','.join(items)}: {error}, the seeds --seed accepts.") from None
  if flags_lib.FLAGS["seed"].present:
    raise UserError("--seed and --seeds are both given; give one of them.")
  return [_Member(f"seed{seed}", None, _prefixed(f"seed{seed}")) for seed in seeds]


def _prefixed(name: str) -> Callable[[str], None]:
  return lambda line: print("\n".join(f"[{name}] {part}" for part in line.split("\n")), flush=True)


def _file_log(name: str, path: str) -> Callable[[str], None]:
  """Appends a member's lines to its own log file (a sweep run's log.txt), and prints them prefixed."""
  shown = _prefixed(name)

  def log(line: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
      handle.write(line + "\n")
    shown(line)

  return log


def read_pack_file(path: str) -> list[_Member]:
  """The runs of --pack_file: JSON {"runs": [{"name", "args", "log"}, ...]}, as mtl-ablate writes it."""
  try:
    with open(path, encoding="utf-8") as handle:
      runs = json.load(handle)["runs"]
    return [
      _Member(str(run["name"]), [str(arg) for arg in run["args"]], _file_log(run["name"], run["log"])) for run in runs
    ]
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise UserError(f"--pack_file={path} is not a pack file written by mtl-ablate ({error}).") from None


def _member_settings(member: _Member, seed_dir: str | None) -> _Settings:
  """Parses the member's flags (its `args`, or the parsed ones with its seed) into its settings."""
  flags_obj = flags_lib.FLAGS
  if member.args is None:
    flags_obj["seed"].value = int(member.name.removeprefix("seed"))
    flags_obj["run_dir"].value = os.path.join(seed_dir or "", member.name)
  else:
    flags_obj.unparse_flags()
    try:
      check_flagfiles(member.args)
      flags_obj([sys.argv[0], *member.args])
    except absl_flags.Error as error:
      raise UserError(" ".join(str(error).split()).removeprefix("ERROR:: ")) from None
    if "pack_file" in flags_obj and flags_obj.pack_file or "seeds" in flags_obj and flags_obj.seeds:
      raise UserError("a run of a pack cannot itself be a pack (--pack_file, --seeds).")
    flags_lib.check_unused_flags(warn=member.log)
  return _Settings.from_flags()


def _train_pack(stop: StopRequest) -> list[pack_lib.MemberResult]:
  """Trains the runs of --seeds or --pack_file as one pack.

  --seeds: every mistake is refused before anything is written, as for one
  run. --pack_file (a sweep's pack): a run that cannot start (a refused run
  directory, a flag error) fails alone, and the others train.
  """
  strict = "seeds" in flags_lib.FLAGS and bool(flags_lib.FLAGS.seeds)
  if strict:
    members = _seed_members()
    flags_lib.check_unused_flags()
    seed_dir = flags_lib.FLAGS.run_dir or flags_lib.default_run_dir()
  else:
    members, seed_dir = read_pack_file(flags_lib.FLAGS.pack_file), None
  results = {member.name: pack_lib.MemberResult(member.name) for member in members}
  bundles: dict = {}
  with contextlib.ExitStack() as locks:
    setups: list[tuple[_Member, _Setup, run_lock.RunLock]] = []
    for member in members:
      lock = locks.enter_context(run_lock.RunLock())
      try:
        setup = _setup(_member_settings(member, seed_dir), lock, stop, None, member.log, bundles)
      except UserError as error:
        if strict:
          raise
        results[member.name].error = str(error)
        member.log(f"error: {error}")
        continue
      setups.append((member, setup, lock))
    if not setups:
      return list(results.values())
    _check_pack(setups)
    first = setups[0][1].settings.config
    trainer = pack_lib.PackTrainer(
      [setup.trainer for _, setup, _ in setups],
      [member.name for member, _, _ in setups],
      first.loop.jit_compile == config_lib.JitMode.AUTO,
      print,
    )
    trainer.compile()  # before anything is written: --jit_compile=on is refused here if XLA cannot serve
    for member, setup, lock in setups:
      _write_start(setup, lock, member.log)
    for result in trainer.run():
      results[result.name] = result
    for member, setup, _ in setups:
      metrics = results[member.name].metrics
      if metrics is not None:
        _report(setup.trainer.run_dir, metrics, member.log)
  return [results[member.name] for member in members]


def _check_pack(setups: list) -> None:
  """UserError unless the runs can share one process and one compiled loop."""
  first = setups[0][1].settings
  for member, setup, _ in setups[1:]:
    for name in PACK_SHARED_FLAGS:
      if setup.settings.values.get(name) != first.values.get(name):
        raise UserError(
          f"the runs of a pack must share --{name}; {member.name} has --{name}={setup.settings.values.get(name)}, "
          f"{setups[0][0].name} --{name}={first.values.get(name)}."
        )


def _lock_new_run_dir(
  lock: run_lock.RunLock, path: str, found: run_dir.Found, check: Callable[[], run_dir.Found]
) -> None:
  """Creates run directory `path`, which did not exist when training started, and locks it.

  Not before: a refused command must not leave a directory behind. Another
  trainer may have written a run there since `found` (what `check` said then)
  was read, while this one loaded its data: refused unless `check` still says
  the same.
  """
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as error:
    raise UserError(f"--run_dir={path} cannot be written: {error.strerror}.") from None
  lock.acquire(path)
  if check() != found:
    raise UserError(
      f"--run_dir={path} was written by another trainer while this one was starting; run the command again "
      "to continue from what it wrote, or choose another --run_dir."
    )


def _length_users(config: config_lib.Config, balancer: Balancer | None = None) -> list[str]:
  """The flags whose components declare that their rule reads the run's length (an extension is refused).

  The components say so themselves (the schedule in model_optimizer, a balancer
  by `uses_run_length`); `balancer` None: not built yet.
  """
  users = []
  schedule = model_optimizer.run_length_dependence(config.optimizer)
  if schedule is not None:
    users.append(schedule)
  if balancer is not None and balancer.uses_run_length:
    users.append(f"--balancer={config.balancer.name}")
  return users


def _report(run: run_dir.RunDir, metrics: dict, log: Callable[[str], None] = print) -> None:
  for task, values in metrics["test"].items():
    shown = ", ".join(f"{name} {_number(value)}" for name, value in values.items())
    log(f"test {task}: {shown}")
  log(f"weights: {', '.join(f'{k} {v:.4f}' for k, v in metrics['weights'].items())}")
  log(f"Results: {run.metrics_file}")
  log(f"TensorBoard: tensorboard --logdir {os.path.abspath(run.path)}")


def _number(value: float | None) -> str:
  return "undefined" if value is None else f"{value:.4f}"  # null in metrics.json: the log said why


def _main() -> None:
  # Before TensorFlow runs anything: a sweep runs several trainings side by side.
  if flags_lib.FLAGS.intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(flags_lib.FLAGS.intra_op_threads)
  if flags_lib.FLAGS.inter_op_threads:
    tf.config.threading.set_inter_op_parallelism_threads(flags_lib.FLAGS.inter_op_threads)
  if _packed() and flags_lib.FLAGS.strategy != config_lib.StrategyName.DEFAULT:
    raise UserError(
      f"--seeds and --pack_file train on one device; --strategy={flags_lib.FLAGS.strategy} is refused with them."
    )
  # Before any TensorFlow op: logical devices and collectives are fixed at start-up.
  strategy = distribution.create(flags_lib.FLAGS.strategy, flags_lib.FLAGS.cpu_replicas)
  try:
    train(strategy)
  except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
    if strategy is None:
      raise
    reason = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    raise UserError(
      f"the workers lost contact ({reason[:200]}); once all are up, run the same command on "
      "each to resume from the last checkpoint."
    ) from None


main = entry_point(_main)


def run() -> None:
  """Console-script entry point."""
  define_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()

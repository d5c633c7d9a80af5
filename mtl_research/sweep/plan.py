"""What a sweep holds: the grid, the runs it expands to, and their names.

Pure functions of their arguments (no absl, no TensorFlow), so the expansion
and its mistakes are tested without training anything.

A sweep is balancers × grid × seeds multi-task runs, plus, with
`with_single_task`, one single-task baseline per task and seed (balancer
`fixed`, no grid: a baseline is the reference every grid point is compared
with). Each run is named from its configuration, e.g.
`gradnorm__gradnorm_alpha=0.5__learning_rate=0.001__seed1` or
`single_task=price__seed0`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import hashlib
import itertools
import math
import re

from mtl_research.errors import UserError

# The sweep directory's layout, here (pure, no imports of the trainer or the runner) so that
# reports/ can read a sweep directory without importing the runner:
# SWEEP_DIR/SWEEP_FILE holds definition(); SWEEP_DIR/RUNS_DIR/<RunSpec.name>/ is each run's directory.
SWEEP_FILE = "sweep.json"
RUNS_DIR = "runs"

# Training flags the sweep sets itself, and the ablate flag to use instead.
SWEEP_CONTROLLED = {
  "run_dir": "--sweep_dir (each run is written to SWEEP_DIR/runs/<name>)",
  "balancer": "--balancers",
  "seed": "--seeds",
  "single_task": "--with_single_task",
  "overwrite": "another --sweep_dir (a sweep never deletes runs)",
}
# Set per run from --parallel so that parallel runs do not oversubscribe the cores.
THREAD_FLAGS = ("intra_op_threads", "inter_op_threads")
BASELINE_BALANCER = "fixed"
# Dropped from single-task baselines: they name the other tasks, which a baseline does not have.
NOT_FOR_BASELINES = ("task_weights",)
MAX_NAME_LENGTH = 200
# What the runs of one pack (one process, one compiled loop: train/pack.py) must share: the loop's shapes
# and what the process sets once for all of them. Runs that differ in one of these go to different packs.
PACK_SHARED_FLAGS = ("batch_size", "steps_per_loop", "jit_compile", "executor", "strategy", "deterministic")

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run of a sweep: the flags the sweep sets for it, and its directory name."""

  name: str
  balancer: str
  seed: int
  grid: tuple[tuple[str, str], ...] = ()
  single_task: str | None = None

  def flags(self) -> list[str]:
    """The run's own flags (the sweep's passthrough flags come on top)."""
    args = [f"--balancer={self.balancer}", f"--seed={self.seed}"]
    args += [f"--{name}={value}" for name, value in self.grid]
    if self.single_task:
      args.append(f"--single_task={self.single_task}")
    return args

  def to_json(self) -> dict:
    """The content of the run's run.json."""
    return {
      "name": self.name,
      "balancer": self.balancer,
      "seed": self.seed,
      "grid": dict(self.grid),
      "single_task": self.single_task,
    }


def sanitize(text: str) -> str:
  """`text` with every character outside [A-Za-z0-9._=-] replaced by '_'."""
  return _UNSAFE.sub("_", text)


def run_name(balancer: str | None, grid: Iterable[tuple[str, str]], seed: int, single_task: str | None = None) -> str:
  """The directory name of a run, readable and filesystem-safe."""
  parts = [f"single_task={single_task}"] if single_task else [balancer or ""]
  parts += [f"{name}={value}" for name, value in grid]
  parts.append(f"seed{seed}")
  name = sanitize("__".join(parts))
  if len(name) > MAX_NAME_LENGTH:  # keep names under the usual 255-byte file-name limit
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:10]
    name = f"{name[: MAX_NAME_LENGTH - 11]}-{digest}"
  return name


def split_values(text: str) -> list[str]:
  """Grid values: separated by ';' when the text has one (for list values like 16,8), else by ','."""
  separator = ";" if ";" in text else ","
  return [value.strip() for value in text.split(separator)]


def parse_grid(items: Sequence[str], training_flags: Iterable[str]) -> dict[str, tuple[str, ...]]:
  """`--grid` items `flag=v1,v2,...` as {flag: values}, sorted by flag; UserError naming the item.

  `training_flags` are the flags a training run accepts.
  """
  known = set(training_flags)
  grid: dict[str, tuple[str, ...]] = {}
  for item in items:
    name, sep, text = item.partition("=")
    name = name.strip().removeprefix("--")
    if not sep or not name:
      raise UserError(f"--grid={item} is not of the form FLAG=VALUE,VALUE,... (e.g. --grid=learning_rate=0.001,0.01).")
    if name in SWEEP_CONTROLLED:
      raise UserError(f"--grid={item}: --{name} is set by the sweep; use {SWEEP_CONTROLLED[name]}.")
    if name in THREAD_FLAGS:
      raise UserError(
        f"--grid={item}: --{name} is set by the sweep from --parallel; pass it as a plain flag to fix it for every run."
      )
    if name not in known:
      raise UserError(
        f"--grid={item}: --{name} is not a training flag (python scripts/train.py --helpfull lists them)."
      )
    if name in grid:
      raise UserError(f"--grid={item}: --{name} is in --grid twice; give all its values in one item.")
    values = split_values(text)
    if any(not value for value in values):
      raise UserError(f"--grid={item} has an empty value.")
    if len(set(values)) != len(values):
      raise UserError(f"--grid={item} lists a value twice.")
    grid[name] = tuple(values)
  return dict(sorted(grid.items()))


def _points(grid: Mapping[str, Sequence[str]]) -> list[tuple[tuple[str, str], ...]]:
  names = sorted(grid)
  return [tuple(zip(names, values)) for values in itertools.product(*(grid[name] for name in names))]


def _balancer_points(
  balancer: str,
  grid: Mapping[str, Sequence[str]],
  owners: Mapping[str, frozenset[str]],
  model_owners: Mapping[str, frozenset[str]],
  model: str,
) -> list[tuple[tuple[str, str], ...]]:
  """The grid points of one balancer's runs: its axes, and at each point the axes its model reads."""
  common = {k: v for k, v in grid.items() if k not in model_owners and (k not in owners or balancer in owners[k])}
  result = []
  for point in _points(common):
    chosen = dict(point).get("model", model)
    own = {k: v for k, v in grid.items() if k in model_owners and chosen in model_owners[k]}
    result += [tuple(sorted(point + extra)) for extra in _points(own)]
  return result


def check_model_axes(grid: Mapping[str, Sequence[str]], model_owners: Mapping[str, frozenset[str]], model: str) -> None:
  """UserError for an architecture's grid axis that no run's architecture reads (it would change nothing)."""
  models = set(grid.get("model", (model,)))
  for name in grid:
    if name in model_owners and not models & model_owners[name]:
      raise UserError(
        f"--grid={name}=...: --{name} is read only by {', '.join(sorted(model_owners[name]))}, and no run of "
        f"this sweep uses one (--model: {', '.join(sorted(models))})."
      )


def expand(
  balancers: Sequence[str],
  seeds: Sequence[int],
  grid: Mapping[str, Sequence[str]],
  task_names: Sequence[str] = (),
  owners: Mapping[str, frozenset[str]] | None = None,
  model_owners: Mapping[str, frozenset[str]] | None = None,
  model: str = "",
) -> list[RunSpec]:
  """Every run of the sweep, one seed after another (so a partial sweep already compares
  every configuration at the first seed); baselines for `task_names` follow each seed's
  multi-task runs. UserError if two runs would get the same name.

  `owners` maps a flag read only by some balancers to them: such a grid axis
  applies to those balancers' runs only (a fixed-weights run does not repeat
  once per --gradnorm_alpha value). `model_owners` does the same for flags read
  only by some architectures: such an axis applies to the runs whose `--model`
  (the grid's, else `model`) reads it, so one sweep compares architectures each
  at its own widths (`--grid=model=shared_bottom,mmoe --grid=expert_units=16`).
  """
  owners, model_owners = owners or {}, model_owners or {}
  points = {b: _balancer_points(b, grid, owners, model_owners, model) for b in balancers}
  specs = []
  for seed in seeds:
    for balancer in balancers:
      for point in points[balancer]:
        specs.append(RunSpec(run_name(balancer, point, seed), balancer, seed, point))
    for task in task_names:
      specs.append(RunSpec(run_name(None, (), seed, task), BASELINE_BALANCER, seed, (), task))
  seen: dict[str, RunSpec] = {}
  for spec in specs:
    if spec.name in seen:
      raise UserError(
        f"Two runs of the sweep would share the directory name {spec.name!r} "
        f"({' '.join(seen[spec.name].flags())} and {' '.join(spec.flags())}); "
        "give grid values that differ in letters, digits or '._=-'."
      )
    seen[spec.name] = spec
  return specs


def definition(
  balancers: Sequence[str],
  seeds: Sequence[int],
  grid: Mapping[str, Sequence[str]],
  passthrough: Sequence[str],
  with_single_task: bool,
) -> dict:
  """The content of sweep.json: what the sweep is, independent of how it is run."""
  return {
    "balancers": list(balancers),
    "seeds": [int(seed) for seed in seeds],
    "grid": {name: list(values) for name, values in sorted(grid.items())},
    "flags": list(passthrough),
    "with_single_task": bool(with_single_task),
  }


_WHAT = {
  "balancers": "--balancers",
  "seeds": "--seeds",
  "grid": "--grid",
  "flags": "training flags",
  "with_single_task": "--with_single_task",
}


def difference(old: Mapping, new: Mapping) -> str | None:
  """The first difference between two sweep definitions in words, or None if they are equal."""
  for key in _WHAT:
    if old.get(key) != new.get(key):
      return f"{_WHAT[key]} {_show(old.get(key))} there, {_show(new.get(key))} now"
  return None


def _join(values: Sequence[str]) -> str:
  return (";" if any("," in value for value in values) else ",").join(values)


def _show(value) -> str:
  if isinstance(value, list):
    return _join([str(item) for item in value]) or "(none)"
  if isinstance(value, dict):
    return " ".join(f"{name}={_join(values)}" for name, values in value.items()) or "(none)"
  return str(value)


def packs(specs: Sequence[RunSpec], pack_size: int, dealt: bool = False) -> list[list[RunSpec]]:
  """The runs grouped into packs of at most `pack_size`, each of runs that share PACK_SHARED_FLAGS.

  Within a group (runs whose grid values of PACK_SHARED_FLAGS agree; the other
  flags are the same for all) runs are ordered by configuration, then seed.
  By default each pack takes the next runs of that order, so one
  configuration's seeds train together and its row of the results table is
  complete early. `dealt`: the runs are dealt round-robin instead, so every pack
  holds the same mix of configurations and the packs take about the same time
  (a GradNorm run costs more than a fixed one): for when all packs train at once.
  """
  if pack_size < 1:
    raise ValueError(f"pack_size must be at least 1, not {pack_size}")
  groups: dict[tuple, list[RunSpec]] = {}
  for spec in specs:
    key = tuple((name, value) for name, value in spec.grid if name in PACK_SHARED_FLAGS)
    groups.setdefault(key, []).append(spec)
  result = []
  for group in groups.values():
    ordered = sorted(group, key=lambda spec: (spec.balancer, spec.single_task or "", spec.grid, spec.seed))
    # As few packs as the size allows, of sizes that differ by one at most (a pack's time grows with its size).
    count = math.ceil(len(ordered) / pack_size)
    if dealt:
      result += [ordered[i::count] for i in range(count)]
    else:
      bounds = [round(i * len(ordered) / count) for i in range(count + 1)]
      result += [ordered[bounds[i] : bounds[i + 1]] for i in range(count)]
  return result


def parse_shard(text: str) -> tuple[int, int]:
  """`--shard=i/n` (0 ≤ i < n) as (i, n); UserError naming the value."""
  index, sep, count = text.partition("/")
  try:
    i, n = int(index), int(count)
  except ValueError:
    i, n = -1, 0
  if not sep or n < 1 or not 0 <= i < n:
    raise UserError(f"--shard={text} is not of the form i/n with 0 <= i < n (e.g. --shard=0/4).")
  return i, n


def shard(specs: Sequence[RunSpec], index: int, count: int) -> list[RunSpec]:
  """The `index`-th of `count` deterministic slices of the plan: every count-th run, from the index-th.

  Each run belongs to exactly one shard, and the slices depend only on the plan
  (the same flags give the same slices on every machine).
  """
  return list(specs[index::count])

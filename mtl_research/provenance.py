"""Where a run came from: its provenance.json, one entry per training segment.

A bit-identical rerun needs the same code, library versions, machine type,
thread and executor settings and loop mode (README, "Reproducibility"). A run
directory records them in provenance.json, written atomically beside
metrics.json:

  {"schema_version": 1, "segments": [SEGMENT, ...]}

one SEGMENT per invocation of the trainer on the run (a run resumed twice has
three), appended when training starts and completed when it ends:

  started, ended      UTC times, ISO 8601: the trainer process's start (data loading and compiling
                      included) and end ("ended" null while running, or if the process was killed)
  training_started    when the compiled loop started (the run directory already written)
  wall_seconds        ended − started
  outcome             running (or killed), finished, interrupted (SIGTERM/SIGINT), failed
  steps               {"from": step restored, "to": step reached}
  environment         what the results may depend on (ENVIRONMENT_KEYS), from `environment()`
  host, argv          where and how it ran (not compared: many machines are one type)

`differences` says in which environment keys a set of segments differ, for
mtl-summarize's notes. Reading and comparing needs no TensorFlow; `environment`
imports it to ask for its version and devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import dataclasses
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
from typing import Any

from mtl_research import __version__
from mtl_research.errors import UserError
from mtl_research.files import write_json_atomic

PROVENANCE_FILE = "provenance.json"
SCHEMA_VERSION = 1

RUNNING, FINISHED, INTERRUPTED, FAILED = "running", "finished", "interrupted", "failed"

# The environment entries a rerun's bits may depend on, in the order notes list them.
ENVIRONMENT_KEYS = (
  "package_version",
  "git_commit",
  "git_dirty",
  "python",
  "tensorflow",
  "numpy",
  "platform",
  "cpu",
  "gpus",
  "intra_op_threads",
  "inter_op_threads",
  "executor",
  "loop",
  "deterministic",
  "strategy",
  "replicas",
)


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """How the trainer runs the loop: what TensorFlow's settings alone do not say."""

  executor: str  # the executor the graph loop runs on, after --executor=auto is resolved
  xla: bool  # the loop compiled with XLA
  deterministic: bool  # op determinism on
  strategy: str  # the --strategy
  replicas: int  # replicas in sync


def _iso(moment: datetime.datetime) -> str:
  return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _process_start() -> datetime.datetime:
  """When this process started (Linux: from /proc), else when this module was imported (at start-up too)."""
  try:
    with open("/proc/self/stat", encoding="ascii") as handle:
      ticks = int(handle.read().rpartition(")")[2].split()[19])  # field 22, starttime, after the command name
    with open("/proc/stat", encoding="ascii") as handle:
      boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
    return datetime.datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), datetime.UTC)
  except (OSError, ValueError, IndexError, StopIteration):
    return _IMPORTED


_IMPORTED = datetime.datetime.now(datetime.UTC)


def _cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo on Linux), else what the platform module says."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
      for line in handle:
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "cpu model"):
          return value.strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _git(directory: str, *args: str) -> str | None:
  try:
    proc = subprocess.run(
      ["git", "-C", directory, *args], capture_output=True, text=True, timeout=10, check=False, stdin=subprocess.DEVNULL
    )
  except (OSError, subprocess.SubprocessError):
    return None
  return proc.stdout.strip() if proc.returncode == 0 else None


def code_version(package_dir: str | None = None) -> tuple[str | None, bool | None]:
  """(commit, whether tracked files differ from it) of the checkout the package runs from; (None, None) if none.

  `package_dir`: the package's directory (default: this package's).

  Only a checkout whose top level holds this package counts: a package
  installed into a virtual environment that happens to sit inside another
  repository is not that repository's code. Untracked files are not counted:
  run directories inside a checkout would always make it "dirty".
  """
  package_dir = package_dir or os.path.dirname(os.path.abspath(__file__))
  top = _git(package_dir, "rev-parse", "--show-toplevel")
  if top is None or os.path.realpath(os.path.dirname(package_dir)) != os.path.realpath(top):
    return None, None
  commit = _git(top, "rev-parse", "HEAD")
  status = _git(top, "status", "--porcelain", "--untracked-files=no")
  return commit, (bool(status) if status is not None else None)


def environment(loop: LoopSettings) -> dict[str, Any]:
  """The ENVIRONMENT_KEYS of this process, the trainer's `loop` settings included."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  commit, dirty = code_version()
  gpus = []
  for device in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(device)
    gpus.append(str(details.get("device_name", device.name)))
  values = {
    "package_version": __version__,
    "git_commit": commit,
    "git_dirty": dirty,
    "python": platform.python_version(),
    "tensorflow": tf.__version__,
    "numpy": np.__version__,
    "platform": f"{platform.system()} {platform.machine()}",
    "cpu": _cpu_model(),
    "gpus": gpus,
    # 0: TensorFlow's default (as many as the cores it sees).
    "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    "executor": loop.executor,
    "loop": "xla" if loop.xla else "graph",
    "deterministic": loop.deterministic,
    "strategy": loop.strategy,
    "replicas": loop.replicas,
  }
  assert tuple(values) == ENVIRONMENT_KEYS
  return values


# The file.


def read(path: str) -> list[dict[str, Any]]:
  """The segments recorded in provenance file `path` ([] if there is none); UserError naming the file if damaged."""
  if not os.path.exists(path):
    return []
  try:
    with open(path, encoding="utf-8") as handle:
      content = json.load(handle)
  except (OSError, ValueError) as error:
    raise UserError(f"{path} cannot be read as JSON ({error}).") from None
  if not isinstance(content, dict) or not isinstance(content.get("segments"), list):
    raise UserError(f"{path} is not a provenance file: it must be an object with a list of segments.")
  version = content.get("schema_version")
  if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
    raise UserError(
      f"{path} has schema_version {version!r}, which this version of mtl_research ({__version__}) cannot read."
    )
  for number, segment in enumerate(content["segments"]):
    if not isinstance(segment, dict) or not isinstance(segment.get("environment"), dict):
      raise UserError(f"{path}: segments[{number}] is not an object with an environment.")
  return content["segments"]


class Recorder:
  """Appends this invocation's segment to a run directory's provenance.json and completes it at the end."""

  def __init__(self, run_path: str, loop: LoopSettings):
    self.path = os.path.join(run_path, PROVENANCE_FILE)
    self.loop = loop
    self._segments: list[dict[str, Any]] = []
    self._began: datetime.datetime | None = None

  def start(self, step: int) -> None:
    """Records that training starts at `step` (outcome "running" until `end`)."""
    try:
      self._segments = read(self.path)
    except UserError:  # a damaged record of past segments must not stop training; it is started anew
      self._segments = []
    self._began = _process_start()
    self._segments.append(
      {
        "started": _iso(self._began),
        "training_started": _iso(datetime.datetime.now(datetime.UTC)),
        "ended": None,
        "wall_seconds": None,
        "outcome": RUNNING,
        "steps": {"from": step, "to": step},
        "environment": environment(self.loop),
        "host": socket.gethostname(),
        "argv": list(sys.argv),
      }
    )
    self._write()

  def end(self, outcome: str, step: int) -> None:
    """Completes the segment `start` appended: how it ended, at which step, and when."""
    if self._began is None:
      return
    segment = self._segments[-1]
    ended = datetime.datetime.now(datetime.UTC)
    segment["ended"] = _iso(ended)
    segment["wall_seconds"] = round((ended - self._began).total_seconds(), 3)
    segment["outcome"] = outcome
    segment["steps"]["to"] = step
    self._write()

  def _write(self) -> None:
    write_json_atomic(self.path, {"schema_version": SCHEMA_VERSION, "segments": self._segments})


# Comparing runs.


def _text(value: Any) -> str:
  if isinstance(value, list):
    return ", ".join(str(item) for item in value) or "none"
  if value is None:
    return "unknown"
  return str(value).lower() if isinstance(value, bool) else str(value)


def differences(runs: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[str]:
  """For each environment key whose values differ between the segments of `runs` ({run: segments}), one phrase.

  e.g. "tensorflow (2.21.0 in 8 runs, 2.20.0 in 2 runs)". A run whose segments
  differ among themselves counts under each of its values.
  """
  phrases = []
  for key in ENVIRONMENT_KEYS:
    counts: dict[str, int] = {}
    for segments in runs.values():
      for text in sorted({_text(segment.get("environment", {}).get(key)) for segment in segments}):
        counts[text] = counts.get(text, 0) + 1
    if len(counts) > 1:
      shown = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
      parts = [f"{text} in {count} run{'s' if count != 1 else ''}" for text, count in shown]
      phrases.append(f"{key} ({', '.join(parts)})")
  return phrases

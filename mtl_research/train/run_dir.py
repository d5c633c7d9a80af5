"""The run directory contract that later tools read.

  flags.txt     a flagfile reproducing the run (--flagfile=<run_dir>/flags.txt)
  metrics.json  {"val": {task: {metric: v}}, "test": {...}, "weights": {task: w}, "steps": n, ...}
  train/ eval/  TensorBoard event files
  ckpt/         tf.train.CheckpointManager checkpoints (model, optimizer, balancer, step)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Iterable, Sequence

from mtl_research.errors import UserError
from mtl_research.train.writers import write_text_atomic

FLAGS_FILE = "flags.txt"
METRICS_FILE = "metrics.json"


@dataclasses.dataclass(frozen=True)
class RunDir:
  path: str

  @property
  def flags_file(self) -> str:
    return os.path.join(self.path, FLAGS_FILE)

  @property
  def metrics_file(self) -> str:
    return os.path.join(self.path, METRICS_FILE)

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.path, "ckpt")

  @property
  def train_logdir(self) -> str:
    return os.path.join(self.path, "train")

  @property
  def eval_logdir(self) -> str:
    return os.path.join(self.path, "eval")


def _as_dict(lines: Iterable[str]) -> dict[str, str]:
  """Flag lines (`--name=value`, `--name`, `--noname`) as {name: value}."""
  result = {}
  for line in lines:
    line = line.strip()
    if not line.startswith("--"):
      continue
    name, sep, value = line[2:].partition("=")
    result[name] = value if sep else "true"
    if not sep and name.startswith("no"):
      result[name[2:]] = "false"
      del result[name]
  return result


def differences(old_lines: Sequence[str], new_lines: Sequence[str], ignore: Iterable[str]) -> list[str]:
  """Human-readable differences between two flag sets, ignoring `ignore`."""
  old, new = _as_dict(old_lines), _as_dict(new_lines)
  ignored = set(ignore)
  return [f"--{name}={old.get(name, '<unset>')} there, {new.get(name, '<unset>')} now"
          for name in sorted(set(old) | set(new))
          if name not in ignored and old.get(name) != new.get(name)]


def prepare(path: str, flag_lines: Sequence[str], overwrite: bool, operational: Iterable[str]) -> RunDir:
  """Creates or reopens a run directory; refuses one written with other flags.

  Raises UserError before changing anything on disk when the directory cannot
  be used. With `overwrite`, an existing run directory is deleted first.
  """
  run = RunDir(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"--run_dir={path} exists and is not a directory.")
  if os.path.isdir(path) and os.listdir(path):
    if not os.path.isfile(run.flags_file):
      raise UserError(f"--run_dir={path} is not empty and has no {FLAGS_FILE}, so it is not a run directory; "
                      "choose another --run_dir.")
    with open(run.flags_file, encoding="utf-8") as handle:
      old_lines = handle.read().splitlines()
    diffs = differences(old_lines, flag_lines, operational)
    if overwrite:
      shutil.rmtree(path)
    elif diffs:
      raise UserError(f"--run_dir={path} was written with different flags ({'; '.join(diffs[:3])}); "
                      "pass --overwrite to replace it or choose another --run_dir.")
  try:
    os.makedirs(path, exist_ok=True)
    write_text_atomic(run.flags_file, "\n".join(flag_lines) + "\n")
  except OSError as error:
    raise UserError(f"--run_dir={path} cannot be written: {error.strerror}.") from None
  return run

"""The bad-input catalogue's harness: one contract for every command's refusal.

A catalogue module (tests/test_bad_inputs*.py) registers cases with its own
`Catalogue` and parametrizes one test over `catalogue.cases`, which calls
`check_refused`. A case is a function of a `Place` (its tmp_path and, on
demand, a private copy of a small finished CSV run) returning the command's
arguments and the substrings its error line must contain.

The contract of a refused command: a non-zero exit status; stderr ends with ONE
line "error: ..." that names the culprit (flag, file, field, column, line, run
directory); no traceback; and nothing that was on disk before the command
changed (no file written, changed or deleted, no directory created, so a run
or sweep directory that did not exist is not created).

Every command runs in this process (conftest.run_cli_in_process): a case
costs milliseconds unless it reaches the data or the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import os
from pathlib import Path
import shutil
import stat
import subprocess

from conftest import REPO_ROOT, run_cli_in_process, run_train

from mtl_research.train import run_dir as run_dir_lib

try:
  from tests import table_helpers as helpers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
  import table_helpers as helpers

ROWS = 200  # rows of the mixed CSV file: 195 with every target, 117 in the train split
TASKS_FLAG = "--tasks=b:classification,c:classification,y:regression"
SMALL_TABLE_FLAGS = (
  "--hidden_units=16",
  "--train_steps=40",
  "--eval_every=20",
  "--checkpoint_every=20",
  "--steps_per_loop=20",
)

TRAIN, EVALUATE, ABLATE, SUMMARIZE = "train", "evaluate", "ablate", "summarize"


def run_command(command: str, *args: str) -> subprocess.CompletedProcess:
  """`python scripts/<command>.py ARGS`, in this process."""
  if command == TRAIN:
    return run_train(*args)
  from mtl_research.cli import ablate, evaluate, summarize  # pylint: disable=g-import-not-at-top

  module = {EVALUATE: evaluate, ABLATE: ablate, SUMMARIZE: summarize}[command]
  return run_cli_in_process(module, os.path.join(REPO_ROOT, "scripts", f"{command}.py"), *args)


# What a case sees: its tmp_path and, on demand, a private copy of the trained run.


@dataclasses.dataclass
class Place:
  tmp: Path
  _trained: Callable[[], Path]

  def path(self, *parts: str) -> str:
    return str(self.tmp.joinpath(*parts))

  def write(self, name: str, content: str | bytes) -> str:
    """Writes `content` to tmp_path/`name` (directories made); returns the path."""
    path = self.tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
      path.write_bytes(content)
    else:
      path.write_text(content, encoding="utf-8")
    return str(path)

  def mixed_csv(self, name: str = "data.csv", rows: list[list[str]] | None = None) -> str:
    return helpers.write_csv(self.tmp / name, helpers.MIXED_HEADER, rows or helpers.mixed_rows(ROWS))

  def trained(self) -> tuple[str, str]:
    """(run_dir, csv_path): a copy of the session's finished CSV run and of its data file.

    The copy's flags.txt names the copied data file, so running the trained
    command on the copy resumes it (or, with other flags, is refused).
    """
    root = self.tmp / "trained"
    shutil.copytree(self._trained(), root)
    run_dir, csv_path = root / "run", root / "data.csv"
    flags_txt = run_dir / "flags.txt"
    values = run_dir_lib.read_flag_file(str(flags_txt))
    flags_txt.write_text(run_dir_lib.flag_file_text({**values, "csv_path": str(csv_path)}))  # sealed anew
    return str(run_dir), str(csv_path)


def csv_flags(path: str, tasks: str = TASKS_FLAG) -> list[str]:
  return ["--dataset=csv", f"--csv_path={path}", tasks, *SMALL_TABLE_FLAGS]


def npz_flags(path: str) -> list[str]:
  return ["--dataset=npz", f"--npz_path={path}", "--tasks=y:regression", *SMALL_TABLE_FLAGS]


def trained_command(run_dir: str, csv_path: str) -> list[str]:
  """The command that trained the session's run (on its copy)."""
  return [f"--run_dir={run_dir}", *csv_flags(csv_path)]


def train_trained_run(root: Path) -> Path:
  """Trains the catalogue's run: `root`/data.csv and `root`/run, a finished small CSV run on it."""
  csv_path, _ = helpers.write_mixed(root / "data.csv", ROWS)
  proc = run_train(*trained_command(str(root / "run"), csv_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return root


# The registry.


@dataclasses.dataclass(frozen=True)
class Case:
  setup: Callable[[Place], tuple[Sequence[str], Sequence[str]]]
  command: str


class Catalogue:
  """One module's cases: `@catalogue.case(name)` on a function of a Place."""

  def __init__(self) -> None:
    self.cases: list = []

  def case(self, name: str, *marks, command: str = TRAIN):
    def register(setup):
      self.cases.append(pytest_param(Case(setup, command), name, marks))
      return setup

    return register


def pytest_param(case: Case, name: str, marks):
  import pytest  # pylint: disable=g-import-not-at-top

  return pytest.param(case, id=f"{case.command}:{name}" if case.command != TRAIN else name, marks=marks)


# The contract.


def snapshot(root: Path) -> tuple[set[str], dict[str, bytes]]:
  """(directories, {file: content}) under `root`, paths relative to it."""
  directories, files = set(), {}
  for directory, _, names in os.walk(root):
    directories.add(os.path.relpath(directory, root))
    for name in names:
      path = os.path.join(directory, name)
      if os.path.isfile(path):
        with open(path, "rb") as handle:
          files[os.path.relpath(path, root)] = handle.read()
  return directories, files


def error_line(stderr: str) -> str:
  lines = [line for line in stderr.splitlines() if line.strip()]
  return lines[-1] if lines else ""


def tail(text: str, lines: int = 8) -> str:
  return "\n".join(text.strip().splitlines()[-lines:])


def check_refused(case: Case, tmp_path: Path, trained: Callable[[], Path]) -> None:
  """Runs `case` and checks the contract of a refused command (module docstring)."""
  place = Place(tmp_path, trained)
  args, culprits = case.setup(place)
  args = list(args)
  if case.command == TRAIN and not any(arg.startswith("--run_dir=") for arg in args):
    args = [f"--run_dir={tmp_path / 'run'}", *args]
  before = snapshot(tmp_path)
  try:
    proc = run_command(case.command, *args)
  finally:
    for directory, _, _ in os.walk(tmp_path):  # the read-only cases: let pytest clean up
      os.chmod(directory, stat.S_IRWXU)
  print(error_line(proc.stderr))  # shown with -rP: the catalogue's messages
  assert proc.returncode != 0, tail(proc.stdout)
  assert "Traceback" not in proc.stderr, tail(proc.stderr, 40)
  line = error_line(proc.stderr)
  assert line.startswith("error: "), tail(proc.stderr)
  assert [text for text in proc.stderr.splitlines() if text.startswith("error:")] == [line], tail(proc.stderr)
  for culprit in culprits:
    assert culprit in line, (culprit, line)
  assert snapshot(tmp_path) == before, "the refused command changed files under tmp_path"

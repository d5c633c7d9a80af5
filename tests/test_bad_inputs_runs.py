"""The bad input catalogue of `python scripts/train.py`: a run directory another trainer is writing.

Two trainers must never write one run directory, inside or outside a sweep
(train/run_lock.py): the second is refused with one line naming the directory
and the holder's pid, before it reads or changes anything. The other trainer
is this test process, holding the lock with a RunLock of its own (flock locks
conflict between open file descriptions, even in one process). A lock file
that nobody holds (left by a trainer killed with SIGKILL) refuses nothing:
those commands are refused for their other mistake, and the stale file stays
as it was. The contract and the harness are in tests/catalogue.py.
"""

from __future__ import annotations

import fcntl
import functools
import os
import socket
import stat

from catalogue import Catalogue, check_refused, csv_flags, helpers, trained_command
from conftest import SMALL_RUN_FLAGS
import pytest

from mtl_research.train import run_dir as run_dir_lib
from mtl_research.train import run_lock

catalogue = Catalogue()
case = catalogue.case

ME = f"pid {os.getpid()} on {socket.gethostname()}"
STALE = "4194304 gone.example\n"  # above any pid_max: a holder that is surely dead
_held: list = []  # what this process holds while the case's command runs; released by the test


def _hold(path: str) -> None:
  lock = run_lock.RunLock()
  lock.acquire(path)
  _held.append(lock)


def _lock_file(path: str) -> str:
  return os.path.join(path, run_dir_lib.LOCK_FILE)


# A run directory another trainer holds: how the second one gets there.


def _trained(place, *extra):
  run_dir, csv_path = place.trained()
  return run_dir, [*trained_command(run_dir, csv_path), *extra]


def _new(place, *names):
  run_dir = place.path("run")
  os.makedirs(run_dir)
  for name in names:  # a sweep's files
    helpers.write_text(os.path.join(run_dir, name), f"{name} of the sweep\n")
  return run_dir, [f"--run_dir={run_dir}", *SMALL_RUN_FLAGS]


SECOND_TRAINERS = {
  "the-same-command-again": _trained,  # the holder is still training it
  "with-overwrite": lambda place: _trained(place, "--overwrite"),  # must not delete the run being written
  "with-other-flags": lambda place: _trained(place, "--learning_rate=0.01"),
  "extending-it": lambda place: _trained(place, "--train_steps=80"),
  "that-has-just-created-it": _new,  # it holds nothing but the lock yet
  "of-a-sweep": lambda place: _new(place, run_dir_lib.RUN_FILE, run_dir_lib.LOG_FILE),  # trained by hand
}


def _in_use(arrange, place):
  run_dir, args = arrange(place)
  _hold(run_dir)
  return args, [f"--run_dir={run_dir}", "is in use by another trainer", ME]


for _name, _arrange in SECOND_TRAINERS.items():
  case(f"run_dir-in-use-by-another-trainer-{_name}")(functools.partial(_in_use, _arrange))


@case("run_dir-in-use-by-a-trainer-that-has-not-written-its-pid-yet")
def _(place):
  run_dir, args = _trained(place)
  handle = open(_lock_file(run_dir), "a", encoding="utf-8")  # pylint: disable=consider-using-with
  fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  _held.append(handle)
  return args, [f"--run_dir={run_dir}", "is in use by another trainer (its pid is not recorded yet)"]


# A stale lock file: nobody holds it. Refused for the other mistake only; the file stays as it was.


def _stale(run_dir: str) -> None:
  helpers.write_text(_lock_file(run_dir), STALE)


@case("stale-lock-of-a-killed-trainer-then-other-flags")
def _(place):
  run_dir, args = _trained(place, "--learning_rate=0.01")
  _stale(run_dir)
  return args, [f"--run_dir={run_dir}", "--learning_rate=0.001 there, 0.01 now"]


@case("stale-lock-in-a-new-run-dir-then-a-missing-csv")
def _(place):
  run_dir = place.path("run")
  os.makedirs(run_dir)
  _stale(run_dir)  # a trainer killed just after it created the directory: still a new run
  path = place.path("absent.csv")
  return [f"--run_dir={run_dir}", *csv_flags(path)], [path, "does not exist"]


@case("stale-lock-in-a-sweeps-run-then-a-bad-selection")
def _(place):
  run_dir, args = _new(place, run_dir_lib.RUN_FILE, run_dir_lib.LOG_FILE, run_dir_lib.FAILED_FILE)
  _stale(run_dir)
  return [*args, "--selection=nosuch:auc"], ["--selection=nosuch:auc"]


# The lock cannot be taken.


@case("run_dir-lock-file-is-a-symbolic-link")
def _(place):
  run_dir, args = _trained(place)
  target = helpers.write_text(place.tmp / "notes.txt", "my notes\n")
  os.symlink(target, _lock_file(run_dir))  # never written through: the notes stay as they are
  return args, [f"--run_dir={run_dir}", ".trainer.lock is a symbolic link"]


@case(
  "run_dir-existing-run-read-only",
  pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories"),
)
def _(place):
  run_dir, args = _trained(place)
  os.chmod(run_dir, stat.S_IRUSR | stat.S_IXUSR)
  return args, [f"--run_dir={run_dir}", "cannot be written"]


# The test.


@pytest.mark.parametrize("case", catalogue.cases)
def test_bad_input_is_refused_with_one_line_and_nothing_changes(case, tmp_path, catalogue_run):
  try:
    check_refused(case, tmp_path, catalogue_run)
  finally:
    while _held:
      held = _held.pop()
      if isinstance(held, run_lock.RunLock):
        held.release()
      else:
        held.close()

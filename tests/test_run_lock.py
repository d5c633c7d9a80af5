"""One trainer per run directory (train/run_lock.py), and no trainer outliving its sweep (sweep/runner.py).

flock locks conflict between open file descriptions, so a lock held by this
process (another RunLock, or a plain open and flock) stands for another
trainer: no second process is needed to show a refusal.
"""

from __future__ import annotations

import fcntl
import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

from conftest import REPO_ROOT, SMALL_RUN_FLAGS, run_train
import pytest

from mtl_research.cli import train as train_cli
from mtl_research.errors import UserError
from mtl_research.sweep import plan, runner
from mtl_research.train import loop, run_dir, run_lock

ME = f"pid {os.getpid()} on {socket.gethostname()}"
STALE = b"4194304 gone.example\n"  # above any pid_max: a holder that is surely dead


def lock_file(path) -> str:
  return os.path.join(path, run_dir.LOCK_FILE)


def read(path) -> bytes:
  with open(path, "rb") as handle:
    return handle.read()


def test_a_second_trainer_is_refused_naming_the_directory_and_the_holder(tmp_path):
  path = str(tmp_path)
  with run_lock.RunLock() as first:
    first.acquire(path)
    assert first.held and read(lock_file(path)) == f"{os.getpid()} {socket.gethostname()}\n".encode()
    with pytest.raises(UserError) as refused:
      run_lock.RunLock().acquire(path)
    assert str(refused.value) == (
      f"--run_dir={path} is in use by another trainer ({ME}); wait for it to end or stop it, "
      "or choose another --run_dir."
    )
    assert run_lock.holder(path) == ME
  assert not first.held and os.listdir(path) == []  # released: the file it created is gone
  assert run_lock.holder(path) is None
  with run_lock.RunLock() as again:  # and the directory can be locked again
    again.acquire(path)


def test_released_when_the_block_ends_by_an_exception(tmp_path):
  with pytest.raises(KeyboardInterrupt), run_lock.RunLock() as lock:
    lock.acquire(str(tmp_path))
    raise KeyboardInterrupt
  assert os.listdir(tmp_path) == [] and run_lock.holder(str(tmp_path)) is None


def test_a_holder_that_has_not_written_its_pid_yet(tmp_path):
  with open(lock_file(tmp_path), "w", encoding="utf-8") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(UserError, match=r"in use by another trainer \(its pid is not recorded yet\)"):
      run_lock.RunLock().acquire(str(tmp_path))
  assert read(lock_file(tmp_path)) == b""


@pytest.mark.parametrize("clean", [True, False])
def test_a_stale_lock_file_refuses_nothing(tmp_path, clean):
  """Left by a trainer killed with SIGKILL: nobody holds it; taken over, then deleted or left as found."""
  path = str(tmp_path)
  with open(lock_file(path), "wb") as handle:
    handle.write(STALE)
  assert run_lock.holder(path) is None
  lock = run_lock.RunLock()
  lock.acquire(path)
  assert run_lock.holder(path) == ME  # the taker's pid, not the dead one's
  lock.release(clean=clean)
  if clean:  # the command ended normally
    assert os.listdir(path) == []
  else:  # it failed (a refusal changes nothing on disk)
    assert read(lock_file(path)) == STALE


def test_the_file_locked_is_the_one_at_the_path(tmp_path, monkeypatch):
  """A holder deletes its file while still locking it: a trainer that opened it just before looks again."""
  path = str(tmp_path)
  real_flock, calls = fcntl.flock, []

  def flock(fd, operation):
    calls.append(operation)
    if len(calls) == 1:  # between our open and our flock, a holder released: deleted, then a new file
      os.unlink(lock_file(path))
      with open(lock_file(path), "wb") as handle:
        handle.write(STALE)
    return real_flock(fd, operation)

  monkeypatch.setattr(run_lock.fcntl, "flock", flock)
  with run_lock.RunLock() as lock:
    lock.acquire(path)
    assert len(calls) == 2
    assert os.stat(lock_file(path)).st_ino == os.fstat(lock._fd).st_ino  # pylint: disable=protected-access
    monkeypatch.undo()
    assert run_lock.holder(path) == ME


def test_release_leaves_another_trainers_file_alone(tmp_path):
  path = str(tmp_path)
  lock = run_lock.RunLock()
  lock.acquire(path)
  os.unlink(lock_file(path))  # deleted by hand while held; another trainer then takes the directory
  with run_lock.RunLock() as other:
    other.acquire(path)
    lock.release()
    assert run_lock.holder(path) == ME and os.path.exists(lock_file(path))


def test_a_symbolic_link_is_never_written_through(tmp_path):
  target = tmp_path / "notes.txt"
  target.write_text("mine\n", encoding="utf-8")
  run = tmp_path / "run"
  run.mkdir()
  os.symlink(target, lock_file(run))
  with pytest.raises(UserError, match=r"\.trainer\.lock is a symbolic link"):
    run_lock.RunLock().acquire(str(run))
  assert target.read_text(encoding="utf-8") == "mine\n"


def test_the_lock_file_is_no_part_of_the_run(tmp_path):
  path = str(tmp_path / "run")
  os.makedirs(path)
  flags = {"learning_rate": "0.001"}
  with run_lock.RunLock() as lock:
    lock.acquire(path)
    assert run_dir.run_entries(path) == []
    assert run_dir.check(path, flags, overwrite=False) == run_dir.Found(resume=False)  # a new run
    run_dir.prepare(path, flags, overwrite=False)
    os.makedirs(os.path.join(path, "ckpt"))
    assert run_dir.run_entries(path) == ["ckpt", "flags.txt"]
    run_dir.prepare(path, {"learning_rate": "0.01"}, overwrite=True)  # deletes the run, not the lock
    assert sorted(os.listdir(path)) == [run_dir.LOCK_FILE, "flags.txt"]
    assert run_lock.holder(path) == ME
  assert os.listdir(path) == ["flags.txt"]


def test_the_trainer_holds_the_lock_from_before_reading_to_after_writing(tmp_path, monkeypatch):
  path = str(tmp_path / "run")
  seen = []
  real_check, real_run = run_dir.check, loop.Trainer.run

  def check(*args, **kwargs):
    seen.append(("check", run_lock.holder(path)))
    return real_check(*args, **kwargs)

  def run(self):
    seen.append(("run", run_lock.holder(path)))
    return real_run(self)

  monkeypatch.setattr(run_dir, "check", check)
  monkeypatch.setattr(loop.Trainer, "run", run)
  args = (f"--run_dir={path}", *SMALL_RUN_FLAGS[:-3], "--train_steps=10", "--eval_every=10", "--checkpoint_every=10")
  proc = run_train(*args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # A new directory: not locked while it did not exist, locked once created (checked again then).
  assert seen[0] == ("check", None) and ("check", ME) in seen and seen[-1] == ("run", ME)
  assert run_dir.LOCK_FILE not in os.listdir(path)
  seen.clear()
  proc = run_train(*args)  # the same command again: the existing directory is locked before it is read
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert seen and all(who == ME for _, who in seen)
  assert run_dir.LOCK_FILE not in os.listdir(path)


def test_a_new_run_dir_written_by_another_trainer_meanwhile_is_refused(tmp_path):
  path = str(tmp_path / "run")
  flags = {"learning_rate": "0.001"}
  found = run_dir.check(path, flags, False)  # when this trainer started: nothing there
  run_dir.prepare(path, flags, False)  # another trainer wrote the run while this one loaded its data
  with pytest.raises(UserError, match=r"--run_dir=.*run was written by another trainer while this one was starting"):
    with run_lock.RunLock() as lock:
      train_cli._lock_new_run_dir(lock, path, found, lambda: run_dir.check(path, flags, False))  # pylint: disable=protected-access
  assert os.listdir(path) == ["flags.txt"]


# The sweep's children. A stand-in for the trainer: no TensorFlow.

SLEEPER = """\
import os, signal, sys, time
run_dir = next(arg for arg in sys.argv if arg.startswith("--run_dir=")).partition("=")[2]
def stop(signum, frame):
  open(os.path.join(run_dir, "SIGTERM"), "w").close()
  sys.exit(0)
signal.signal(signal.SIGTERM, stop)
with open(os.path.join(run_dir, "pid"), "w") as handle:
  handle.write(str(os.getpid()))
for name, text in (("flags.txt", "--seed=0\\n"), ("metrics.json", "{}")):
  if os.environ.get("SLEEP") and name == "metrics.json":
    time.sleep(float(os.environ["SLEEP"]))
  with open(os.path.join(run_dir, name), "w") as handle:
    handle.write(text)
"""


def fake_python(tmp_path) -> str:
  fake = tmp_path / "fake_python"
  fake.write_text(f"#!{sys.executable}\n{SLEEPER}", encoding="utf-8")
  fake.chmod(0o755)
  return str(fake)


def wait_until(predicate, timeout: float = 10.0) -> bool:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return True
    time.sleep(0.01)
  return False


def test_a_sweep_child_gets_sigterm_when_the_runner_is_killed(tmp_path):
  sweep_dir = tmp_path / "sweep"
  script = textwrap.dedent(f"""\
    from mtl_research.sweep import plan, runner
    spec = plan.RunSpec("fixed__seed0", "fixed", 0)
    runner.Runner({str(sweep_dir)!r}, [spec], [], cpus=1, python={fake_python(tmp_path)!r}).run()
  """)
  env = dict(os.environ, SLEEP="60")
  sweep = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, stderr=subprocess.DEVNULL)
  run = sweep_dir / "runs" / "fixed__seed0"
  child = None
  try:
    assert wait_until(lambda: (run / "flags.txt").exists()), "the stand-in trainer did not start"
    child = int((run / "pid").read_text())
    sweep.kill()  # SIGKILL: the runner runs no code of its own any more
    sweep.wait()
    assert wait_until(lambda: (run / "SIGTERM").exists(), timeout=5), "the trainer outlived the sweep"
    assert wait_until(lambda: not _alive(child), timeout=5)
  finally:
    if sweep.poll() is None:
      sweep.kill()
    if child is not None and _alive(child):
      os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
      return handle.read().rpartition(")")[2].split()[0] != "Z"  # a zombie has ended
  except FileNotFoundError:
    return False


def test_a_child_whose_runner_died_before_it_asked_for_the_signal_ends(monkeypatch):
  monkeypatch.setattr(os, "getpid", lambda: 1)  # "the runner" is not our parent any more
  preexec = runner.die_with_this_process()
  monkeypatch.undo()
  assert preexec is not None
  child = subprocess.run(
    [sys.executable, "-c", "print('trained')"], preexec_fn=preexec, capture_output=True, check=False
  )
  assert child.returncode == 128 + signal.SIGTERM and child.stdout == b""


def sweep_once(tmp_path, spec) -> tuple[runner.Outcome, str]:
  out = io.StringIO()
  sweep = runner.Runner(str(tmp_path / "sweep"), [spec], [], cpus=1, python=fake_python(tmp_path), out=out)
  sweep.poll_seconds = 0.01
  return sweep.run(), out.getvalue()


def test_the_sweep_waits_for_a_run_another_trainer_still_holds(tmp_path):
  spec = plan.RunSpec("fixed__seed0", "fixed", 0)
  path = str(tmp_path / "sweep" / "runs" / spec.name)
  os.makedirs(path)
  lock = run_lock.RunLock()
  lock.acquire(path)  # a trainer of a killed invocation, stopping after its SIGTERM
  threading.Timer(0.5, lock.release).start()
  started = time.monotonic()
  outcome, out = sweep_once(tmp_path, spec)
  assert outcome.finished == [spec.name] and time.monotonic() - started >= 0.5
  assert f"wait {spec.name}: {path} is in use by another trainer ({ME}); it starts when that one ends" in out
  assert out.index("wait ") < out.index(f"start {spec.name}")


def test_the_sweep_starts_a_held_run_after_the_wait(tmp_path, monkeypatch):
  monkeypatch.setattr(runner, "LOCK_WAIT_SECONDS", 0.2)
  spec = plan.RunSpec("fixed__seed0", "fixed", 0)
  path = str(tmp_path / "sweep" / "runs" / spec.name)
  os.makedirs(path)
  with run_lock.RunLock() as lock:
    lock.acquire(path)
    outcome, out = sweep_once(tmp_path, spec)  # the stand-in does not lock: it just runs
  assert outcome.finished == [spec.name] and "wait " in out and "in 0 s" in out

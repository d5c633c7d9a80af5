"""One trainer per run directory: a lock that the trainer writing it holds while it runs.

  RUN_DIR/.trainer.lock   "<pid> <host>" of the trainer holding it, which holds flock(LOCK_EX) on it

Two trainers writing one run directory would interleave their checkpoints,
events and metrics into a run that neither trained. So the trainer takes this
lock before it reads an existing run directory (run_dir.check), or, for a
directory that does not exist yet, right after creating it and before writing
anything into it, and holds it until it ends. A second trainer, started by
hand or by a sweep (sweep/runner.py), is refused with one sentence naming the
directory and the holder's pid.

flock(2) locks belong to an open file description: the kernel drops one when
its holder dies, however it dies (SIGKILL, out of memory), so a killed trainer
leaves no lock to remove by hand. The file it leaves behind (stale: nobody
holds it) refuses nothing. Two opens of the file conflict even in one process.

The file is no part of the run: run_dir.run_entries ignores it and --overwrite
keeps it. Releasing deletes a file that `acquire` created (while still holding
it: `acquire` checks that the file it locked is still the one at the path, so
it never holds a deleted one); a stale file that `acquire` found is deleted
when the command ends normally and written back as it was when it fails, so a
refused command changes nothing on disk.

On a system without fcntl (Windows) there is no lock.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import Self

from mtl_research.errors import UserError
from mtl_research.train.run_dir import LOCK_FILE

try:
  import fcntl
except ImportError:  # not POSIX: no lock
  fcntl = None  # type: ignore[assignment]

# A trainer that has just taken the lock writes its pid an instant later: how long a refused
# one waits to name it.
_CONTENT_WAIT_SECONDS = 0.2
_ATTEMPTS = 100


def lock_path(run_path: str) -> str:
  return os.path.join(run_path, LOCK_FILE)


class RunLock:
  """A context manager that releases the run directory lock taken by `acquire`, on every exit path.

  The lock is taken by `acquire`, not on entering: a trainer locks an existing
  run directory at once, a new one only once it creates it. Leaving the block
  normally deletes the lock file; leaving it by an exception deletes it too
  unless it was a stale file found there, which is written back as it was.
  """

  def __init__(self) -> None:
    self.path: str | None = None  # the run directory, once acquired
    self._fd: int | None = None
    self._found: bytes | None = None  # a stale lock file's content, written back on failure

  @property
  def held(self) -> bool:
    return self.path is not None

  def acquire(self, run_path: str) -> None:
    """Locks the existing directory `run_path`; UserError if another trainer holds it, or it cannot be written."""
    if self.held:
      raise RuntimeError(f"{self.path} is locked already")
    if fcntl is None:
      self.path = run_path
      return
    path = lock_path(run_path)
    for _ in range(_ATTEMPTS):
      fd, created = _open(run_path, path)
      if fd is None:
        continue  # the holder deleted it between two looks: look again
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as error:
        who = _holder(fd) if error.errno in (errno.EWOULDBLOCK, errno.EACCES) else None
        os.close(fd)
        if who is None:
          raise UserError(f"--run_dir={run_path} cannot be locked: {error.strerror}.") from None
        raise UserError(
          f"--run_dir={run_path} is in use by another trainer ({who}); wait for it to end or stop it, "
          "or choose another --run_dir."
        ) from None
      if _names(path, fd):
        break
      os.close(fd)  # its holder deleted it before we locked it: a newer file may be there
    else:  # each attempt needs another process to delete the file meanwhile: this is not a local disk
      raise UserError(f"--run_dir={run_path} cannot be locked: its {LOCK_FILE} keeps changing under this trainer.")
    try:
      self._found = None if created else os.pread(fd, os.fstat(fd).st_size, 0)
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    except OSError as error:
      self._fd, self.path = fd, run_path
      self.release(clean=False)
      raise UserError(f"--run_dir={run_path} cannot be written: {error.strerror}.") from None
    self._fd, self.path = fd, run_path

  def release(self, clean: bool = True) -> None:
    """Deletes the lock file (`clean` False: a stale one found is written back) and unlocks; no-op if not held."""
    fd, path, found = self._fd, self.path, self._found
    self._fd, self.path, self._found = None, None, None
    if fd is None or path is None:
      return
    try:
      # Only our own file: one deleted by hand may have been replaced by another trainer's.
      if _names(lock_path(path), fd):
        if found is None or clean:
          os.unlink(lock_path(path))  # still locked: a trainer that opened it sees that it is gone
        else:
          os.ftruncate(fd, 0)
          os.pwrite(fd, found, 0)
    except OSError:
      pass  # the directory was deleted or made read-only meanwhile; closing still unlocks
    finally:
      os.close(fd)

  def __enter__(self) -> Self:
    return self

  def __exit__(self, exc_type, exc, traceback) -> None:
    self.release(clean=exc_type is None)


def holder(run_path: str) -> str | None:
  """The trainer holding `run_path`'s lock, as "pid N on HOST"; None if none does (read-only).

  Takes a shared lock for an instant: a trainer starting on `run_path` at that
  very instant is refused as if another held it.
  """
  if fcntl is None:
    return None
  try:
    fd = os.open(lock_path(run_path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
  except OSError:
    return None  # no lock file: nobody holds it
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except OSError:
    return _holder(fd)
  else:
    fcntl.flock(fd, fcntl.LOCK_UN)
    return None
  finally:
    os.close(fd)


def _open(run_path: str, path: str) -> tuple[int | None, bool]:
  """(a descriptor of the lock file, whether this call created it); (None, False) if it vanished meanwhile."""
  # O_NOFOLLOW: a symbolic link there (dangling, or to someone's file) is refused, not followed.
  flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0)
  try:
    try:
      return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666), True
    except FileExistsError:
      return os.open(path, flags), False
  except FileNotFoundError:
    if not os.path.isdir(run_path):
      raise UserError(f"--run_dir={run_path} cannot be written: it no longer exists.") from None
    return None, False
  except OSError as error:
    if error.errno == errno.ELOOP:
      raise UserError(
        f"--run_dir={run_path} cannot be locked: its {LOCK_FILE} is a symbolic link, which a trainer never "
        "writes through; delete it."
      ) from None
    raise UserError(f"--run_dir={run_path} cannot be written: {error.strerror}.") from None


def _names(path: str, fd: int) -> bool:
  """Whether `path` is the file open as `fd` (not deleted or replaced since)."""
  try:
    at_path, opened = os.stat(path), os.fstat(fd)
  except OSError:
    return False
  return (at_path.st_dev, at_path.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(fd: int) -> str:
  """The holder named by the lock file open as `fd`, as "pid N on HOST"."""
  deadline = time.monotonic() + _CONTENT_WAIT_SECONDS
  while True:
    try:
      fields = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").split()
    except OSError:
      fields = []
    if fields and fields[0].isdigit():
      return f"pid {fields[0]}" + (f" on {fields[1]}" if len(fields) > 1 else "")
    if time.monotonic() > deadline:
      return "its pid is not recorded yet"
    time.sleep(0.01)

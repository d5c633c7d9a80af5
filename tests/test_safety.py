"""Safety: nothing a user supplies is executed or unpickled, and result files are written atomically."""

from __future__ import annotations

import ast
import os
import pathlib

import pytest

from mtl_research import files

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "mtl_research"
SCRIPTS = PACKAGE.parent / "scripts"
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "yaml", "joblib"}


def sources() -> list[pathlib.Path]:
  return sorted(PACKAGE.rglob("*.py")) + sorted(SCRIPTS.glob("*.py"))


def violations(path: pathlib.Path) -> list[str]:
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  found = []
  for node in ast.walk(tree):
    where = f"{path.name}:{getattr(node, 'lineno', '?')}"
    if isinstance(node, ast.Call):
      func = node.func
      name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
      if isinstance(func, ast.Name) and name in FORBIDDEN_CALLS:
        found.append(f"{where} calls {name}()")
      if name == "load" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "np":
        pickle = [k for k in node.keywords if k.arg == "allow_pickle"]
        if not pickle or not (isinstance(pickle[0].value, ast.Constant) and pickle[0].value.value is False):
          found.append(f"{where} calls np.load without allow_pickle=False")
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
      found += [f"{where} imports {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
  return found


def test_no_code_execution_or_unpickling_of_user_input():
  found = [v for path in sources() for v in violations(path)]
  assert not found, found


def test_the_scan_sees_what_it_forbids(tmp_path):
  """The check above can fail: each forbidden form is reported."""
  bad = tmp_path / "bad.py"
  bad.write_text(
    "import pickle\nimport numpy as np\nx = eval('1')\nnp.load('f.npz')\n"
    "np.load('g.npz', allow_pickle=True)\nfrom yaml import load\n",
    encoding="utf-8",
  )
  assert len(violations(bad)) == 5


class TestAtomicWrites:
  def test_a_failed_write_leaves_the_old_file_and_no_temporary(self, tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    files.write_json_atomic(str(target), {"a": 1})
    original = target.read_bytes()

    def crash(*args, **kwargs):
      raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
      files.write_json_atomic(str(target), {"a": 2})
    assert target.read_bytes() == original
    assert os.listdir(tmp_path) == ["metrics.json"]

  def test_a_kill_mid_write_leaves_only_a_recognisable_temporary(self, tmp_path, monkeypatch):
    """A process killed between writing and renaming leaves the old file and a partial one."""
    target = tmp_path / "flags.txt"
    files.write_text_atomic(str(target), "--seed=0\n")

    class Killed(BaseException):
      pass

    def killed(*args, **kwargs):
      raise Killed()

    monkeypatch.setattr(os, "replace", killed)
    monkeypatch.setattr(os, "unlink", lambda path: None)  # a real kill runs no cleanup
    with pytest.raises(Killed):
      files.write_text_atomic(str(target), "--seed=1\n")
    assert target.read_text() == "--seed=0\n"
    leftovers = [name for name in os.listdir(tmp_path) if name != "flags.txt"]
    assert len(leftovers) == 1 and files.is_partial_write(leftovers[0])

  def test_written_files_are_complete_and_readable_by_others(self, tmp_path):
    target = tmp_path / "results.md"
    files.write_text_atomic(str(target), "| a |\n")
    assert target.read_text() == "| a |\n"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600

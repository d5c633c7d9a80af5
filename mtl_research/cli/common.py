"""What every command-line entry point shares: quiet logs, one-line errors, flagfiles, output paths.

Flagfiles (`--flagfile=FILE`, and the `--flagfile=` lines inside one) are
read by absl; `parse_flags` reads each one first, as absl will, so that one
that cannot be read (missing, a directory, not UTF-8 text) is refused with one
sentence naming it and the file that included it, instead of absl's
traceback. The output checks (`check_output_file`, `check_output_dir`,
`check_outputs_apart`) are what a command runs on every path it will write,
before it writes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import os
import sys
import tempfile

from absl import flags
from absl import logging as absl_logging

from mtl_research.errors import UserError
from mtl_research.files import partial_name


def entry_point(body: Callable[[], object]) -> Callable[[list[str]], None]:
  """An absl `main` that runs `body` after the checks every command makes.

  absl's INFO lines (checkpoint saving, SavedModel writing) are silenced unless
  --verbosity is given; a positional argument or a UserError ends the program
  with one line on stderr and exit status 1, without a traceback.
  """

  def main(argv: list[str]) -> None:
    if not flags.FLAGS["verbosity"].present:
      absl_logging.set_verbosity(absl_logging.WARNING)
    if len(argv) > 1:
      sys.exit(f"error: unexpected argument {argv[1]!r}; all options are --flags (see --help).")
    try:
      body()
    except UserError as error:
      sys.exit(f"error: {error}")

  return main


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run(main, flags_parser=parse_flags)`), with a bad flag reported
  like every other mistake: one "error: ..." line, not absl's "FATAL Flags parsing error" and a help line.
  """
  try:
    check_flagfiles(argv[1:])
    return flags.FLAGS(argv)
  except UserError as error:
    sys.exit(f"error: {error}")
  except flags.Error as error:
    message = " ".join(str(error).split()).removeprefix("ERROR:: ")
    sys.exit(f"error: {message}")


# Flagfiles. absl (FlagValues.read_flags_from_files) takes `--flagfile=FILE`, `-flagfile=FILE`,
# `--flagfile FILE` and `-flagfile FILE` on the command line, up to a `--`; inside a file, a line
# starting with `--flagfile=` or `-flagfile=` includes another file; a file already being read is
# skipped (absl warns). It opens each with the locale's encoding, which is UTF-8 where Python runs
# (PEP 538, 540), and a byte that is not UTF-8 escapes as UnicodeDecodeError.
_DIRECTIVES = ("--flagfile=", "-flagfile=")


def check_flagfiles(args: Sequence[str]) -> None:
  """Reads every flagfile the command line `args` (without the program name) names, and every one they
  include, as absl will; UserError naming the file (and what included it) if one cannot be read."""
  rest = list(args)
  while rest:
    arg = rest.pop(0)
    if arg == "--":
      return
    if arg in ("--flagfile", "-flagfile"):
      if rest:  # without a name, absl's own error says so
        _check_flagfile(os.path.expanduser(rest.pop(0)), "", [])
      continue
    for directive in _DIRECTIVES:
      if arg.startswith(directive):
        _check_flagfile(os.path.expanduser(arg[len(directive) :].strip()), "", [])


def _check_flagfile(path: str, included_by: str, stack: list[str]) -> None:
  """Checks flagfile `path` and the files it includes; `included_by`: where it was named ("": the command line)."""
  if not path or path in stack:  # absl ignores an empty name, and skips a file that includes itself
    return
  name = f"{path} ({included_by})" if included_by else f"--flagfile={path}"
  if os.path.isdir(path):
    raise UserError(f"{name} is a directory, not a file of flags.")
  if not os.path.lexists(path):
    raise UserError(f"{name} does not exist.")
  try:
    with open(path, "rb") as handle:
      data = handle.read()
  except OSError as error:
    raise UserError(f"{name} cannot be read: {error.strerror}.") from None
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as error:
    line = data[: error.start].count(b"\n") + 1
    raise UserError(
      f"{name} is not UTF-8 text: line {line} holds the byte 0x{data[error.start]:02x}; save it as UTF-8."
    ) from None
  for number, text_line in enumerate(text.splitlines(keepends=True), 1):
    directive = next((d for d in _DIRECTIVES if text_line.startswith(d)), None)
    if directive is not None:
      included = os.path.expanduser(text_line[len(directive) :].strip())
      _check_flagfile(included, f"included by line {number} of {path}", [*stack, path])


# Output paths: checked before a command writes anything, each error naming the flag and the path.


def _probe(flag: str, path: str, directory: str) -> None:
  """Whether `directory` takes a new file, tried by creating and deleting one.

  os.access cannot tell: it says yes to root everywhere, and to anyone for a
  read-only mount or /proc. The probe is named like an interrupted atomic write
  (files.partial_name), which every reader of a directory skips.
  """
  prefix, suffix = partial_name(path)
  try:
    handle, probe = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
  except OSError as error:
    raise UserError(f"--{flag}={path} cannot be written: {directory} takes no new file ({error.strerror}).") from None
  os.close(handle)
  os.unlink(probe)


def _check_parent(flag: str, path: str, make_parents: bool) -> None:
  parent = os.path.dirname(os.path.abspath(path))
  if make_parents:  # the nearest directory that exists is where the first new one goes
    while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
      parent = os.path.dirname(parent)
  if not os.path.lexists(parent):
    raise UserError(f"--{flag}={path} cannot be written: its directory {parent} does not exist.")
  if not os.path.isdir(parent):
    raise UserError(f"--{flag}={path} cannot be written: {parent} is not a directory.")
  _probe(flag, path, parent)


def check_output_file(flag: str, path: str, make_parents: bool = False) -> None:
  """UserError naming --`flag` and `path` unless a file can be written (atomically) at `path`.

  `path` must be a regular file or not exist; its directory must exist (with
  `make_parents`, the nearest one that does) and take a new file.
  """
  if os.path.isdir(path):
    raise UserError(f"--{flag}={path} is a directory; give the name of a file.")
  if os.path.lexists(path) and not os.path.isfile(path):
    raise UserError(f"--{flag}={path} exists and is not a regular file.")
  _check_parent(flag, path, make_parents)


def check_output_dir(flag: str, path: str) -> None:
  """UserError naming --`flag` and `path` unless a new directory can be written at `path`.

  `path` must not exist or be an empty directory; its parent must exist and
  take a new entry.
  """
  if os.path.lexists(path) and not os.path.isdir(path):
    raise UserError(f"--{flag}={path} exists and is not a directory; choose a new directory.")
  if os.path.isdir(path) and os.listdir(path):
    raise UserError(f"--{flag}={path} exists and is not empty; choose a new directory.")
  _check_parent(flag, path, make_parents=False)


def _same(a: str, b: str) -> bool:
  try:
    return os.path.samefile(a, b)  # hard links and symbolic links included
  except OSError:  # one of them does not exist yet
    return os.path.realpath(a) == os.path.realpath(b)


def inside(path: str, directory: str) -> bool:
  """Whether `path` lies under `directory` (links resolved), not `directory` itself."""
  return os.path.realpath(path).startswith(os.path.realpath(directory).rstrip(os.sep) + os.sep)


def check_outputs_apart(
  files: Sequence[tuple[str, str]], directories: Sequence[tuple[str, str]] = (), inputs: Sequence[tuple[str, str]] = ()
) -> None:
  """UserError unless the outputs ((flag, path) pairs: `files` and `directories`) are distinct paths,
  no file output lies in an output directory, and no output is one of the `inputs`."""
  outputs = [*files, *directories]
  for i, (flag, path) in enumerate(outputs):
    for other_flag, other in outputs[:i]:
      if _same(path, other):
        raise UserError(f"--{other_flag} and --{flag} both name {path}; give each output its own path.")
    for input_flag, source in inputs:
      if _same(path, source) or inside(source, path):
        raise UserError(f"--{flag}={path} would overwrite --{input_flag}={source}; choose another path.")
  for flag, path in files:
    for directory_flag, directory in directories:
      if inside(path, directory):
        raise UserError(
          f"--{flag}={path} is inside --{directory_flag}={directory}, which must be new or empty; "
          "choose a path outside it."
        )

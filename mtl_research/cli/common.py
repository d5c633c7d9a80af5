"""What every command-line entry point shares: quiet logs, one-line errors."""

from __future__ import annotations

from collections.abc import Callable
import sys

from absl import flags
from absl import logging as absl_logging

from mtl_research.errors import UserError


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
    return flags.FLAGS(argv)
  except flags.Error as error:
    message = " ".join(str(error).split()).removeprefix("ERROR:: ")
    sys.exit(f"error: {message}")

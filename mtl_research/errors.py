"""The one exception type for mistakes a user can make (flags, files, run dirs)."""


class UserError(Exception):
  """A problem with the user's input, reported as one sentence without a traceback.

  The message must name the culprit (flag, file, column, run directory) so the
  user can fix it without reading code.
  """

"""--jit_compile: whether the train loop runs as one XLA program or as a TensorFlow graph.

  auto  XLA wherever it is supported and tested: one device, CPU or GPU. Under a
        tf.distribute strategy the graph loop runs, and one log line says so.
        If XLA cannot compile the loop (an op without an XLA kernel in some
        component), the graph loop runs too, and the log line names the
        component and the op.
  on    XLA, or a one-sentence refusal where it cannot serve.
  off   the graph loop.

XLA compiles the whole loop (every step, the model, the balancer and the
optimizer) into one program, which removes TensorFlow's per-op dispatch: most
of the time of a small model's step. It reorders floating-point work, so its
results differ from the graph loop's in the last bits; like --strategy, the
mode may change when a run is resumed. It is chosen by where the run executes,
never by the run's length, so a shorter run stays a prefix of a longer one.
"""

from __future__ import annotations

from collections.abc import Mapping
import re

import tensorflow as tf

from mtl_research.config import JitMode, values
from mtl_research.errors import UserError


def resolve(mode: str, strategy: str | None) -> tuple[bool, str]:
  """(whether to compile with XLA, why `auto` did not: '' when it did or was not asked).

  `strategy`: the --strategy of a distributed run, None on one device.
  Raises UserError for `on` where XLA cannot serve.
  """
  if mode not in values(JitMode):
    raise UserError(f"--jit_compile={mode} is not one of {', '.join(values(JitMode))}.")
  if mode == JitMode.OFF:
    return False, ""
  if strategy is not None:
    if mode == JitMode.ON:
      raise UserError(
        f"--jit_compile=on cannot run under --strategy={strategy}: the XLA loop runs on one device; "
        "use --jit_compile=auto or off."
      )
    return False, f"XLA off: --strategy={strategy} runs the graph loop (the XLA loop runs on one device)"
  return True, ""


_NODE = re.compile(r"\{\{node ([^}]+)\}\}")
_OP = re.compile(r"No registered '([^']+)' OpKernel")
_REOPENED = re.compile(r"_\d+$")


def is_compile_error(error: tf.errors.OpError) -> bool:
  """Whether `error` says XLA cannot compile the graph (rather than a failure while running it)."""
  text = str(error)
  return isinstance(error, tf.errors.InvalidArgumentError) and (
    "XLA" in text and ("compile" in text.lower() or "OpKernel" in text)
  )


def culprit(error: tf.errors.OpError, scopes: Mapping[str, str]) -> str:
  """The component and op XLA could not compile, from the node named in `error`.

  `scopes` maps the name scopes the step opens ("balancer", "model", ...) to
  the component they hold ("balancer gradnorm"); the first scope found in the
  node's name wins.
  """
  text = str(error)
  op = _OP.search(text)
  node = _NODE.search(text)
  what = f"op {op.group(1)}" if op else "an op"
  if node:
    parts = node.group(1).split("/")
    for part in parts:
      # A scope opened again in one graph is uniquified ("balancer_1"): the step opens each several times.
      scope = _REOPENED.sub("", part)
      if scope in scopes:
        return f"{scopes[scope]} ({what}, node {node.group(1)})"
    return f"{what} (node {node.group(1)})"
  first = next((line for line in text.splitlines() if line.strip()), "")
  return f"{what} ({first[:200]})"

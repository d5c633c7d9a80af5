"""TensorFlow's start-up lines: which are dropped, which are kept (cli/quiet_start.py)."""

from mtl_research.cli import quiet_start

PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
NO_DRIVER = (
  "I0000 00:00:1796396965.428510    1964 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
  "GPU will not be used."
)
CUINIT = (
  "E0000 00:00:1796396968.602313    1964 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
  "Failed call to cuInit: UNKNOWN ERROR (303)"
)
OTHER = "E0000 00:00:1796396968.702313    1964 some_kernel.cc:10] something that matters"


def test_a_machine_without_cuda_drivers_shows_nothing_but_other_lines():
  text = "\n".join([PREAMBLE, NO_DRIVER, PREAMBLE, NO_DRIVER, CUINIT, OTHER, "a Python warning"])
  assert quiet_start.harmless_lines_removed(text) == [OTHER, "a Python warning"]


def test_a_failing_installed_driver_keeps_its_cuinit_line():
  # No "Could not find cuda drivers": a driver is there and cuInit failing is the diagnosis.
  assert quiet_start.harmless_lines_removed("\n".join([PREAMBLE, CUINIT])) == [CUINIT]

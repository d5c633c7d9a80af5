"""TensorFlow's start-up lines: which are dropped, which are kept (cli/quiet_start.py)."""

import os
import subprocess
import sys

from conftest import REPO_ROOT

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
ONEDNN = (
  "I0000 00:00:1796410078.736710    4125 port.cc:153] oneDNN custom operations are on. You may see slightly "
  "different numerical results due to floating-point round-off errors from different computation orders. To turn "
  "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`."
)
OTHER = "E0000 00:00:1796396968.702313    1964 some_kernel.cc:10] something that matters"


def test_a_machine_without_cuda_drivers_shows_nothing_but_other_lines():
  text = "\n".join([ONEDNN, PREAMBLE, NO_DRIVER, ONEDNN, PREAMBLE, NO_DRIVER, CUINIT, OTHER, "a Python warning"])
  assert quiet_start.harmless_lines_removed(text) == [OTHER, "a Python warning"]


def test_a_failing_installed_driver_keeps_its_cuinit_line():
  # No "Could not find cuda drivers": a driver is there and cuInit failing is the diagnosis.
  assert quiet_start.harmless_lines_removed("\n".join([PREAMBLE, CUINIT])) == [CUINIT]


FAKE_TENSORFLOW = """
import os, sys
os.write(2, (PREAMBLE + "\\n" + NO_DRIVER + "\\n").encode())
try:
  import matplotlib.pyplot
  KERAS_SAW_PYPLOT = True
except ImportError:
  KERAS_SAW_PYPLOT = False
os.write(2, (OTHER + "\\n").encode())
if os.environ.get("FAKE_TF_ABORT"):
  os.abort()

class config:
  @staticmethod
  def list_physical_devices():
    os.write(2, (CUINIT + "\\n").encode())
    return []
"""

PROBE = """
import sys
from mtl_research.cli import quiet_start  # imports the fake tensorflow, filtered
import tensorflow
print("pyplot hidden from keras:", not tensorflow.KERAS_SAW_PYPLOT)
print("matplotlib importable again:", "matplotlib" not in sys.modules and "matplotlib.pyplot" not in sys.modules)
sys.stderr.write("after the import\\n")
"""


def _run_with_fake_tensorflow(tmp_path, **env):
  package = tmp_path / "tensorflow"
  package.mkdir()
  constants = "".join(
    f"{name} = {value!r}\n"
    for name, value in [("PREAMBLE", PREAMBLE), ("NO_DRIVER", NO_DRIVER), ("CUINIT", CUINIT), ("OTHER", OTHER)]
  )
  (package / "__init__.py").write_text(constants + FAKE_TENSORFLOW)
  environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  environ["PYTHONPATH"] = os.pathsep.join([str(tmp_path), REPO_ROOT])
  return subprocess.run(
    [sys.executable, "-c", PROBE], env={**environ, **env}, capture_output=True, text=True, timeout=60, check=False
  )


def test_the_entry_points_filter_stderr_while_tensorflow_loads(tmp_path):
  proc = _run_with_fake_tensorflow(tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr.splitlines() == [OTHER, "after the import"]
  assert "pyplot hidden from keras: True" in proc.stdout and "matplotlib importable again: True" in proc.stdout


def test_what_tensorflow_said_before_a_crash_is_on_the_screen(tmp_path):
  proc = _run_with_fake_tensorflow(tmp_path, FAKE_TF_ABORT="1")
  assert proc.returncode != 0
  assert OTHER in proc.stderr.splitlines() and NO_DRIVER not in proc.stderr


def test_tf_cpp_min_log_level_0_shows_every_line(tmp_path):
  proc = _run_with_fake_tensorflow(tmp_path, TF_CPP_MIN_LOG_LEVEL="0")
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr.splitlines() == [PREAMBLE, NO_DRIVER, OTHER, CUINIT, "after the import"]

"""Entry points of the console scripts; scripts/*.py call these.

Importing this package (which every entry point does first) imports TensorFlow
without its harmless C++ start-up lines (quiet_start.py).
"""

import os

# TensorFlow's C++ log lines below errors hide the progress lines researchers read.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mtl_research.cli import quiet_start  # noqa: E402  (after the environment it reads)

quiet_start.import_tensorflow()

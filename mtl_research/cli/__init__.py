"""Entry points of the console scripts; scripts/*.py call these."""

import os

# TensorFlow's C++ start-up chatter hides the progress lines researchers read.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

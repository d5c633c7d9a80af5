"""mtl_research: multi-task learning research on TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"

"""Training throughput of our loop vs the seed Keras-fit recipe: python scripts/benchmark.py [--flags]."""

from mtl_research.cli import benchmark

if __name__ == "__main__":
  benchmark.run()

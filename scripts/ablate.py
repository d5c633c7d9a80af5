"""Train a sweep of runs: python scripts/ablate.py --sweep_dir=DIR [--flags]. See README.md, "Sweeps"."""

from mtl_research.cli import ablate

if __name__ == "__main__":
  ablate.run()

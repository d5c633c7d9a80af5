"""Train one configuration: python scripts/train.py [--flags]. See README.md."""

from mtl_research.cli import train

if __name__ == "__main__":
  train.run()

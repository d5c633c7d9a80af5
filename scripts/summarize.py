"""Summarize a sweep: python scripts/summarize.py --sweep_dir=DIR [--flags]. See README.md."""

from mtl_research.cli import summarize

if __name__ == "__main__":
  summarize.run()

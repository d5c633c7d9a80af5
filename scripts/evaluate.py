"""Apply a trained run to a CSV file or export it: python scripts/evaluate.py --run_dir=DIR --csv_path=FILE."""

from mtl_research.cli import evaluate

if __name__ == "__main__":
  evaluate.run()

"""Reports over a sweep directory (written by mtl-ablate): results tables with Δm, plots, HParams.

  collect.py    sweep dir -> finished run records (run.json + metrics.json); event-file readers
  delta_m.py    Δm% against single-task baselines (pure functions)
  tables.py     results.md, results.tex (booktabs), results.csv
  plots.py      PNG plots (optional matplotlib): task weights, validation curves
  hparams.py    the HParams dashboard config and each run's final metrics for TensorBoard
  summarize.py  summarize(): all of the above; the mtl-summarize CLI calls it
"""

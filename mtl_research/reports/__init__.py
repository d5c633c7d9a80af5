"""Reports over a sweep directory (written by mtl-ablate): results tables with Δm, plots, HParams.

schema.py       one reader per file read back (sweep.json, run.json, metrics.json, flags.txt), schema-checked
collect.py      sweep dir -> finished run records (run.json + metrics.json); unreadable runs skipped, with why
records.py      TFRecord files (event files) -> their records, in plain Python (tf.data costs 8 ms a file)
events.py       a run's TensorBoard event files -> scalar series, logged HParams values
delta_m.py      Δm% against single-task baselines (pure functions)
table.py        the results table as data: Stat, Column, Row, Table
aggregation.py  run records -> Table: primary metrics, rows per balancer × grid point, mean ± std, Δm
cells.py        a Table's header and body as text cells (number formats, bold best), for md and tex
results_md.py   results.md (Markdown)
results_tex.py  results.tex (LaTeX, booktabs)
results_csv.py  results.csv (plain numbers)
plots.py        PNG plots (optional matplotlib): task weights, validation curves
hparams.py      the HParams dashboard config and each run's final metrics for TensorBoard
summarize.py    summarize(): all of the above; the mtl-summarize CLI calls it
"""

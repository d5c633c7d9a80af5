"""Sweeps: many training runs of one study in one directory (`mtl-ablate`).

plan.py expands balancers × grid × seeds (+ single-task baselines) into named
runs; runner.py trains them as subprocesses of `mtl_research.cli.train`,
several at once, skipping finished runs and resuming interrupted ones.
"""

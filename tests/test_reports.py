"""Reports over a sweep directory: Δm, aggregation, tables (Markdown, LaTeX, CSV), plots, HParams, CLI.

Every sweep here is FAKE: run.json + metrics.json written by hand (and small
event files written with tf.summary), so the expected numbers are computed by
hand and nothing is trained.
"""

from __future__ import annotations

import csv
import glob
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys

from conftest import REPO_ROOT, read_scalars, run_cli_in_process, run_python
import numpy as np
import pytest
import table_helpers
from tensorboard.compat.proto import event_pb2
import tensorflow as tf
import test_bad_inputs_reports as bad_reports

from mtl_research import metrics, tasks
from mtl_research.cli import summarize as summarize_cli
from mtl_research.errors import UserError
from mtl_research.reports import (
  aggregation,
  cells,
  collect,
  delta_m,
  hparams,
  plots,
  results_csv,
  results_md,
  results_tex,
  schema,
  summarize,
)
from mtl_research.reports import table as table_lib
from mtl_research.train import tensorboard_meta

REGRESSION = {"kind": "regression", "num_classes": 0}
THREE_CLASSES = {"kind": "classification", "num_classes": 3, "classes": ["a", "b", "c"]}
BINARY = {"kind": "classification", "num_classes": 2}

# Test metrics of the fake sweep: (balancer, seed) -> (price mae, kind accuracy).
METHODS = {
  ("fixed", 0): (0.90, 0.70),
  ("fixed", 1): (1.10, 0.74),
  ("uncertainty", 0): (0.70, 0.80),
  ("uncertainty", 1): (0.80, 0.84),
}
# Single-task baselines: task -> per-seed values; means price mae 1.0, kind accuracy 0.8.
BASELINES = {"price": (0.95, 1.05), "kind": (0.78, 0.82)}


def _metrics(test: dict, tasks: dict, balancer: str = "fixed", single_task: str | None = None) -> dict:
  return {
    "val": test,
    "test": test,
    "weights": {t: 1.0 for t in test},
    "selected_weights": {t: 1.0 for t in test},
    "selection": {"criterion": "mean_loss", "step": 40, "val_score": 0.5},
    "single_task": single_task,
    "steps": 40,
    "balancer": balancer,
    "dataset": "synthetic",
    "tasks": tasks,
  }


def write_run(
  sweep_dir: str,
  name: str,
  *,
  balancer: str = "fixed",
  seed: int = 0,
  grid: dict | None = None,
  single_task: str | None = None,
  test: dict | None = None,
  tasks: dict | None = None,
  finished: bool = True,
  failed: bool = False,
) -> str:
  path = os.path.join(sweep_dir, "runs", name)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "run.json"), "w", encoding="utf-8") as handle:
    json.dump(
      {"name": name, "balancer": balancer, "seed": seed, "grid": grid or {}, "single_task": single_task}, handle
    )
  if failed:
    open(os.path.join(path, "FAILED"), "w", encoding="utf-8").close()
  if finished:
    with open(os.path.join(path, "metrics.json"), "w", encoding="utf-8") as handle:
      json.dump(_metrics(test, tasks, balancer, single_task), handle)
  return path


def make_sweep(root: str, baselines: bool = True, baseline_seeds: tuple[int, int] = (0, 1)) -> str:
  """Two balancers × seeds 0, 1 on price (regression) and kind (3 classes), with or without baselines.

  The baselines' values are BASELINES[task][0] and [1], trained with `baseline_seeds`: the
  methods' seeds (0, 1) make a table paired by seed, other seeds an unpaired one.
  """
  sweep_dir = os.path.join(root, "sweep")
  os.makedirs(os.path.join(sweep_dir, "runs"), exist_ok=True)
  with open(os.path.join(sweep_dir, "sweep.json"), "w", encoding="utf-8") as handle:
    json.dump(
      {"balancers": ["fixed", "uncertainty"], "seeds": [0, 1], "grid": {}, "flags": [], "with_single_task": baselines},
      handle,
    )
  tasks = {"kind": THREE_CLASSES, "price": REGRESSION}
  for (balancer, seed), (mae, acc) in METHODS.items():
    test = {"price": {"mse": mae**2, "mae": mae, "r2": 0.5}, "kind": {"accuracy": acc, "cross_entropy": 0.6}}
    write_run(sweep_dir, f"{balancer}-s{seed}", balancer=balancer, seed=seed, test=test, tasks=tasks)
  if baselines:
    for index, seed in enumerate(baseline_seeds):
      mae = BASELINES["price"][index]
      write_run(
        sweep_dir,
        f"single-price-s{seed}",
        seed=seed,
        single_task="price",
        test={"price": {"mse": mae**2, "mae": mae, "r2": 0.4}},
        tasks={"price": REGRESSION},
      )
      write_run(
        sweep_dir,
        f"single-kind-s{seed}",
        seed=seed,
        single_task="kind",
        test={"kind": {"accuracy": BASELINES["kind"][index], "cross_entropy": 0.7}},
        tasks={"kind": THREE_CLASSES},
      )
  return sweep_dir


# Δm and aggregation, by hand.


def test_delta_m_by_hand_both_signs():
  lower = {"price": True, "kind": False}
  baseline = {"price": 1.0, "kind": 0.8}
  # mae 1.0 -> 0.8 is 20 % better (lower is better: +0.2); accuracy 0.8 -> 0.84 is 5 % better (+0.05).
  better = {"price": 0.8, "kind": 0.84}
  assert delta_m.relative_terms(better, baseline, lower) == pytest.approx({"price": 0.2, "kind": 0.05})
  assert delta_m.delta_m(better, baseline, lower) == pytest.approx(100 / 2 * (0.2 + 0.05))  # +12.5
  # mae 1.0 -> 1.1 is 10 % worse (−0.1); accuracy 0.8 -> 0.7 is 12.5 % worse (−0.125).
  worse = {"price": 1.1, "kind": 0.7}
  assert delta_m.delta_m(worse, baseline, lower) == pytest.approx(100 / 2 * (-0.1 - 0.125))  # −11.25
  assert delta_m.delta_m(baseline, baseline, lower) == 0.0
  with pytest.raises(ValueError):
    delta_m.delta_m(better, {"price": 0.0, "kind": 0.8}, lower)
  with pytest.raises(ValueError):
    delta_m.delta_m({"price": 1.0}, baseline, lower)
  assert delta_m.lower_is_better("mae") and delta_m.lower_is_better("mse")
  assert not delta_m.lower_is_better("accuracy") and not delta_m.lower_is_better("auc")


def test_mean_and_sample_std_by_hand():
  stat = table_lib.aggregate([1.0, 2.0, 4.0])
  assert stat.mean == pytest.approx(7 / 3)
  # Σ(x − 7/3)² = 16/9 + 1/9 + 25/9 = 42/9; / (n − 1) = 7/3.
  assert stat.std == pytest.approx(math.sqrt(7 / 3))
  assert stat.n == 3
  one = table_lib.aggregate([0.5])
  assert (one.mean, one.std, one.n) == (0.5, None, 1)
  assert table_lib.aggregate([]) is None


# Tables.


def test_can_pair_needs_a_usable_baseline_of_every_task_with_each_seed():
  by_seed = {0: {"price": 0.95, "kind": 0.78}, 1: {"price": 1.05, "kind": 0.82}}
  assert delta_m.can_pair([0, 1], by_seed, ["price", "kind"])
  assert not delta_m.can_pair([0, 2], by_seed, ["price", "kind"])  # no baseline with seed 2
  assert not delta_m.can_pair([0], {0: {"price": 0.95}}, ["price", "kind"])  # no kind baseline with seed 0
  assert not delta_m.can_pair([0], {0: {"price": 0.0, "kind": 0.8}}, ["price", "kind"])  # B_t = 0: undefined
  assert not delta_m.can_pair([0], {0: {"price": math.nan, "kind": 0.8}}, ["price", "kind"])


def test_table_values_bold_and_unpaired_delta_m(tmp_path):
  # Baselines trained with seeds 2 and 3 have no method seed to pair with: each seed is compared with their means.
  sweep = collect.collect(make_sweep(str(tmp_path), baseline_seeds=(2, 3)))
  table = aggregation.build_table(sweep, "mae", "accuracy")
  assert [(c.task, c.metric, c.higher_is_better) for c in table.columns] == [
    ("kind", "accuracy", True),
    ("price", "mae", False),
  ]
  fixed, uncertainty = table.rows
  assert fixed.stats[("price", "mae")].mean == pytest.approx(1.0)
  assert fixed.stats[("price", "mae")].std == pytest.approx(math.sqrt(0.02))  # (0.1² + 0.1²) / 1
  assert uncertainty.stats[("kind", "accuracy")].mean == pytest.approx(0.82)
  # Δm per seed against the baseline means (mae 1.0, accuracy 0.8):
  #   fixed s0: 50·(+0.10 − 0.125) = −1.25;  s1: 50·(−0.10 − 0.075) = −8.75   -> mean −5.0
  #   uncertainty s0: 50·(0.30 + 0) = 15.0;  s1: 50·(0.20 + 0.05) = 12.5      -> mean 13.75
  assert table.has_delta_m
  assert fixed.delta_m.mean == pytest.approx(-5.0)
  assert fixed.delta_m.std == pytest.approx(math.sqrt(2 * 3.75**2))
  assert uncertainty.delta_m.mean == pytest.approx(13.75)
  # Δm of the row means equals the mean of per-seed Δm (Δm is linear).
  assert uncertainty.delta_m.mean == pytest.approx(
    delta_m.delta_m({"price": 0.75, "kind": 0.82}, {"price": 1.0, "kind": 0.8}, {"price": True, "kind": False})
  )

  markdown = results_md.render(table)
  lines = markdown.splitlines()
  header = next(line for line in lines if line.startswith("| method"))
  assert "kind accuracy ↑" in header and "price mae ↓" in header and "Δm% ↑" in header and "seeds" in header
  row = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and line is not header}
  # Best mae is the minimum (uncertainty 0.75), best accuracy the maximum (uncertainty 0.82), best Δm the maximum.
  assert "**0.7500 ± 0.0707**" in row["uncertainty"]
  assert "**0.8200 ± 0.0283**" in row["uncertainty"]
  assert "**+13.75 ± 1.77**" in row["uncertainty"]
  assert "**" not in row["fixed"] and "**" not in row["single-task"]
  assert "1.0000 ± 0.1414" in row["fixed"] and "-5.00 ± 5.30" in row["fixed"]
  assert "1.0000 ± 0.0707" in row["single-task"] and "0 (ref.)" in row["single-task"]
  assert row["fixed"].rstrip(" |").endswith("2")
  assert not table.delta_m_paired
  note = table.notes[0]
  assert note.startswith("Δm is not paired by seed") and "fixed: seed 0, 1; uncertainty: seed 0, 1" in note
  assert "(100/T)·Σ_t (−1)^{l_t}·(M_t − B_t)/B_t" in markdown
  assert "Positive Δm = better than single-task" in markdown
  assert "- Δm is not paired by seed" in markdown and "each seed against the baselines' means" in _caption(markdown)
  assert r"$\Delta_m$ is not paired by seed" in results_tex.render(table)
  parsed = csv.DictReader(io.StringIO(results_csv.render(table)))
  definitions = {row["method"]: row["delta_m/definition"] for row in parsed}
  assert definitions == {"single-task": "", "fixed": "unpaired", "uncertainty": "unpaired"}


def _caption(markdown: str) -> str:
  """The paragraph between the title and the table."""
  return markdown.split("\n\n")[1]


def test_table_pairs_delta_m_by_seed_when_every_seed_has_its_baselines(tmp_path):
  table = aggregation.build_table(collect.collect(make_sweep(str(tmp_path))))
  assert table.delta_m_paired
  fixed, uncertainty = table.rows
  # Each seed against the baselines of its own seed (s0: price 0.95, kind 0.78; s1: price 1.05, kind 0.82):
  #   fixed s0: 50·(+0.05/0.95 − 0.08/0.78) = −2.4966;  s1: 50·(−0.05/1.05 − 0.08/0.82) = −7.2590
  #     mean −4.8778, std |−2.4966 + 7.2590|/√2 = 3.3675 (5.30 unpaired: the seeds' own spread cancels)
  #   uncertainty s0: 50·(0.25/0.95 + 0.02/0.78) = 14.4400;  s1: 50·(0.25/1.05 + 0.02/0.82) = 13.1243
  #     mean 13.7821, std |14.4400 − 13.1243|/√2 = 0.9303
  assert fixed.delta_m.mean == pytest.approx(-4.8778137) and fixed.delta_m.std == pytest.approx(3.3675076)
  assert uncertainty.delta_m.mean == pytest.approx(13.7821105) and uncertainty.delta_m.std == pytest.approx(0.9303205)
  assert fixed.delta_m.n == 2
  # Paired, the mean is not Δm of the row's means (13.75 against the baseline means).
  assert uncertainty.delta_m.mean != pytest.approx(13.75)
  assert table.delta_m_baseline(1) == {"price": 1.05, "kind": 0.82}
  assert table.notes[0].startswith("Δm is paired by seed")
  markdown = results_md.render(table)
  row = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("| ")}
  assert "-4.88 ± 3.37" in row["fixed"] and "**+13.78 ± 0.93**" in row["uncertainty"]
  assert "paired by seed" in _caption(markdown)
  assert "- Δm is paired by seed" in markdown
  latex = results_tex.render(table)
  assert "paired by seed (Maninis" in latex and r"\textbf{\boldmath $+$13.78 $\pm$ 0.93}" in latex
  parsed = {row["method"]: row for row in csv.DictReader(io.StringIO(results_csv.render(table)))}
  assert float(parsed["fixed"]["delta_m/mean"]) == pytest.approx(-4.8778137)
  assert parsed["fixed"]["delta_m/definition"] == "paired"


def test_one_row_without_its_seeds_baselines_unpairs_the_whole_table(tmp_path):
  sweep_dir = make_sweep(str(tmp_path))
  tasks = {"kind": THREE_CLASSES, "price": REGRESSION}
  # uncertainty seed 2: mae 0.6, accuracy 0.9, and no baseline with seed 2.
  test = {"price": {"mae": 0.6}, "kind": {"accuracy": 0.9}}
  write_run(sweep_dir, "uncertainty-s2", balancer="uncertainty", seed=2, test=test, tasks=tasks)
  table = aggregation.build_table(collect.collect(sweep_dir))
  assert not table.delta_m_paired
  assert "uncertainty: seed 2." in table.notes[0] and "fixed" not in table.notes[0]
  fixed, uncertainty = table.rows
  # Every row is unpaired, fixed included (it could pair): against the means price 1.0, kind 0.8 as in the
  # unpaired test above, −1.25 and −8.75.
  assert fixed.delta_m.mean == pytest.approx(-5.0) and fixed.delta_m.std == pytest.approx(math.sqrt(2 * 3.75**2))
  # uncertainty: 15.0, 12.5 and seed 2 50·(0.4 + 0.125) = 26.25.
  assert uncertainty.delta_m.mean == pytest.approx((15.0 + 12.5 + 26.25) / 3)
  assert uncertainty.delta_m.std == pytest.approx(np.std([15.0, 12.5, 26.25], ddof=1))


def test_hparams_delta_m_follows_the_tables_definition(tmp_path):
  paired = aggregation.build_table(collect.collect(make_sweep(str(tmp_path / "paired"))))
  unpaired = aggregation.build_table(collect.collect(make_sweep(str(tmp_path / "unpaired"), baseline_seeds=(2, 3))))
  for table, expected in ((paired, -7.2590012), (unpaired, -8.75)):
    run = next(run for run in table.rows[0].runs if run.seed == 1)  # fixed, seed 1: mae 1.1, accuracy 0.74
    scalars = hparams.final_scalars(run, table, table.baseline_means())
    # Paired: against seed 1's baselines, 50·(−0.05/1.05 − 0.08/0.82); unpaired: the means, 50·(−0.1 − 0.075).
    assert scalars[hparams.DELTA_M_TAG] == pytest.approx(expected)


def test_markdown_caption_is_short_and_the_definitions_are_notes(tmp_path):
  markdown = results_md.render(aggregation.build_table(collect.collect(make_sweep(str(tmp_path)))))
  caption = _caption(markdown)
  assert caption.count(". ") + 1 <= 2 and len(caption) < 300, caption
  assert "mean ± std over 2 seeds" in caption and "Δm%" in caption
  notes = markdown.split("Notes:")[1]
  for text in ("--selection; here mean_loss", "ddof=1", "(100/T)·Σ_t", "Maninis et al., CVPR 2019", "Δm is paired"):
    assert text in notes and text not in caption


def test_bold_picks_min_for_lower_and_max_for_higher(tmp_path):
  sweep_dir = os.path.join(str(tmp_path), "s")
  tasks = {"price": REGRESSION, "kind": THREE_CLASSES}
  # a: worse mae (higher) but better accuracy (higher); b: the opposite.
  write_run(sweep_dir, "a", balancer="a", test={"price": {"mae": 2.0}, "kind": {"accuracy": 0.9}}, tasks=tasks)
  write_run(sweep_dir, "b", balancer="b", test={"price": {"mae": 1.0}, "kind": {"accuracy": 0.5}}, tasks=tasks)
  table = aggregation.build_table(collect.collect(sweep_dir))
  row = {line.split("|")[1].strip(): line for line in results_md.render(table).splitlines() if line.startswith("| ")}
  assert "**0.9000**" in row["a"] and "2.0000" in row["a"] and "**2.0000**" not in row["a"]
  assert "**1.0000**" in row["b"] and "**0.5000**" not in row["b"]
  # One seed: the value alone, no ±.
  assert "±" not in row["a"]


def test_delta_m_column_omitted_without_baselines(tmp_path):
  sweep = collect.collect(make_sweep(str(tmp_path), baselines=False))
  table = aggregation.build_table(sweep)
  assert not table.has_delta_m and table.baseline is None
  markdown = results_md.render(table)
  assert "Δm% ↑" not in markdown and "| single-task" not in markdown
  assert any("Δm column is omitted" in note and "kind, price" in note for note in table.notes)
  assert "delta_m/mean" not in results_csv.render(table)
  latex = results_tex.render(table)
  assert r"$\Delta_m$ (\%)" not in latex and r"\Delta_m" not in latex.split(r"\label")[0]  # no column, no caption


def test_delta_m_omitted_when_one_task_lacks_a_baseline(tmp_path):
  sweep_dir = make_sweep(str(tmp_path))
  shutil.rmtree(os.path.join(sweep_dir, "runs", "single-kind-s0"))
  shutil.rmtree(os.path.join(sweep_dir, "runs", "single-kind-s1"))
  table = aggregation.build_table(collect.collect(sweep_dir))
  assert not table.has_delta_m
  assert any("no finished single-task baseline for task(s) kind" in note for note in table.notes)


def test_auc_for_binary_tasks_and_accuracy_fallback_with_a_note(tmp_path):
  sweep_dir = os.path.join(str(tmp_path), "s")
  tasks = {"click": BINARY, "kind": THREE_CLASSES, "price": REGRESSION}
  test = {
    "click": {"accuracy": 0.7, "auc": 0.75, "cross_entropy": 0.5},
    "kind": {"accuracy": 0.6},
    "price": {"mae": 1.0, "mse": 1.5},
  }
  write_run(sweep_dir, "r", test=test, tasks=tasks)
  table = aggregation.build_table(collect.collect(sweep_dir), "mse", "auc")
  assert [(c.task, c.metric) for c in table.columns] == [("click", "auc"), ("kind", "accuracy"), ("price", "mse")]
  assert any("kind has 3 classes" in note and "accuracy" in note for note in table.notes)
  with pytest.raises(UserError, match="--regression_metric=r2"):
    aggregation.build_table(collect.collect(sweep_dir), "r2", "auc")


def test_primary_metric_choices_are_metrics_of_their_kind():
  assert set(aggregation.PRIMARY_REGRESSION_METRICS) <= set(metrics.REGRESSION_METRICS)
  assert set(aggregation.PRIMARY_CLASSIFICATION_METRICS) <= set(metrics.BINARY_METRICS)
  assert aggregation.DEFAULT_REGRESSION_METRIC == aggregation.PRIMARY_REGRESSION_METRICS[0]
  assert aggregation.DEFAULT_CLASSIFICATION_METRIC == aggregation.PRIMARY_CLASSIFICATION_METRICS[0]


def test_latex_structure_and_compiles_when_pdflatex_exists(tmp_path):
  """Structural checks always; the compile check runs only where pdflatex is on PATH (no skip)."""
  sweep_dir = os.path.join(str(tmp_path), "s")
  tasks = {"click_rate": BINARY, "price%": REGRESSION}
  for balancer in ("fixed", "grad_norm&co"):
    for seed in (0, 1):
      write_run(
        sweep_dir,
        f"{balancer}-{seed}",
        balancer=balancer,
        seed=seed,
        grid={"gradnorm_alpha": "1.5"},
        test={"click_rate": {"accuracy": 0.7 + seed / 10}, "price%": {"mae": 1.0 - seed / 10}},
        tasks=tasks,
      )
  for task in tasks:
    write_run(
      sweep_dir,
      f"single-{task}",
      single_task=task,
      test={task: {"accuracy": 0.6, "mae": 1.2}},
      tasks={task: tasks[task]},
    )
  table = aggregation.build_table(collect.collect(sweep_dir))
  latex = results_tex.render(table)
  assert latex.startswith(r"\begin{table}") and latex.rstrip().endswith(r"\end{table}")
  for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{tabular}", r"\caption{"):
    assert command in latex
  assert latex.index(r"\toprule") < latex.index(r"\midrule") < latex.index(r"\bottomrule")
  unescaped = latex.replace(r"\{", "").replace(r"\}", "")
  depth = 0
  for char in unescaped:
    depth += {"{": 1, "}": -1}.get(char, 0)
    assert depth >= 0
  assert depth == 0
  assert r"click\_rate" in latex and r"gradnorm\_alpha" in latex and r"grad\_norm\&co" in latex
  assert r"price\%" in latex and r"$\pm$" in latex and r"\textbf{" in latex
  assert r"$\uparrow$" in latex and r"$\downarrow$" in latex
  assert all(ord(ch) < 128 for ch in latex), "pdflatex needs ASCII (symbols as math)"
  # Bold cells bold their math too (the sign and the ±): \textbf alone leaves math in normal weight.
  bold_cells = re.findall(r"\\textbf\{([^{}]*)\}", latex)
  assert bold_cells and all(cell.startswith("\\boldmath ") for cell in bold_cells), bold_cells
  assert any(cell.startswith(r"\boldmath $+$") and r"$\pm$" in cell for cell in bold_cells), bold_cells  # Δm
  # The caption: one or two sentences; the definitions are notes of results.md.
  caption = re.search(r"\\caption\{(.*)\}\n", latex).group(1)
  assert caption.count(". ") + 1 <= 2 and len(caption) < 300, caption
  assert r"$\Delta_m$" in caption and "each seed against the baselines' means" in caption and r"\frac" not in caption
  if shutil.which("pdflatex"):
    document = os.path.join(tmp_path, "doc.tex")
    # booktabs is part of texlive-latex-recommended; where only texlive-latex-base is installed, its three rules
    # are stood in for, since what is checked is the table's own LaTeX.
    preamble = (
      "\\documentclass{article}\n\\IfFileExists{booktabs.sty}{\\usepackage{booktabs}}"
      "{\\newcommand\\toprule{\\hline}\\newcommand\\midrule{\\hline}\\newcommand\\bottomrule{\\hline}}\n"
    )
    with open(document, "w", encoding="utf-8") as handle:
      handle.write(preamble + "\\begin{document}\n" + latex + "\\end{document}\n")
    done = subprocess.run(
      ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
      cwd=tmp_path,
      capture_output=True,
      text=True,
      timeout=60,
      check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert os.path.isfile(os.path.join(tmp_path, "doc.pdf"))
    with open(os.path.join(tmp_path, "doc.log"), encoding="latin-1") as handle:
      fonts = handle.read().replace("\n", "")  # the log wraps its list of embedded fonts at 79 characters
    assert "/cmbsy" in fonts  # the bold math symbol font (cmbsy9 in \small): the bold cells' ± and sign are bold


def test_csv_parses_back_with_the_same_numbers(tmp_path):
  sweep = collect.collect(make_sweep(str(tmp_path)))
  table = aggregation.build_table(sweep)
  rows = list(csv.DictReader(io.StringIO(results_csv.render(table))))
  assert [row["method"] for row in rows] == ["single-task", "fixed", "uncertainty"]
  by_method = {row["method"]: row for row in rows}
  for row in table.all_rows:
    parsed = by_method[row.label]
    for (task, metric), stat in row.stats.items():
      assert float(parsed[f"{task}/{metric}/mean"]) == stat.mean
      assert float(parsed[f"{task}/{metric}/std"]) == stat.std
  # Paired by seed (test_table_pairs_delta_m_by_seed_when_every_seed_has_its_baselines).
  assert float(by_method["uncertainty"]["delta_m/mean"]) == pytest.approx(13.7821105)
  assert by_method["uncertainty"]["delta_m/definition"] == "paired"
  assert float(by_method["single-task"]["delta_m/mean"]) == 0.0
  assert by_method["fixed"]["seeds"] == "2"


def test_collect_skips_unfinished_and_failed_and_refuses_empty(tmp_path):
  with pytest.raises(UserError, match="has no runs/"):
    collect.collect(str(tmp_path))
  sweep_dir = make_sweep(str(tmp_path), baselines=False)
  write_run(sweep_dir, "still-running", test=None, tasks=None, finished=False)
  write_run(sweep_dir, "broken", finished=False, failed=True)
  sweep = collect.collect(sweep_dir)
  assert len(sweep.runs) == 4 and sweep.unfinished == ("still-running",) and sweep.failed == ("broken",)
  assert any("1 failed run(s) skipped" in note and "broken" in note for note in sweep.notes)
  assert any("1 unfinished run(s) skipped" in note for note in sweep.notes)
  os.remove(os.path.join(sweep_dir, "runs", "uncertainty-s1", "metrics.json"))
  table = aggregation.build_table(collect.collect(sweep_dir))
  assert "Fewer finished seeds than the sweep's 2 in: uncertainty: 1." in table.notes
  assert table.rows[1].num_seeds == 1 and table.rows[1].stats[("price", "mae")].std is None
  empty = os.path.join(str(tmp_path), "empty")
  write_run(empty, "a", finished=False)
  with pytest.raises(UserError, match="no finished run"):
    collect.collect(empty)


def test_reports_import_neither_the_trainer_nor_the_sweep_runner():
  """BUILD.md, "Reports": of the rest of the package, reports/ imports file and metric names only."""
  code = (
    "import sys\n"
    "from mtl_research.reports import (aggregation, cells, collect, delta_m, events, hparams, plots, "
    "results_csv, results_md, results_tex, summarize, table)\n"
    "print(' '.join(sorted(sys.modules)))"
  )
  done = subprocess.run(
    [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
  )
  modules = set(done.stdout.split())
  assert "tensorflow" not in modules and "mtl_research.sweep.runner" not in modules
  assert {m for m in modules if m.startswith("mtl_research.train.")} == {"mtl_research.train.run_dir"}
  assert "mtl_research.reports.summarize" in modules


# Plots and HParams need event files.


def _write_events(
  run_path: str, tasks: dict, scale: float, eval_steps: tuple[int, ...] = (20, 40), equal_weights: bool = False
) -> None:
  train = tf.summary.create_file_writer(os.path.join(run_path, "train"))
  with train.as_default():
    for step in (10, 20, 30, 40):
      for i, task in enumerate(tasks):
        weight = 1.0 if equal_weights else scale * (i + 1) + step / 100
        tf.summary.scalar(f"weight/{task}", weight, step=step)
  train.close()
  evals = tf.summary.create_file_writer(os.path.join(run_path, "eval"))
  with evals.as_default():
    for step in eval_steps:
      tf.summary.scalar("eval/price/mae", scale / step, step=step)
      tf.summary.scalar("eval/kind/accuracy", 0.5 + step / 100, step=step)
  evals.close()


def test_plots_when_matplotlib_is_importable_and_a_note_when_not(tmp_path, monkeypatch):
  sweep_dir = make_sweep(str(tmp_path))
  for name in os.listdir(os.path.join(sweep_dir, "runs")):
    _write_events(os.path.join(sweep_dir, "runs", name), ["price", "kind"], 1.0 + len(name) / 10)
  sweep = collect.collect(sweep_dir)
  table = aggregation.build_table(sweep)
  assert read_scalars(os.path.join(sweep_dir, "runs", "fixed-s0", "train"))["weight/price"][0][0] == 10
  has_matplotlib = importlib.util.find_spec("matplotlib") is not None
  if has_matplotlib:
    paths, notes = plots.write_plots(sweep, table)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["val_kind_accuracy.png", "val_price_mae.png", "weights.png"], notes
    for path in paths:
      with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
  monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
  monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
  paths, notes = plots.write_plots(sweep, table, os.path.join(str(tmp_path), "no-plots"))
  assert paths == [] and len(notes) == 1 and plots.INSTALL_NOTE in notes[0]
  assert plots.INSTALL_NOTE == "install the plots extra: pip install -e .[plots]"


def _plotted_table(root: str, eval_steps: tuple[int, ...], equal_fixed_weights: bool = False) -> table_lib.Table:
  """make_sweep with events: eval/price/mae = scale / step, scale = 1 + len(name) / 10, + 0.2 for seed 1."""
  sweep_dir = make_sweep(root)
  for name in sorted(os.listdir(os.path.join(sweep_dir, "runs"))):
    scale = 1.0 + len(name) / 10 + (0.2 if name.endswith("1") else 0.0)
    equal = equal_fixed_weights and name.startswith("fixed")
    _write_events(os.path.join(sweep_dir, "runs", name), ["price", "kind"], scale, eval_steps, equal)
  return aggregation.build_table(collect.collect(sweep_dir))


def _has_marker(line) -> bool:
  return line.get_marker() not in (None, "", " ", "None", "none")


def _pixels(figure, axes, color: str, tolerance: int = 30) -> int:
  """Pixels of `color` drawn inside `axes`, its legend left out, once the figure is rendered."""
  from matplotlib import colors  # pylint: disable=g-import-not-at-top

  figure.canvas.draw()
  image = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(int)
  height = image.shape[0]
  inside = np.zeros(image.shape[:2], bool)
  x0, y0, x1, y1 = axes.get_window_extent().extents  # display coordinates: origin at the bottom left
  inside[int(height - y1) + 2 : int(height - y0) - 2, int(x0) + 2 : int(x1) - 2] = True
  if axes.get_legend() is not None:
    lx0, ly0, lx1, ly1 = axes.get_legend().get_window_extent().extents
    inside[max(0, int(height - ly1) - 2) : int(height - ly0) + 2, max(0, int(lx0) - 2) : int(lx1) + 2] = False
  target = np.array(colors.to_rgb(color)) * 255
  return int(((np.abs(image - target).max(axis=-1) <= tolerance) & inside).sum())


def test_validation_plot_with_one_evaluation_shows_each_point_and_its_seed_range(tmp_path):
  """The README's sweep (--eval_every longer than the run) evaluates once: the plot must not be empty axes."""
  pytest.importorskip("matplotlib")
  from matplotlib.collections import LineCollection  # pylint: disable=g-import-not-at-top

  table = _plotted_table(str(tmp_path), eval_steps=(40,))
  figures, notes = plots.build_figures(table)
  assert not notes and sorted(figures) == ["val_kind_accuracy.png", "val_price_mae.png", "weights.png"]
  figure = figures["val_price_mae.png"]
  axes = figure.axes[0]
  lines = axes.get_lines()
  assert [line.get_label() for line in lines] == ["fixed", "uncertainty", "single-task"]
  assert all(_has_marker(line) and len(line.get_xdata()) == 1 for line in lines)
  # Side by side around the one step, which is the only tick.
  assert len({float(line.get_xdata()[0]) for line in lines}) == 3 and list(axes.get_xticks()) == [40]
  # Mean over seeds and a vertical min–max bar: fixed 1.8/40 and 2.0/40, uncertainty 2.4/40 and 2.6/40,
  # single-task 2.5/40 and 2.7/40.
  bars = [c for c in axes.collections if isinstance(c, LineCollection)]
  assert len(bars) == 3
  for line, bar, (low, high) in zip(lines, bars, [(1.8, 2.0), (2.4, 2.6), (2.5, 2.7)]):
    assert line.get_ydata()[0] == pytest.approx((low + high) / 80)
    np.testing.assert_allclose(sorted(bar.get_segments()[0][:, 1]), [low / 40, high / 40])
    assert _pixels(figure, axes, line.get_color()) >= 5, f"{line.get_label()} is not visible"  # 0 before markers
  paths, _ = plots.write_plots(collect.collect(os.path.join(str(tmp_path), "sweep")), table)
  assert len(paths) == 3


def test_validation_plot_draws_markers_and_a_band_per_line(tmp_path):
  pytest.importorskip("matplotlib")
  from matplotlib.collections import PolyCollection  # pylint: disable=g-import-not-at-top

  figures, _ = plots.build_figures(_plotted_table(str(tmp_path), eval_steps=(20, 40)))
  axes = figures["val_price_mae.png"].axes[0]
  lines = axes.get_lines()
  assert len(lines) == 3 and all(_has_marker(line) for line in lines)
  assert [list(line.get_xdata()) for line in lines] == [[20, 40]] * 3  # not side by side
  assert lines[-1].get_linestyle() == "--" and lines[-1].get_color() == "k"  # the single-task baseline
  bands = [c for c in axes.collections if isinstance(c, PolyCollection)]
  assert len(bands) == 3
  # fixed's band at step 20 spans 1.8/20 .. 2.0/20.
  vertices = bands[0].get_paths()[0].vertices
  at_20 = vertices[np.isclose(vertices[:, 0], 20)][:, 1]
  assert min(at_20) == pytest.approx(0.09) and max(at_20) == pytest.approx(0.10)


def test_coinciding_weight_lines_both_stay_visible(tmp_path):
  """Fixed weights: every task's weight is 1.0, so the second line would hide the first."""
  pytest.importorskip("matplotlib")
  figures, _ = plots.build_figures(_plotted_table(str(tmp_path), (20, 40), equal_fixed_weights=True))
  figure = figures["weights.png"]
  fixed_axes, uncertainty_axes = figure.axes
  kind, price = fixed_axes.get_lines()
  np.testing.assert_array_equal(kind.get_ydata(), price.get_ydata())
  assert kind.get_label() == "kind" and price.get_label() == "price (overlaps kind)"
  assert [text.get_text() for text in fixed_axes.get_legend().get_texts()] == ["kind", "price (overlaps kind)"]
  assert kind.get_linestyle() == "-" and price.get_linestyle() != "-" and price.get_markerfacecolor() == "none"
  assert all(_has_marker(line) for line in (kind, price))
  for line in (kind, price):
    assert _pixels(figure, fixed_axes, line.get_color()) >= 20, f"{line.get_label()} is hidden"
  # Lines apart are drawn as usual.
  assert [line.get_label() for line in uncertainty_axes.get_lines()] == ["kind", "price"]
  assert all(line.get_linestyle() == "-" for line in uncertainty_axes.get_lines())


def test_overlaps_and_side_by_side():
  def line(label: str, values: list[float], steps: tuple[int, ...] = (10, 20)) -> plots.Series:
    mean = np.array(values)
    return plots.Series(label, np.array(steps), mean, mean - 0.1, mean + 0.1, "C0", "o")

  series = [line("a", [1.0, 2.0]), line("b", [1.0, 2.0]), line("c", [3.0, 3.0]), line("d", [1.0, 2.0], (10, 30))]
  assert plots.overlaps(series) == [None, 0, None, None]
  # The values span 0.9 .. 2.1, so lines within 1 % of 1.2 (0.012) coincide, and 0.05 apart do not.
  assert plots.overlaps([line("a", [1.0, 2.0]), line("b", [1.005, 2.0])]) == [None, 0]
  assert plots.overlaps([line("a", [1.0, 2.0]), line("b", [1.05, 2.0])]) == [None, None]
  assert plots.side_by_side([line("a", [1.0], (300,)), line("b", [1.0], (300,))])
  assert not plots.side_by_side([line("a", [1.0], (300,)), line("b", [1.0], (200,))])
  assert not plots.side_by_side(series)


def test_seed_band_uses_common_steps():
  steps, mean, low, high = plots.seed_band([[(1, 1.0), (2, 2.0), (3, 9.0)], [(1, 3.0), (2, 4.0)]])
  assert list(steps) == [1, 2]
  np.testing.assert_allclose(mean, [2.0, 3.0])
  np.testing.assert_allclose(low, [1.0, 2.0])
  np.testing.assert_allclose(high, [3.0, 4.0])


def _session_groups(logdir: str):
  """The HParams plugin's own answer to the dashboard's session-groups request."""
  # pylint: disable=g-import-not-at-top
  from tensorboard import context
  from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
  from tensorboard.plugins import base_plugin
  from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(logdir)
  multiplexer.Reload()
  provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
  backend = backend_context.Context(
    base_plugin.TBContext(logdir=logdir, data_provider=provider, multiplexer=multiplexer)
  )
  request = api_pb2.ListSessionGroupsRequest(
    start_index=0,
    slice_size=100,
    allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING],
  )
  return list_session_groups.Handler(context.RequestContext(), backend, "", request).run().session_groups


def _experiment_metric_tags(config_dir: str) -> list[str]:
  """The metric tags of the HParams experiment written in `config_dir`, in the dashboard's order."""
  from tensorboard.plugins.hparams import metadata  # pylint: disable=g-import-not-at-top

  for path in glob.glob(os.path.join(config_dir, "events.out.tfevents.*")):
    for record in tf.data.TFRecordDataset(path):
      for value in event_pb2.Event.FromString(record.numpy()).summary.value:
        if value.tag == metadata.EXPERIMENT_TAG:
          experiment = metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
          return [info.name.tag for info in experiment.metric_infos]
  raise AssertionError(f"no experiment in {config_dir}")


def test_hparams_config_and_final_metrics_pair_in_tensorboard(tmp_path):
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top

  from mtl_research.reports.events import read_session_hparams  # pylint: disable=g-import-not-at-top

  sweep_dir = make_sweep(str(tmp_path))
  for name in os.listdir(os.path.join(sweep_dir, "runs")):
    run_path = os.path.join(sweep_dir, "runs", name)
    if name == "fixed-s1":
      continue  # a run without an HParams summary: summarize adds one
    with open(os.path.join(run_path, "run.json"), encoding="utf-8") as handle:
      info = json.load(handle)
    # What the trainer logs at its start: every result-changing flag (integers as text), its name.
    values = {"balancer": info["balancer"], "seed": str(info["seed"]), "single_task": info["single_task"] or ""}
    specs = (tasks.TaskSpec("price", "regression"),)
    tensorboard_meta.write_run_metadata(
      os.path.join(run_path, "eval"), name, {**values, "learning_rate": 0.001}, specs, []
    )
  # What an earlier version wrote is removed: train/final/, and its session (with the layout) in its
  # own event file in train/, whose trial ID was a hash; the training curves stay.
  old_train = os.path.join(sweep_dir, "runs", "uncertainty-s1", "train")
  os.makedirs(os.path.join(old_train, "final"))
  for write in (lambda: hp.hparams({"seed": 1.0}), lambda: tf.summary.scalar("loss/price", 0.5, step=10)):
    writer = tf.summary.create_file_writer(old_train)
    with writer.as_default(step=0):
      write()
    writer.close()
  sweep = collect.collect(sweep_dir)
  table = aggregation.build_table(sweep)
  paths, notes = hparams.write_hparams(sweep, table)
  assert any("fixed-s1" in note for note in notes)
  # Δm% first: the dashboard shows only the first five metrics.
  assert _experiment_metric_tags(paths["config_dir"])[:2] == ["test/delta_m", "test/kind/accuracy"]
  run = next(r for r in sweep.runs if r.name == "uncertainty-s1")
  expected = hparams.final_scalars(run, table, table.baseline_means())
  eval_dir = os.path.join(sweep_dir, "runs", "uncertainty-s1", "eval")
  final = read_scalars(eval_dir)
  assert final["test/price/mae"] == [(40, pytest.approx(0.8))]
  assert final["test/kind/accuracy"] == [(40, pytest.approx(0.84))]
  assert final["test/delta_m"] == [(40, pytest.approx(expected["test/delta_m"]))]
  assert not os.path.exists(os.path.join(old_train, "final"))
  assert read_session_hparams(old_train) is None and read_scalars(old_train) == {"loss/price": [(10, 0.5)]}
  baseline_final = read_scalars(os.path.join(sweep_dir, "runs", "single-kind-s0", "eval"))
  assert "test/delta_m" not in baseline_final and "test/kind/accuracy" in baseline_final
  # Summarizing again replaces the files instead of adding more.
  hparams.write_hparams(sweep, table)
  assert len(glob.glob(os.path.join(eval_dir, "*.final"))) == 1
  assert len(os.listdir(paths["config_dir"])) == 1
  # The final metrics make no TensorBoard run of their own: a sweep of N runs lists 2N + 1 (here
  # only uncertainty-s1 has train/ events).
  event_dirs = {
    os.path.relpath(os.path.dirname(path), sweep_dir)
    for path in glob.glob(os.path.join(sweep_dir, "**", "events.out.tfevents.*"), recursive=True)
  }
  assert event_dirs == {"hparams", os.path.join("runs", "uncertainty-s1", "train")} | {
    os.path.join("runs", run.name, "eval") for run in sweep.runs
  }

  groups = _session_groups(sweep_dir)
  by_name = {group.name: group for group in groups}
  # Trial IDs are the run names, also for the run whose session summarize added.
  assert sorted(by_name) == sorted(run.name for run in sweep.runs)
  assert all(len(group.sessions) == 1 for group in groups)
  group = by_name["uncertainty-s1"]
  assert group.sessions[0].name == "runs/uncertainty-s1/eval"
  metric_values = {m.name.tag: m.value for m in group.metric_values}
  assert metric_values["test/price/mae"] == pytest.approx(0.8)
  assert metric_values["test/delta_m"] == pytest.approx(expected["test/delta_m"])
  # Integers as integers: the dashboard prints numbers with five digits ("1.0000").
  assert group.hparams["balancer"].string_value == "uncertainty" and group.hparams["seed"].string_value == "1"
  added = by_name["fixed-s1"]
  assert added.hparams["seed"].string_value == "1"
  fixed = next(r for r in sweep.runs if r.name == "fixed-s1")
  assert {m.name.tag: m.value for m in added.metric_values}["test/delta_m"] == pytest.approx(
    hparams.final_scalars(fixed, table, table.baseline_means())["test/delta_m"]
  )


# summarize() and the CLI.


def test_summarize_writes_every_file(tmp_path):
  sweep_dir = make_sweep(str(tmp_path))
  result = summarize.summarize(sweep_dir, plots=False)
  for key in ("results_md", "results_tex", "results_csv"):
    assert os.path.isfile(result[key]) and os.path.dirname(result[key]) == sweep_dir
  with open(result["results_md"], encoding="utf-8") as handle:
    assert handle.read() == result["markdown"]
  assert result["plots"] == [] and result["has_delta_m"] and result["runs"] == 8
  assert not os.path.exists(os.path.join(sweep_dir, "plots"))


def _summarize_cli(*args: str) -> subprocess.CompletedProcess:
  return run_python(os.path.join(REPO_ROOT, "scripts", "summarize.py"), *args, timeout=120)


def test_cli_missing_dir_is_one_line_without_traceback(tmp_path):
  done = _summarize_cli(f"--sweep_dir={tmp_path / 'nope'}")
  assert done.returncode != 0
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: --sweep_dir=") and "Traceback" not in done.stderr


def test_cli_prints_the_table_and_the_files(tmp_path):
  sweep_dir = make_sweep(str(tmp_path))
  script = os.path.join(REPO_ROOT, "scripts", "summarize.py")
  done = run_cli_in_process(summarize_cli, script, f"--sweep_dir={sweep_dir}", "--regression_metric=mse", "--noplots")
  assert done.returncode == 0, done.stderr
  assert "| method | kind accuracy ↑ | price mse ↓ | Δm% ↑ | seeds |" in done.stdout
  assert f"Results: {os.path.join(sweep_dir, 'results.md')}" in done.stdout
  assert "tensorboard --logdir" in done.stdout


# Reading back: every file checked against its schema (reports/schema.py); a run that cannot be read is never
# in a table; an undefined value (null) is no value; --strict (issue 14, classes 4 and 6).


def _summarize_in_process(sweep_dir: str, *more: str) -> subprocess.CompletedProcess:
  script = os.path.join(REPO_ROOT, "scripts", "summarize.py")
  return run_cli_in_process(summarize_cli, script, f"--sweep_dir={sweep_dir}", "--noplots", *more)


def _csv_rows(sweep_dir: str) -> dict[str, dict[str, str]]:
  with open(os.path.join(sweep_dir, "results.csv"), encoding="utf-8") as handle:
    return {row["method"]: row for row in csv.DictReader(handle)}


@pytest.mark.parametrize("damage", sorted(bad_reports.RUN_DAMAGES))
def test_a_damaged_run_is_left_out_counted_and_refused_with_strict(tmp_path, damage):
  """The twin of the catalogue's strict-<damage> cases: without --strict the table is made without the run."""
  sweep_dir = table_helpers.write_fake_sweep(tmp_path)
  path, reason = bad_reports.damage_run(sweep_dir, damage)
  done = _summarize_in_process(sweep_dir)
  assert done.returncode == 0, done.stderr
  note = next(line for line in done.stdout.splitlines() if "unreadable run(s) skipped" in line)
  assert note.startswith(f"- 1 unreadable run(s) skipped: {bad_reports.DAMAGED_RUN} ({os.path.basename(path)}")
  assert all(text in note for text in reason), note
  rows = _csv_rows(sweep_dir)
  # The table without the run: uncertainty has its other seed only, and its cells say nothing of the damaged one.
  assert rows["uncertainty"]["seeds"] == "1" and rows["fixed"]["seeds"] == "2"
  assert float(rows["uncertainty"]["y/mae/mean"]) == pytest.approx(0.85) and rows["uncertainty"]["y/mae/n"] == "1"
  assert "Fewer finished seeds than the sweep's 2 in: uncertainty: 1." in done.stdout
  os.remove(os.path.join(sweep_dir, "results.md"))
  before = sorted(os.listdir(sweep_dir))
  strict = _summarize_in_process(sweep_dir, "--strict")
  assert strict.returncode == 1 and strict.stderr.strip().splitlines()[-1].startswith("error: --strict: 1 run(s)")
  assert sorted(os.listdir(sweep_dir)) == before  # refused before writing anything


def test_strict_accepts_a_complete_sweep(tmp_path):
  sweep_dir = table_helpers.write_fake_sweep(tmp_path)
  done = _summarize_in_process(sweep_dir, "--strict")
  assert done.returncode == 0, done.stderr
  assert "skipped" not in done.stdout and os.path.isfile(os.path.join(sweep_dir, "results.md"))
  sweep = collect.collect(sweep_dir)
  assert aggregation.definition_gaps(sweep, aggregation.build_table(sweep)) == []


def test_a_copied_run_counts_its_seed_once(tmp_path):
  sweep_dir = make_sweep(str(tmp_path))
  copy = os.path.join(sweep_dir, "runs", "fixed-s0-copy")
  shutil.copytree(os.path.join(sweep_dir, "runs", "fixed-s0"), copy)
  with open(os.path.join(copy, "run.json"), encoding="utf-8") as handle:
    info = json.load(handle)
  with open(os.path.join(copy, "run.json"), "w", encoding="utf-8") as handle:
    json.dump({**info, "name": "fixed-s0-copy"}, handle)
  sweep = collect.collect(sweep_dir)
  assert [entry.name for entry in sweep.unreadable] == ["fixed-s0-copy"]
  assert "as run fixed-s0" in sweep.unreadable[0].reason
  fixed = aggregation.build_table(sweep).rows[0]
  assert len(fixed.runs) == 2 and fixed.stats[("price", "mae")].n == 2  # not 3 values over "2 seeds"


def _set_test_metric(sweep_dir: str, run: str, task: str, metric: str, value, reason: str | None = None) -> None:
  path = os.path.join(sweep_dir, "runs", run, "metrics.json")
  with open(path, encoding="utf-8") as handle:
    document = json.load(handle)
  document["test"][task][metric] = value
  if reason:
    document.setdefault("undefined", {})[f"test.{task}.{metric}"] = reason
  with open(path, "w", encoding="utf-8") as handle:
    json.dump(document, handle, allow_nan=False)


def test_an_undefined_value_is_no_value_the_cell_says_how_many_and_the_notes_why(tmp_path):
  sweep_dir = make_sweep(str(tmp_path))
  reason = "the split has no example with this task's target"
  _set_test_metric(sweep_dir, "fixed-s1", "price", "mae", None, reason)  # fixed: 0.90 and undefined
  for seed in (0, 1):
    _set_test_metric(sweep_dir, f"uncertainty-s{seed}", "kind", "accuracy", None)  # no reason given
  sweep = collect.collect(sweep_dir)
  table = aggregation.build_table(sweep)
  fixed, uncertainty = table.rows
  assert fixed.stats[("price", "mae")] == table_lib.Stat(0.9, None, 1)  # not (0.9 + 0) / 2, not NaN
  assert ("kind", "accuracy") not in uncertainty.stats
  assert fixed.delta_m.n == 1  # seed 1 has no Δm without its price mae
  markdown = results_md.render(table)
  row = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("| ")}
  assert "| 0.9000 (n=1) |" in row["fixed"] and row["fixed"].rstrip(" |").endswith("2")  # 2 seeds, 1 value
  assert f"| {cells.MISSING} |" in row["uncertainty"] and not re.search(r"\bnan\b", markdown)
  # Its Δm over seed 0 alone (paired: 50·(0.05/0.95 − 0.08/0.78)); the only Δm of the table, so the best.
  assert "| **-2.50** (n=1) |" in row["fixed"]
  note = next(note for note in table.notes if note.startswith("A cell marked (n=k)"))
  assert f"Left out: fixed: price mae of run fixed-s1 (undefined: {reason})" in note
  assert "uncertainty: kind accuracy of run uncertainty-s0 (undefined: null in its metrics.json)" in note
  assert r"0.9000 (n=1)" in results_tex.render(table)
  rows = {r["method"]: r for r in csv.DictReader(io.StringIO(results_csv.render(table)))}
  assert rows["fixed"]["price/seeds"] == "2" and rows["fixed"]["price/mae/n"] == "1"
  assert rows["fixed"]["price/mae/mean"] == "0.9" and rows["fixed"]["delta_m/n"] == "1"
  assert rows["uncertainty"]["kind/accuracy/n"] == "0" and rows["uncertainty"]["kind/accuracy/mean"] == ""
  run = next(run for run in sweep.runs if run.name == "fixed-s1")
  scalars = hparams.final_scalars(run, table, table.baseline_means())
  assert "test/price/mae" not in scalars and "test/delta_m" not in scalars and "test/price/mse" in scalars


def test_a_baseline_without_a_defined_value_omits_delta_m_with_a_note(tmp_path):
  sweep_dir = make_sweep(str(tmp_path))
  for seed in (0, 1):
    _set_test_metric(sweep_dir, f"single-price-s{seed}", "price", "mae", None, "it was not a finite number")
  table = aggregation.build_table(collect.collect(sweep_dir))
  assert not table.has_delta_m
  assert any("no defined value of price mae" in note for note in table.notes), table.notes
  assert f"| {cells.MISSING} |" in results_md.render(table).split("| single-task")[1].splitlines()[0]


def test_a_bare_nan_of_an_older_trainer_reads_as_undefined(tmp_path):
  sweep_dir = make_sweep(str(tmp_path))
  path = os.path.join(sweep_dir, "runs", "fixed-s1", "metrics.json")
  with open(path, encoding="utf-8") as handle:
    text = handle.read()
  with open(path, "w", encoding="utf-8") as handle:  # what json.dump wrote before strict JSON
    handle.write(text.replace('"mae": 1.1', '"mae": NaN').replace('"r2": 0.5', '"r2": Infinity'))
  assert schema.read_metrics_file(path)["test"]["price"] == {"mse": pytest.approx(1.21), "mae": None, "r2": None}
  fixed = aggregation.build_table(collect.collect(sweep_dir)).rows[0]
  assert fixed.stats[("price", "mae")] == table_lib.Stat(0.9, None, 1)


def test_a_task_absent_from_one_runs_metrics_is_counted_not_claimed(tmp_path):
  sweep_dir = os.path.join(str(tmp_path), "s")
  tasks = {"price": REGRESSION, "kind": THREE_CLASSES}
  write_run(sweep_dir, "a0", seed=0, test={"price": {"mae": 1.0}, "kind": {"accuracy": 0.5}}, tasks=tasks)
  # An older file without "tasks", whose "test" lacks kind: readable, but its row has one value of kind for 2 seeds.
  path = write_run(sweep_dir, "a1", seed=1, test={"price": {"mae": 2.0}}, tasks=tasks)
  with open(os.path.join(path, "metrics.json"), encoding="utf-8") as handle:
    document = json.load(handle)
  del document["tasks"]
  with open(os.path.join(path, "metrics.json"), "w", encoding="utf-8") as handle:
    json.dump(document, handle)
  table = aggregation.build_table(collect.collect(sweep_dir))
  (row,) = table.rows
  assert row.num_seeds == 2 and row.stats[("kind", "accuracy")].n == 1 and row.stats[("price", "mae")].n == 2
  line = next(line for line in results_md.render(table).splitlines() if line.startswith("| fixed"))
  assert "| **0.5000** (n=1) |" in line and "| **1.5000 ± 0.7071** |" in line  # one row: the best of each column
  assert any("of run a1 (its metrics.json has no test metrics of task kind)" in note for note in table.notes)


def test_the_readers_normalize_what_they_accept(tmp_path):
  run_json = tmp_path / "r" / "run.json"
  run_json.parent.mkdir()
  run_json.write_text(
    json.dumps({"name": "r", "balancer": "gradnorm", "seed": 3, "grid": {"gradnorm_alpha": 0.5}, "single_task": ""})
  )
  info = schema.read_run_file(str(run_json), "r")
  assert info == schema.RunInfo("r", "gradnorm", 3, {"gradnorm_alpha": "0.5"}, None)
  with pytest.raises(schema.UnreadableFile, match=r"run\.json: seed is 3\.0, not an integer\.$"):
    run_json.write_text(json.dumps({"name": "r", "balancer": "fixed", "seed": 3.0, "grid": {}, "single_task": None}))
    schema.read_run_file(str(run_json), "r")
  metrics_json = tmp_path / "metrics.json"
  written = table_helpers.fake_metrics("fixed", 0)
  metrics_json.write_text(json.dumps(written))
  assert schema.read_metrics_file(str(metrics_json)) == written  # the trainer's file reads back as it was
  metrics_json.write_text(json.dumps({**written, "tasks": {"y": {"kind": "regression", "num_classes": "0"}}}))
  with pytest.raises(schema.UnreadableFile, match=r'tasks\.y\.num_classes is "0", not an integer'):
    schema.read_metrics_file(str(metrics_json))
  sweep_json = tmp_path / "sweep.json"
  sweep_json.write_text(json.dumps({"balancers": ["fixed"], "seeds": [0, 1], "grid": {"learning_rate": [0.1]}}))
  assert schema.read_sweep_file(str(sweep_json)) == {
    "balancers": ["fixed"],
    "seeds": [0, 1],
    "grid": {"learning_rate": ["0.1"]},
    "with_single_task": False,
  }


def test_a_plot_line_over_fewer_seeds_says_how_many(tmp_path):
  pytest.importorskip("matplotlib")
  sweep_dir = make_sweep(str(tmp_path))
  for name in os.listdir(os.path.join(sweep_dir, "runs")):
    _write_events(os.path.join(sweep_dir, "runs", name), ["price", "kind"], 1.0 + len(name) / 10)
  shutil.rmtree(os.path.join(sweep_dir, "runs", "fixed-s1", "eval"))  # its validation curves are lost
  figures, _ = plots.build_figures(aggregation.build_table(collect.collect(sweep_dir)))
  labels = [line.get_label() for line in figures["val_price_mae.png"].axes[0].get_lines()]
  assert labels == ["fixed (n=1)", "uncertainty", "single-task"]
  weights = [line.get_label() for axes in figures["weights.png"].axes for line in axes.get_lines()]
  assert weights == ["kind", "price"] * 2  # every run logged its weights


def _write_provenance(run_path: str, **environment) -> None:
  from mtl_research import provenance  # pylint: disable=g-import-not-at-top

  base = dict.fromkeys(provenance.ENVIRONMENT_KEYS, "same")
  segment = {"environment": {**base, **environment}, "outcome": provenance.FINISHED}
  with open(os.path.join(run_path, provenance.PROVENANCE_FILE), "w", encoding="utf-8") as handle:
    json.dump({"schema_version": provenance.SCHEMA_VERSION, "segments": [segment]}, handle)


def test_notes_say_when_the_runs_were_not_trained_alike(tmp_path):
  sweep_dir = table_helpers.write_fake_sweep(tmp_path)
  names = sorted(os.listdir(os.path.join(sweep_dir, "runs")))
  assert collect.provenance_notes(collect.collect(sweep_dir).runs) == [
    f"{len(names)} run(s) record no provenance (no provenance.json): {', '.join(names)}."
  ]
  for name in names:
    _write_provenance(os.path.join(sweep_dir, "runs", name), tensorflow="2.21.0", loop="xla")
  assert not any("provenance" in note or "trained alike" in note for note in collect.collect(sweep_dir).notes)
  _write_provenance(os.path.join(sweep_dir, "runs", names[0]), tensorflow="2.20.0", loop="graph")
  with open(os.path.join(sweep_dir, "runs", names[1], "provenance.json"), "w", encoding="utf-8") as handle:
    handle.write("{")
  done = _summarize_in_process(sweep_dir)
  assert done.returncode == 0, done.stderr
  others = len(names) - 2
  assert (
    f"- The runs were not all trained alike, so their results may differ in more than the seed: tensorflow "
    f"(2.21.0 in {others} runs, 2.20.0 in 1 run); loop (xla in {others} runs, graph in 1 run)"
  ) in done.stdout
  assert f"- 1 run(s) have a provenance.json that cannot be read: {names[1]}." in done.stdout

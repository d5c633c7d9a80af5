"""Reports over a sweep directory: Δm, aggregation, tables (Markdown, LaTeX, CSV), plots, HParams, CLI.

Every sweep here is FAKE: run.json + metrics.json written by hand (and small
event files written with tf.summary), so the expected numbers are computed by
hand and nothing is trained.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys

from conftest import REPO_ROOT, read_scalars, run_cli_in_process, run_python
import numpy as np
import pytest
import tensorflow as tf

from mtl_research import metrics
from mtl_research.cli import summarize as summarize_cli
from mtl_research.errors import UserError
from mtl_research.reports import (
  aggregation,
  collect,
  delta_m,
  hparams,
  plots,
  results_csv,
  results_md,
  results_tex,
  summarize,
)
from mtl_research.reports import table as table_lib

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


def make_sweep(root: str, baselines: bool = True, extra_tasks: bool = False) -> str:
  """Two balancers × two seeds on price (regression) and kind (3 classes), with or without baselines."""
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
    for seed in (0, 1):
      mae = BASELINES["price"][seed]
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
        test={"kind": {"accuracy": BASELINES["kind"][seed], "cross_entropy": 0.7}},
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


def test_table_values_bold_and_delta_m(tmp_path):
  sweep = collect.collect(make_sweep(str(tmp_path)))
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
  assert "(100/T)·Σ_t (−1)^{l_t}·(M_t − B_t)/B_t" in markdown
  assert "Positive Δm = better than single-task" in markdown


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
  assert r"\Delta_m" not in results_tex.render(table)


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
  assert r"$\uparrow$" in latex and r"$\downarrow$" in latex and r"\frac{100}{T}" in latex
  assert all(ord(ch) < 128 for ch in latex), "pdflatex needs ASCII (symbols as math)"
  if shutil.which("pdflatex"):
    document = os.path.join(tmp_path, "doc.tex")
    with open(document, "w", encoding="utf-8") as handle:
      handle.write(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + latex + "\\end{document}\n"
      )
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
  assert float(by_method["uncertainty"]["delta_m/mean"]) == pytest.approx(13.75)
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


def _write_events(run_path: str, tasks: dict, scale: float) -> None:
  train = tf.summary.create_file_writer(os.path.join(run_path, "train"))
  with train.as_default():
    for step in (10, 20, 30, 40):
      for i, task in enumerate(tasks):
        tf.summary.scalar(f"weight/{task}", scale * (i + 1) + step / 100, step=step)
  train.close()
  evals = tf.summary.create_file_writer(os.path.join(run_path, "eval"))
  with evals.as_default():
    for step in (20, 40):
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


def test_hparams_config_and_final_metrics_pair_in_tensorboard(tmp_path):
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top

  sweep_dir = make_sweep(str(tmp_path))
  for name in os.listdir(os.path.join(sweep_dir, "runs")):
    run_path = os.path.join(sweep_dir, "runs", name)
    if name == "fixed-s1":
      continue  # a run without an HParams summary: summarize adds one
    with open(os.path.join(run_path, "run.json"), encoding="utf-8") as handle:
      info = json.load(handle)
    writer = tf.summary.create_file_writer(os.path.join(run_path, "train"))
    with writer.as_default():  # what the trainer logs: every result-changing flag
      hp.hparams(
        {
          "balancer": info["balancer"],
          "seed": info["seed"],
          "single_task": info["single_task"] or "",
          "learning_rate": 0.001,
        }
      )
    writer.close()
  sweep = collect.collect(sweep_dir)
  table = aggregation.build_table(sweep)
  paths, notes = hparams.write_hparams(sweep, table)
  assert any("fixed-s1" in note for note in notes)
  assert os.listdir(paths["config_dir"])
  final = read_scalars(os.path.join(sweep_dir, "runs", "uncertainty-s1", "train", "final"))
  assert final["final/price/mae"] == [(40, pytest.approx(0.8))]
  assert final["final/kind/accuracy"] == [(40, pytest.approx(0.84))]
  assert final["final/delta_m"] == [(40, pytest.approx(12.5))]
  baseline_final = read_scalars(os.path.join(sweep_dir, "runs", "single-kind-s0", "train", "final"))
  assert "final/delta_m" not in baseline_final and "final/kind/accuracy" in baseline_final
  # Summarizing again replaces the files instead of adding more.
  hparams.write_hparams(sweep, table)
  assert len(os.listdir(os.path.join(sweep_dir, "runs", "uncertainty-s1", "train", "final"))) == 1
  assert len(os.listdir(paths["config_dir"])) == 1

  groups = _session_groups(sweep_dir)
  by_session = {group.sessions[0].name: group for group in groups}
  assert len(groups) == 8 and all(len(group.sessions) == 1 for group in groups)
  group = by_session["runs/uncertainty-s1/train"]
  values = {m.name.tag: m.value for m in group.metric_values}
  assert values["final/price/mae"] == pytest.approx(0.8) and values["final/delta_m"] == pytest.approx(12.5)
  assert group.hparams["balancer"].string_value == "uncertainty" and group.hparams["seed"].number_value == 1
  fallback = {m.name.tag: m.value for m in by_session["runs/fixed-s1/train"].metric_values}
  assert fallback["final/delta_m"] == pytest.approx(-8.75)


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

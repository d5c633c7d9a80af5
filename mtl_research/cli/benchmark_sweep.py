"""`mtl-benchmark --sweep`: a sweep trained one process per run against the same sweep packed.

Two measurements, each with its baseline in the same invocation:

  packed loop   S runs of one configuration (seeds 0..S-1) stepped by one compiled
                loop (train/pack_loop.py), run-steps per second of the loop alone
                (after compilation and a warm-up), against one of those runs' own
                loop timed alone, interleaved, the median of --repeats;
  sweep         `mtl-ablate` of --sweep_balancers × --sweep_seeds seeds ×
                --sweep_steps steps on the default data with the single-task
                baselines, --sweep_parallel processes at a time, once with
                --pack_size=1 (one process per run, as before packs) and once with
                the default packing, into fresh directories: wall time of each, and
                whether every run's metrics.json is byte for byte the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import os
import statistics
import subprocess
import sys
import tempfile
import time

from mtl_research.cli import ablate
from mtl_research.config import Config
from mtl_research.data.bundle import DatasetBundle
from mtl_research.sweep.plan import RUNS_DIR
from mtl_research.train import components as components_lib
from mtl_research.train.pack_loop import PackLoop

DEFAULT_SEEDS = 10
DEFAULT_STEPS = 2000
DEFAULT_BALANCERS = ("fixed", "uncertainty", "gradnorm")
DEFAULT_PARALLEL = 2
WARMUP_STEPS = 200


def measure_packed_loop(
  make_config: Callable[[int], Config],
  bundle_for: Callable[[int], DatasetBundle],
  seeds: int,
  steps: int,
  repeats: int,
  log: Callable[[str], None],
) -> dict:
  """Run-steps/s of `seeds` runs in one PackLoop against one run's own loop (both XLA, after compiling)."""
  configs = [make_config(seed) for seed in range(seeds)]
  parts = [components_lib.build(config, bundle_for(config.seed)) for config in configs]
  alone = components_lib.build(configs[0], bundle_for(configs[0].seed))
  pack = PackLoop([p.train_loop for p in parts], parts[0].train_loop.jit_compile)
  log(f"packed loop: compiling {seeds} runs…")
  tick = time.perf_counter()
  pack.compile(False, [p.origins for p in parts], [str(seed) for seed in range(seeds)])
  compile_s = time.perf_counter() - tick
  alone.compile_loop()
  pack.run(WARMUP_STEPS, [False] * seeds, [True] * seeds)
  alone.train_loop.run(WARMUP_STEPS)
  packed_rates, alone_rates = [], []
  for _ in range(repeats):
    tick = time.perf_counter()
    alone.train_loop.run(steps)
    alone_rates.append(steps / (time.perf_counter() - tick))
    tick = time.perf_counter()
    pack.run(steps, [False] * seeds, [True] * seeds)
    packed_rates.append(seeds * steps / (time.perf_counter() - tick))
  packed, single = statistics.median(packed_rates), statistics.median(alone_rates)
  return {
    "packed_loop_runs": seeds,
    "packed_loop_run_steps_per_s": packed,
    "alone_loop_steps_per_s": single,
    "packed_vs_alone_throughput": packed / single,
    "packed_loop_compile_s": compile_s,
  }


def _ablate(sweep_dir: str, args: Sequence[str]) -> float:
  """Wall seconds of one `mtl-ablate` process; RuntimeError if it fails."""
  command = [sys.executable, "-m", "mtl_research.cli.ablate", f"--sweep_dir={sweep_dir}", *args]
  tick = time.perf_counter()
  proc = subprocess.run(
    command, capture_output=True, text=True, check=False, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  )
  seconds = time.perf_counter() - tick
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr[-2000:]}")
  return seconds


def _differing_runs(one: str, other: str) -> list[str]:
  """Runs whose metrics.json differ between two sweep directories (or exist in one only)."""
  names = sorted(set(os.listdir(os.path.join(one, RUNS_DIR))) | set(os.listdir(os.path.join(other, RUNS_DIR))))
  differing = []
  for name in names:
    texts = []
    for root in (one, other):
      path = os.path.join(root, RUNS_DIR, name, "metrics.json")
      texts.append(open(path, "rb").read() if os.path.isfile(path) else None)  # noqa: SIM115
    if texts[0] is None or texts[0] != texts[1]:
      differing.append(name)
  return differing


def measure_sweep(balancers: Sequence[str], seeds: int, steps: int, parallel: int, log: Callable[[str], None]) -> dict:
  """The same sweep one process per run and packed, with the same --parallel; wall times and identity."""
  args = [
    f"--balancers={','.join(balancers)}",
    f"--seeds={','.join(str(seed) for seed in range(seeds))}",
    f"--train_steps={steps}",
    "--with_single_task",
    f"--parallel={parallel}",
  ]
  runs = (len(balancers) + 2) * seeds  # the default data has two tasks: two baselines per seed
  with tempfile.TemporaryDirectory() as scratch:
    alone_dir, packed_dir = os.path.join(scratch, "alone"), os.path.join(scratch, "packed")
    log(f"sweep: {runs} runs of {steps} steps, one process per run (--pack_size=1)…")
    alone = _ablate(alone_dir, [*args, "--pack_size=1"])
    log(f"sweep: the same {runs} runs packed (--pack_size={ablate.DEFAULT_PACK_SIZE})…")
    packed = _ablate(packed_dir, args)
    differing = _differing_runs(alone_dir, packed_dir)
  return {
    "sweep_runs": runs,
    "sweep_steps": steps,
    "sweep_parallel": parallel,
    "sweep_pack_size": ablate.DEFAULT_PACK_SIZE,
    "sweep_alone_wall_s": alone,
    "sweep_packed_wall_s": packed,
    "sweep_packed_vs_alone_wall_time": packed / alone,
    "sweep_runs_differing": differing,
  }


def format_table(result: dict) -> str:
  lines = ["", "Packed training (scripts/benchmark.py --sweep)", ""]
  if "packed_loop_runs" in result:
    lines += [
      f"  loop of {result['packed_loop_runs']} runs packed:  {result['packed_loop_run_steps_per_s']:,.0f} run-steps/s "
      f"(compiled in {result['packed_loop_compile_s']:.1f} s)",
      f"  one run's loop alone:        {result['alone_loop_steps_per_s']:,.0f} steps/s",
      f"  packed / alone throughput:   ×{result['packed_vs_alone_throughput']:.2f}",
    ]
  if "sweep_runs" in result:
    differing = result["sweep_runs_differing"]
    lines += [
      "",
      f"  sweep of {result['sweep_runs']} runs × {result['sweep_steps']} steps, --parallel={result['sweep_parallel']}:",
      f"    one process per run:      {result['sweep_alone_wall_s']:.1f} s",
      f"    packed (--pack_size={result['sweep_pack_size']}):   {result['sweep_packed_wall_s']:.1f} s",
      f"    packed / one per run:     {result['sweep_packed_vs_alone_wall_time']:.1%} of the wall time",
      "    metrics.json of every run: "
      + ("identical" if not differing else f"{len(differing)} differ ({', '.join(differing[:5])})"),
    ]
  return "\n".join(lines)


def scratch_dir() -> str:
  return tempfile.mkdtemp(prefix="mtl-bench-sweep-")

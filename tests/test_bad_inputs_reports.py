"""The bad input catalogue of `python scripts/summarize.py`: sweep directories, sweep.json, and --strict.

The contract every case is checked against, and the harness, are in
tests/catalogue.py. Every sweep here is fake (table_helpers.write_fake_sweep:
flags.txt, run.json and metrics.json written as mtl-ablate and the trainer
write them), so nothing is trained and a case costs milliseconds.

A run whose files are damaged is skipped as unreadable and counted in the
table's notes; only with --strict is that a refusal (test_reports.py checks the
summary without it). RUN_DAMAGES is the list of both: each damage of one run's
file, the file it damages and what the error line must name.
"""

from __future__ import annotations

from collections.abc import Callable
import json
import os
import shutil

from catalogue import SUMMARIZE, Catalogue, check_refused, helpers
import pytest

from mtl_research.train import run_dir as run_dir_lib

catalogue = Catalogue()
case = catalogue.case

DAMAGED_RUN = "uncertainty__seed1"  # the run each damage hits (a run of the fake sweep)


def summarize_args(sweep_dir: str, *more: str) -> list[str]:
  return [f"--sweep_dir={sweep_dir}", "--noplots", *more]


# One run's damage: (file of the run, what to do to its content, substrings its reason must hold).


def _edit_json(edit: Callable[[dict], object]) -> Callable[[bytes], bytes]:
  def damage(content: bytes) -> bytes:
    document = json.loads(content)
    result = edit(document)
    return json.dumps(document if result is None else result).encode()

  return damage


def _set(path: str, value) -> Callable[[dict], None]:
  """Sets the field at dotted `path` to `value` (deletes it for the value DELETE)."""

  def edit(document: dict) -> None:
    *parents, last = path.split(".")
    for key in parents:
      document = document[key]
    if value is DELETE:
      del document[last]
    else:
      document[last] = value

  return edit


DELETE = object()


def _flag_values(text: bytes) -> dict[str, str]:
  return run_dir_lib.parse_flagfile(text.decode("utf-8").splitlines())


RUN_JSON, METRICS_JSON, FLAGS_TXT = run_dir_lib.RUN_FILE, run_dir_lib.METRICS_FILE, run_dir_lib.FLAGS_FILE
WITHOUT_RUN_JSON = "flags.txt, the run without run.json"  # the run's run.json is deleted, its flags.txt damaged

RUN_DAMAGES: dict[str, tuple[str, Callable[[bytes], bytes | None], list[str]]] = {
  "run_json-a-list": (RUN_JSON, _edit_json(lambda doc: list(doc.values())), ["is a list, not an object"]),
  "run_json-seed-a-string": (RUN_JSON, _edit_json(_set("seed", "1")), ['seed is "1", not an integer']),
  "run_json-seed-a-float": (RUN_JSON, _edit_json(_set("seed", 1.5)), ["seed is 1.5, not an integer"]),
  "run_json-seed-true": (RUN_JSON, _edit_json(_set("seed", True)), ["seed is true, not an integer"]),
  "run_json-seed-missing": (RUN_JSON, _edit_json(_set("seed", DELETE)), ["seed is missing"]),
  "run_json-grid-a-list": (RUN_JSON, _edit_json(_set("grid", [])), ["grid is a list, not an object"]),
  "run_json-name-missing": (RUN_JSON, _edit_json(_set("name", DELETE)), ["name is missing"]),
  "run_json-name-of-another-run": (
    RUN_JSON,
    _edit_json(_set("name", "fixed__seed1")),
    ['name is "fixed__seed1"', f'"{DAMAGED_RUN}"'],
  ),
  "run_json-single_task-not-its-metrics": (
    RUN_JSON,
    _edit_json(_set("single_task", "y")),
    ['single_task is "y"', "metrics.json says null"],
  ),
  "run_json-truncated": (RUN_JSON, lambda text: text[: len(text) // 2], ["truncated"]),
  "metrics_json-a-list": (METRICS_JSON, _edit_json(lambda doc: [doc]), ["is a list, not an object"]),
  "metrics_json-value-a-string": (
    METRICS_JSON,
    _edit_json(_set("test.y.mse", "abc")),
    ['test.y.mse is "abc", not a number or null'],
  ),
  "metrics_json-value-true": (METRICS_JSON, _edit_json(_set("test.c.accuracy", True)), ["test.c.accuracy is true"]),
  "metrics_json-truncated": (METRICS_JSON, lambda text: text[: len(text) // 2], ["truncated"]),
  "metrics_json-empty": (METRICS_JSON, lambda text: b"", ["is empty"]),
  "metrics_json-not-utf8": (METRICS_JSON, lambda text: b"\xff\xfe" + text, ["not UTF-8"]),
  "metrics_json-garbage-inside": (
    METRICS_JSON,
    lambda text: text.replace(b'"steps"', b'lorem "steps"'),
    ["not valid JSON", "line"],
  ),
  "metrics_json-a-key-twice": (METRICS_JSON, lambda text: text.replace(b"{", b'{"steps": 1, ', 1), ['"steps" twice']),
  "metrics_json-test-missing": (METRICS_JSON, _edit_json(_set("test", DELETE)), ["test is missing"]),
  "metrics_json-task-a-number": (METRICS_JSON, _edit_json(_set("test.c", 0.7)), ["test.c is 0.7, not an object"]),
  "metrics_json-task-without-metrics": (METRICS_JSON, _edit_json(_set("test.c", {})), ["test.c has no metric"]),
  "metrics_json-test-lacks-a-task-it-lists": (
    METRICS_JSON,
    _edit_json(_set("test.c", DELETE)),
    ["test has the tasks y, not those of its tasks (c, y)"],
  ),
  "metrics_json-steps-a-string": (METRICS_JSON, _edit_json(_set("steps", "40")), ['steps is "40", not an integer']),
  "metrics_json-selection-step-negative": (
    METRICS_JSON,
    _edit_json(_set("selection.step", -1)),
    ["selection.step is -1, not an integer of at least 0"],
  ),
  "flags_txt-damaged-without-run_json": (
    WITHOUT_RUN_JSON,
    lambda text: text.replace(b"--seed=1\n", b"--seed=0\n"),
    [FLAGS_TXT, "damaged", "seal"],
  ),
  "flags_txt-missing-without-run_json": (WITHOUT_RUN_JSON, lambda text: None, [FLAGS_TXT, "cannot be read"]),
  "flags_txt-seed-not-an-integer-without-run_json": (
    WITHOUT_RUN_JSON,
    lambda text: run_dir_lib.flag_file_text({**_flag_values(text), "seed": "one"}).encode(),  # sealed anew
    [FLAGS_TXT, "--seed=one is not an integer"],
  ),
}


def damage_run(sweep_dir: str, damage: str) -> tuple[str, list[str]]:
  """Damages run DAMAGED_RUN of the fake sweep in `sweep_dir`; returns (the damaged file, its reason's substrings)."""
  name, change, reason = RUN_DAMAGES[damage]
  run_path = os.path.join(sweep_dir, "runs", DAMAGED_RUN)
  if name == WITHOUT_RUN_JSON:
    os.remove(os.path.join(run_path, RUN_JSON))
    name = FLAGS_TXT
  path = os.path.join(run_path, name)
  with open(path, "rb") as handle:
    content = change(handle.read())
  if content is None:
    os.remove(path)
  else:
    with open(path, "wb") as handle:
      handle.write(content)
  return path, reason


# Runs that --strict refuses: a damaged file (each of RUN_DAMAGES), a copy of another run, a failed or
# unfinished run, a run of the definition never started.


for _damage in RUN_DAMAGES:

  @case(f"strict-{_damage}", command=SUMMARIZE)
  def _(place, damage=_damage):
    sweep_dir = helpers.write_fake_sweep(place.tmp)
    path, reason = damage_run(sweep_dir, damage)
    return summarize_args(sweep_dir, "--strict"), ["--strict", "1 run(s)", "1 unreadable", path, *reason]


@case("strict-a-run-copied-under-another-name", command=SUMMARIZE)
def _(place):
  sweep_dir = helpers.write_fake_sweep(place.tmp)
  copy = os.path.join(sweep_dir, "runs", "fixed__seed0_again")
  shutil.copytree(os.path.join(sweep_dir, "runs", "fixed__seed0"), copy)
  with open(os.path.join(copy, RUN_JSON), encoding="utf-8") as handle:
    info = json.load(handle)
  with open(os.path.join(copy, RUN_JSON), "w", encoding="utf-8") as handle:
    json.dump({**info, "name": "fixed__seed0_again"}, handle)
  return summarize_args(sweep_dir, "--strict"), ["--strict", copy, "same balancer, grid point and seed (0)"]


@case("strict-a-failed-run", command=SUMMARIZE)
def _(place):
  sweep_dir = helpers.write_fake_sweep(place.tmp)
  run_path = os.path.join(sweep_dir, "runs", DAMAGED_RUN)
  place.write(os.path.join("sweep", "runs", DAMAGED_RUN, "FAILED"), "")
  return summarize_args(sweep_dir, "--strict"), ["--strict", "1 failed", f"{run_path} failed"]


@case("strict-an-unfinished-run", command=SUMMARIZE)
def _(place):
  sweep_dir = helpers.write_fake_sweep(place.tmp)
  run_path = os.path.join(sweep_dir, "runs", DAMAGED_RUN)
  os.remove(os.path.join(run_path, METRICS_JSON))
  return summarize_args(sweep_dir, "--strict"), ["--strict", "1 unfinished", f"{run_path} is unfinished"]


@case("strict-without-sweep_json", command=SUMMARIZE)
def _(place):
  sweep_dir = helpers.write_fake_sweep(place.tmp)
  os.remove(os.path.join(sweep_dir, "sweep.json"))
  return summarize_args(sweep_dir, "--strict"), ["--strict", os.path.join(sweep_dir, "sweep.json"), "missing"]


@case("strict-a-seed-never-started", command=SUMMARIZE)
def _(place):
  sweep_dir = helpers.write_fake_sweep(place.tmp)
  shutil.rmtree(os.path.join(sweep_dir, "runs", DAMAGED_RUN))
  return summarize_args(sweep_dir, "--strict"), ["--strict", "1 gap(s)", "uncertainty lacks seed(s) 1"]


@case("strict-a-baseline-never-started", command=SUMMARIZE)
def _(place):
  sweep_dir = helpers.write_fake_sweep(place.tmp)
  shutil.rmtree(os.path.join(sweep_dir, "runs", "single_task=c__seed0"))
  return summarize_args(sweep_dir, "--strict"), ["--strict", "single-task c lacks seed(s) 0"]


@case("strict-a-balancer-never-started", command=SUMMARIZE)
def _(place):
  sweep_dir = helpers.write_fake_sweep(place.tmp)
  _edit_sweep_json(sweep_dir, lambda spec: spec["balancers"].append("gradnorm"))
  return summarize_args(sweep_dir, "--strict"), ["--strict", "balancer gradnorm has no run"]


@case("strict-a-grid-point-never-started", command=SUMMARIZE)
def _(place):
  sweep_dir = helpers.write_fake_sweep(place.tmp)
  _edit_sweep_json(sweep_dir, lambda spec: spec["grid"].update(learning_rate=["0.001", "0.01"]))
  for name in os.listdir(os.path.join(sweep_dir, "runs")):  # every multi-task run is a learning_rate=0.001 run
    if not name.startswith("single_task"):
      _edit_run_json(sweep_dir, name, lambda info: info["grid"].update(learning_rate="0.001"))
  return summarize_args(sweep_dir, "--strict"), ["--strict", "2 gap(s)", "fixed (learning_rate=0.01) has no run"]


def _edit_sweep_json(sweep_dir: str, edit: Callable[[dict], object]) -> None:
  path = os.path.join(sweep_dir, "sweep.json")
  with open(path, encoding="utf-8") as handle:
    spec = json.load(handle)
  edit(spec)
  with open(path, "w", encoding="utf-8") as handle:
    json.dump(spec, handle)


def _edit_run_json(sweep_dir: str, name: str, edit: Callable[[dict], object]) -> None:
  path = os.path.join(sweep_dir, "runs", name, RUN_JSON)
  with open(path, encoding="utf-8") as handle:
    info = json.load(handle)
  edit(info)
  with open(path, "w", encoding="utf-8") as handle:
    json.dump(info, handle)


# The sweep directory and its sweep.json: refused without --strict too.


@case("sweep_dir-not-given", command=SUMMARIZE)
def _(place):
  return ["--noplots"], ["--sweep_dir is required"]


@case("sweep_dir-does-not-exist", command=SUMMARIZE)
def _(place):
  path = place.path("nope")
  return summarize_args(path), [f"--sweep_dir={path}", "no runs/ directory"]


@case("sweep_dir-is-a-file", command=SUMMARIZE)
def _(place):
  path = place.write("results.md", "# not a sweep\n")
  return summarize_args(path), [f"--sweep_dir={path}", "is a file"]


@case("sweep_dir-a-run-directory-not-a-sweep", command=SUMMARIZE)
def _(place):
  sweep_dir = helpers.write_fake_sweep(place.tmp)
  path = os.path.join(sweep_dir, "runs", "fixed__seed0")
  return summarize_args(path), [f"--sweep_dir={path}", "no runs/ directory"]


@case("sweep_dir-every-run-unreadable", command=SUMMARIZE)
def _(place):
  sweep_dir = helpers.write_fake_sweep(place.tmp, balancers=("fixed",), seeds=(0,), with_single_task=False)
  path = os.path.join(sweep_dir, "runs", "fixed__seed0", METRICS_JSON)
  place.write(os.path.relpath(path, place.tmp), '{"test": {"y": {"mse": "abc"}}}')
  return summarize_args(sweep_dir), [
    f"--sweep_dir={sweep_dir}",
    "no finished run to summarize",
    "1 unreadable",
    f'{path}: test.y.mse is "abc"',
  ]


SWEEP_DAMAGES: dict[str, tuple[Callable[[bytes], bytes], list[str]]] = {
  "a-list": (_edit_json(lambda spec: list(spec)), ["is a list, not an object"]),
  "balancers-not-a-list": (_edit_json(_set("balancers", "fixed,uncertainty")), ['balancers is "fixed,uncertainty"']),
  "a-seed-a-string": (_edit_json(_set("seeds", [0, "1"])), ['seeds[1] is "1", not an integer']),
  "seeds-missing": (_edit_json(_set("seeds", DELETE)), ["seeds is missing"]),
  "grid-values-not-a-list": (_edit_json(_set("grid", {"learning_rate": "0.01"})), ['grid.learning_rate is "0.01"']),
  "with_single_task-a-string": (_edit_json(_set("with_single_task", "yes")), ['with_single_task is "yes"']),
  "truncated": (lambda text: text[: len(text) // 2], ["truncated"]),
  "empty": (lambda text: b"", ["is empty"]),
}


for _damage in SWEEP_DAMAGES:

  @case(f"sweep_json-{_damage}", command=SUMMARIZE)
  def _(place, damage=_damage):
    sweep_dir = helpers.write_fake_sweep(place.tmp)
    path = os.path.join(sweep_dir, "sweep.json")
    change, reason = SWEEP_DAMAGES[damage]
    with open(path, "rb") as handle:
      content = change(handle.read())
    with open(path, "wb") as handle:
      handle.write(content)
    return summarize_args(sweep_dir), [f"{path}: ", *reason, "definition"]


# The test.


@pytest.mark.parametrize("case", catalogue.cases)
def test_bad_input_is_refused_with_one_line_and_nothing_changes(case, tmp_path, catalogue_run):
  check_refused(case, tmp_path, catalogue_run)

"""The eager controller: takes the built pieces (components.py), runs the compiled loop between
periodic actions (summaries, evaluation, checkpoints, progress), and writes the
run directory's results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import os
import time

import numpy as np
import tensorflow as tf

from mtl_research import metrics as metrics_lib
from mtl_research import provenance, tags
from mtl_research.config import Config, NanPolicy
from mtl_research.data.bundle import DatasetBundle
from mtl_research.files import undefined_numbers, write_json_atomic
from mtl_research.optim import model_optimizer
from mtl_research.progress import TrainingProgress
from mtl_research.train import actions as actions_lib
from mtl_research.train import distribution, guard
from mtl_research.train.checkpoints import Checkpoints
from mtl_research.train.components import Components
from mtl_research.train.evaluate import Evaluator, mean_loss
from mtl_research.train.interrupt import Interrupted, StopRequest
from mtl_research.train.run_dir import RunDir
from mtl_research.train.tensorboard_meta import HParamValue, write_run_metadata
from mtl_research.train.writers import MetricWriter, ScalarWriter, per_task


def parameter_line(counts: Mapping) -> str:
  """The log line of a model's trainable parameter counts (total, shared, per task)."""
  per_task = ", ".join(f"{task} {n:,}" for task, n in counts["per_task"].items())
  return f"Parameters: {counts['total']:,} trainable, {counts['shared']:,} shared; per task: {per_task}."


class Segment:
  """A run's training from `start` to `total`: where it is, its periodic actions, progress and writers."""

  def __init__(self, start: int, total: int, steps_per_loop: int, actions, progress: TrainingProgress, writers):
    self.start = self.step = start
    self.total = total
    self.steps_per_loop = steps_per_loop
    self.actions = actions
    self.progress = progress
    self.writers = writers
    self.began = time.perf_counter()

  def next_stop(self, step: int | None = None) -> tuple[int, bool]:
    """(where the loop call from `step` (default: the current step) ends, whether it needs diagnostics)."""
    step = self.step if step is None else step
    stop = actions_lib.next_stop(step, self.total, self.steps_per_loop, self.actions)
    return stop, actions_lib.needs_diagnostics(self.actions, stop, self.total)

  def close(self) -> None:
    for writer in self.writers:
      writer.close()


class Trainer:
  """Trains one configuration into one run directory."""

  def __init__(
    self,
    config: Config,
    bundle: DatasetBundle,
    parts: Components,
    run: RunDir,
    log: Callable[[str], None] = print,
    hparams: Mapping[str, HParamValue] | None = None,
    stop: StopRequest | None = None,
    resume_from: RunDir | None = None,
    resume: bool = True,
  ):
    """`run` receives everything written; a run is resumed from `resume_from` (default: `run`).

    `resume` False: start from step 0 without looking for checkpoints (a new
    run, or a worker that must not read the chief's directory while the chief
    prepares it).
    """
    self.config = config
    self.bundle = bundle
    self.parts = parts
    self.run_dir = run
    self.log = log
    self.hparams = dict(hparams or {})
    self.stop = stop
    self.task_names = bundle.task_names
    self.evaluator = Evaluator(self.parts.model, config.loop.eval_batch_size, bundle.target_scale)
    self.checkpoints = Checkpoints(parts.checkpoint, run.checkpoint_dir, run.best_checkpoint_dir, log)
    self.resume_from = (resume_from or run).checkpoint_dir
    self._restored = not resume
    self._recorder: provenance.Recorder | None = None

  def restore(self) -> int:
    """Restores the newest readable checkpoint if there is one; returns the step.

    Read-only, so a run dir whose checkpoints are all damaged is refused
    (UserError) before anything in it changes.
    """
    path = self.checkpoints.restore_latest(directory=self.resume_from)
    self._restored = True
    step = int(self.parts.global_step.numpy())
    if path:
      self._adopt_newer_best(step)
      self.log(f"Resumed from {path} at step {step}.")
    return step

  def _adopt_newer_best(self, step: int) -> None:
    """A selected checkpoint saved after `step` (by a run killed later) stays the one to beat."""
    best = self.checkpoints.best()
    if best is not None and best[0] > step and self.parts.criterion is not None:
      self.checkpoints.restore_best(
        tf.train.Checkpoint(best_score=self.parts.best_score, best_step=self.parts.best_step)
      )

  def compile(self) -> None:
    """Compiles the train loop (XLA) or traces it (graph) and logs how long it took.

    Raises UserError under --jit_compile=on if XLA cannot compile it; the CLI
    calls this before writing anything.
    """
    # XLA takes seconds: say so before, or the run looks stuck.
    xla = self.parts.train_loop.jit_compile
    self.log("Compiling the train loop with XLA…" if xla else "Tracing the train loop (graph)…")
    self.log(self.parts.compile_loop())

  def run(self) -> dict:
    """Trains to the end (resuming if possible), evaluates, writes metrics.json.

    Raises Interrupted after saving a checkpoint if `stop` was requested, and
    guard.NonFiniteError if a non-finite loss stopped the run.
    """
    start = self.begin()
    if start < self.parts.total_steps and not self.parts.train_loop.compiled:
      self.compile()  # first: a loop that falls back from XLA records the mode it runs in
    self.record_start(start)
    try:
      if start < self.parts.total_steps:
        self._train(start, self.parts.total_steps)
      metrics = self.finish()
    except Interrupted:
      self.end(provenance.INTERRUPTED)
      raise
    except BaseException:
      self.end(provenance.FAILED)
      raise
    return metrics

  def begin(self) -> int:
    """Restores (unless done already); returns the step training starts from."""
    start = int(self.parts.global_step.numpy()) if self._restored else self.restore()
    if self.parts.strategy is not None:
      distribution.check_workers_agree(self.parts.strategy, start)
    return start

  def record_start(self, start: int) -> None:
    """Records the start in the run's provenance (after compiling: the record holds the loop's mode)."""
    self._recorder = provenance.Recorder(self.run_dir.path, self._loop_settings())
    self._recorder.start(start)

  def finish(self) -> dict:
    """Selects, evaluates and writes metrics.json; records the run as finished."""
    metrics = self._finish()
    self.end(provenance.FINISHED)
    return metrics

  def end(self, outcome: str) -> None:
    """Records how the run ended (provenance.FINISHED, INTERRUPTED or FAILED) at its current step."""
    if self._recorder is not None:
      self._recorder.end(outcome, int(self.parts.global_step.numpy()))
      self._recorder = None

  def _loop_settings(self) -> provenance.LoopSettings:
    loop = self.parts.train_loop
    return provenance.LoopSettings(
      executor=loop.executor,
      xla=loop.jit_compile,
      deterministic=self.config.deterministic,
      strategy=self.config.loop.strategy,
      replicas=int(loop.strategy.num_replicas_in_sync),
    )

  def _train(self, start: int, total: int) -> None:
    segment = self.open_segment(start)
    try:
      while segment.step < total:
        self.honour_stop(segment.step)
        stop, diagnose = segment.next_stop()
        tick = time.perf_counter()
        logs = self.parts.train_loop.run(stop - segment.step, diagnose)
        self.end_loop(segment, stop, diagnose, logs, time.perf_counter() - tick)
    finally:
      segment.close()
    self.log_trained(segment, self.parts.train_loop.compile_seconds)

  def open_segment(self, start: int) -> Segment:
    """Begins training from step `start` (< total): run metadata, the first checkpoint, writers, actions."""
    total = self.parts.total_steps
    if self.hparams:  # every segment: an extended run logs its new length
      prefixes = self.parts.train_loop.per_task_diagnostics()
      if self.config.loop.log_grad_conflict:
        prefixes.append(tags.CONFLICT_GRAD_NORM)
      # The run's name (a sweep's runs/<name>) is the HParams dashboard's trial ID.
      trial_id = os.path.basename(os.path.normpath(self.run_dir.path))
      counts = self.parts.model.parameter_counts()
      # As text, like every integer hparam: the dashboard prints numbers with five significant digits.
      sizes = {"parameters_total": str(counts["total"]), "parameters_shared": str(counts["shared"])}
      write_run_metadata(self.run_dir.eval_logdir, trial_id, {**self.hparams, **sizes}, self.bundle.tasks, prefixes)
    if self.checkpoints.latest_number is None:
      self.checkpoints.save(start)  # the last good state until the first periodic checkpoint
    train_writer = ScalarWriter(self.run_dir.train_logdir)
    eval_writer = ScalarWriter(self.run_dir.eval_logdir)
    actions = self._actions(train_writer, eval_writer)
    # The ETA's pace spans the longest action period: each evaluation and checkpoint counted as often as it comes.
    window = max([self.config.loop.steps_per_loop, *(action.every for action in actions)])
    progress = TrainingProgress(self.task_names, total, window)
    progress.start(start)
    self.log(f"Training {total} steps from step {start} into {self.run_dir.path}")
    self.log(parameter_line(self.parts.model.parameter_counts()))
    return Segment(start, total, self.config.loop.steps_per_loop, actions, progress, (train_writer, eval_writer))

  def end_loop(self, segment: Segment, stop: int, diagnose: bool, logs: dict, seconds: float) -> None:
    """After a loop call that ran the steps up to `stop` in `seconds`: recovery, progress, actions.

    Raises guard.NonFiniteError if a non-finite loss stopped the run.
    """
    step = segment.step
    if not logs["healthy"]:
      logs = self._recover(step, stop, diagnose)
    end = actions_lib.LoopEnd(stop, segment.total, logs, (stop - step) / seconds)
    segment.step = stop
    self.log(segment.progress.line(stop, end.steps_per_sec, float(logs["mean_objective"]), logs["mean_losses"]))
    for action in segment.actions:
      if action.due(stop, segment.total):
        action.run(end)

  def log_trained(self, segment: Segment, compiling: float) -> None:
    """The log line of a finished segment; `compiling`: the seconds its loop took to compile."""
    self.log(
      f"Trained {segment.step - segment.start} steps in {time.perf_counter() - segment.began + compiling:.2f} s, "
      f"{compiling:.2f} s of it compiling the loop."
    )

  def _actions(self, train_writer: MetricWriter, eval_writer: MetricWriter) -> list[actions_lib.PeriodicAction]:
    """Summaries, validation and checkpoints, in the order they run after a loop call."""
    loop_cfg = self.config.loop

    def summarize(end: actions_lib.LoopEnd) -> None:
      train_writer.write_scalars(end.step, self._train_scalars(end.logs, end.steps_per_sec))

    def validate(end: actions_lib.LoopEnd) -> None:
      self._validate(end.step, eval_writer)

    def checkpoint(end: actions_lib.LoopEnd) -> None:
      self.checkpoints.save(end.step)
      # A run killed later resumes from this checkpoint: its summaries must be on disk.
      train_writer.flush()
      eval_writer.flush()

    return [
      actions_lib.PeriodicAction(
        "summaries", loop_cfg.summary_every, summarize, needs_diagnostics=loop_cfg.log_grad_conflict
      ),
      actions_lib.PeriodicAction("validation", loop_cfg.eval_every, validate),
      actions_lib.PeriodicAction("checkpoint", loop_cfg.checkpoint_every, checkpoint),
    ]

  def honour_stop(self, step: int) -> None:
    """Saves a checkpoint and raises Interrupted if SIGTERM/SIGINT asked to stop."""
    total = self.parts.total_steps
    if step >= total:
      return
    requested = self.stop is not None and self.stop.requested
    if self.parts.strategy is not None:  # a signal to one worker stops them all, at the same step
      requested = distribution.any_worker(self.parts.strategy, requested)
    if not requested:
      return
    path = self.checkpoints.save_unless_saved(step)
    name = self.stop.name if self.stop is not None and self.stop.requested else "another worker's signal"
    raise Interrupted(
      f"{name}: stopped at step {step} of {total} with checkpoint {path}; run the same command again to resume."
    )

  def _recover(self, first: int, stop: int, diagnose: bool) -> dict:
    """Replays steps from the last checkpoint to `stop`, testing each one (guard.py).

    Called when the fast loop over steps (first, stop] saw a non-finite value.
    Checkpoints are saved only after healthy loops, so the newest one holds
    good state. Raises guard.NonFiniteError under --nan_policy=stop.
    """
    path = self.checkpoints.restore_latest(self.parts.training_state)
    begin = int(self.parts.global_step.numpy())
    self.log(
      f"warning: a non-finite loss or gradient in steps {first + 1}-{stop}; replaying steps "
      f"{begin + 1}-{stop} from {path}, testing each one."
    )
    logs = self.parts.train_loop.run(stop - begin, diagnose, careful=True)
    record = guard.GuardState(**logs["guard"])
    skip = "" if self.parts.strategy is not None else " or pass --nan_policy=skip_batch"
    advice = (
      f"; the run stopped, keeping its last good checkpoint {path} (lower --learning_rate, check the data{skip})."
    )
    if record.count == 0:
      self.log(
        "warning: the replay met no non-finite value, so the run is not deterministic; "
        "it continues from the replayed state (--deterministic makes reruns exact)."
      )
    elif self.config.loop.nan_policy == NanPolicy.STOP or not bool(
      guard.variables_finite(self.parts.train_loop.state_variables)
    ):
      raise guard.NonFiniteError(guard.describe(record, self.task_names) + advice)
    else:
      self.parts.skipped_batches.assign_add(int(record.count))
      self.log(
        f"warning: skipped {int(record.count)} batch(es) in steps {begin + 1}-{stop}, the first "
        f"{guard.describe(record, self.task_names)} ({int(self.parts.skipped_batches.numpy())} in all)."
      )
    return logs

  def _validate(self, step: int, writer: MetricWriter) -> None:
    """Evaluates on the validation split, logs it, and keeps the best checkpoint."""
    results = self.evaluator.evaluate(self.bundle.val)
    losses = self.evaluator.training_losses(results)
    writer.write_scalars(step, self._eval_scalars(results, losses))
    criterion = self.parts.criterion
    if criterion is None:
      return
    score = criterion.score(results, losses)
    if criterion.better(score, float(self.parts.best_score.numpy())):
      self.parts.best_score.assign(score)
      self.parts.best_step.assign(step)
      self.checkpoints.save_best(step)

  def _train_scalars(self, logs: dict, rate: float) -> dict[str, float]:
    names = self.task_names
    scalars = {
      tags.TOTAL_LOSS: float(logs["objective"]),
      tags.STEPS_PER_SEC: rate,
      tags.LEARNING_RATE: model_optimizer.current_learning_rate(self.parts.optimizer),
    }
    scalars.update(per_task(tags.LOSS, names, logs["losses"]))
    scalars.update(per_task(tags.WEIGHTED_LOSS, names, logs["weights"] * logs["losses"]))
    scalars.update(per_task(tags.WEIGHT, names, logs["weights"]))
    if self.config.loop.nan_policy == NanPolicy.SKIP_BATCH:
      scalars[tags.SKIPPED_BATCHES] = float(self.parts.skipped_batches.numpy())
    for tag, value in logs["diagnostics"].items():
      scalars.update(per_task(tag, names, value) if np.ndim(value) else {tag: float(value)})
    if "conflict_cos" in logs:
      scalars.update(per_task(tags.CONFLICT_GRAD_NORM, names, logs["conflict_norm"]))
      for i, j in tags.task_pairs(names):
        scalars[tags.conflict_cos(names[i], names[j])] = float(logs["conflict_cos"][i, j])
    return scalars

  def _eval_scalars(self, results: dict, losses: dict) -> dict[str, float]:
    scalars = {
      tags.eval_metric(task, metric): value for task, values in results.items() for metric, value in values.items()
    }
    # Validation losses (training units) under the train tags, so TensorBoard overlays the curves.
    scalars.update({tags.per_task(tags.LOSS, name): loss for name, loss in losses.items()})
    scalars[tags.MEAN_LOSS] = mean_loss(losses)
    return scalars

  def _select(self) -> dict:
    """Loads the selected checkpoint's model and balancer; describes the choice."""
    final_step = int(self.parts.global_step.numpy())
    if self.parts.criterion is None or self.checkpoints.best() is None:
      return {"criterion": self.config.selection, "step": final_step}
    # The best checkpoint holds its own step and score (saved after they were set).
    selected = tf.train.Checkpoint(
      model=self.parts.model,
      balancer=self.parts.balancer,
      best_score=self.parts.best_score,
      best_step=self.parts.best_step,
    )
    if self.checkpoints.restore_best(selected) is None:
      # The final state is whole (restore_best restores all of it or warns); report it, saying so.
      self.checkpoints.restore_latest(self.parts.training_state)
      return {
        "criterion": "last",
        "step": int(self.parts.global_step.numpy()),
        "note": f"the checkpoint selected by {self.parts.criterion.name} could not be read",
      }
    return {
      "criterion": self.parts.criterion.name,
      "step": int(self.parts.best_step.numpy()),
      "val_score": float(self.parts.best_score.numpy()),
    }

  def _finish(self) -> dict:
    final_weights = self.parts.balancer.weights().numpy()
    selected = self._select()
    val = self.evaluator.evaluate(self.bundle.val)
    test = self.evaluator.evaluate(self.bundle.test)
    metrics = {
      "val": val,
      "test": test,
      "weights": {name: float(w) for name, w in zip(self.task_names, final_weights)},
      "selected_weights": {name: float(w) for name, w in zip(self.task_names, self.parts.balancer.weights().numpy())},
      "selection": selected,
      "single_task": self.config.single_task or None,
      "steps": int(self.parts.global_step.numpy()),
      "parameters": self.parts.model.parameter_counts(),
      "balancer": self.config.balancer.name,
      "dataset": self.config.dataset.name,
      "tasks": {
        t.name: {
          "kind": t.kind,
          "num_classes": t.num_classes,
          **({"classes": list(self.bundle.class_names[t.name])} if t.name in self.bundle.class_names else {}),
        }
        for t in self.bundle.tasks
      },
    }
    metrics, undefined = undefined_numbers(metrics)
    if undefined:  # strict JSON: null, and the reason beside it
      metrics["undefined"] = {path: _undefined_reason(path) for path in undefined}
      for path, reason in metrics["undefined"].items():
        self.log(f"note: {path} is undefined (null in metrics.json): {reason}.")
    write_json_atomic(self.run_dir.metrics_file, metrics)
    return metrics


def _undefined_reason(path: str) -> str:
  """Why the value at `path` of metrics.json (a split's metric, or another number) is not a number."""
  split, _, rest = path.partition(".")
  if split in ("val", "test") and rest.count(".") == 1:
    return metrics_lib.undefined_reason(rest.rpartition(".")[2])
  return "it was not a finite number"

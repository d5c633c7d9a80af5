"""tf.distribute: which strategy a run uses, and what each process may write.

`create` must run before TensorFlow executes any op: logical CPU devices
(`--cpu_replicas`) and the collective ops of MultiWorkerMirroredStrategy can
only be configured at program start-up. How the step and the balancers work
under a strategy is described in BUILD.md ("Distribution").

  default       one device, no tf.distribute machinery in the step (the fast path)
  mirrored      MirroredStrategy over the GPUs, or over --cpu_replicas logical CPUs
  multi_worker  MultiWorkerMirroredStrategy over the hosts of TF_CONFIG (ring collectives)
  tpu           TPUStrategy on the TPU the cluster resolver finds (not tested here)
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from mtl_research.config import Executor, LoopConfig, NanPolicy, StrategyName, values
from mtl_research.errors import UserError

# A worker that lost its peers fails after this long instead of hanging forever.
COLLECTIVE_TIMEOUT_SECONDS = 300.0


def _split_cpu(replicas: int) -> list[str]:
  """The CPU as `replicas` logical devices: split now, or already split so by whoever started TensorFlow."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
  except RuntimeError:
    # TensorFlow has started; its split is fixed. A process that split the CPU as asked before
    # starting it (a notebook, a test session) can still train here.
    existing = len(tf.config.list_logical_devices("CPU"))
    if existing != replicas:
      raise UserError(
        f"--cpu_replicas={replicas} must be configured before TensorFlow starts, and this process "
        f"already runs it with {existing} logical CPU(s); run the command in a fresh process."
      ) from None
  return [f"/cpu:{i}" for i in range(replicas)]


# One MirroredStrategy per set of devices and process. Each new strategy numbers its collective
# groups and instances from the start again, and TensorFlow resolves them process-wide, so a second
# run in the same process (a notebook, a test session) would meet the first one's collectives
# ("Shape mismatch in the collective instance").
_MIRRORED: dict[tuple[str, ...] | None, tf.distribute.MirroredStrategy] = {}


def _mirrored(devices: tuple[str, ...] | None) -> tf.distribute.MirroredStrategy:
  if devices not in _MIRRORED:
    _MIRRORED[devices] = tf.distribute.MirroredStrategy(devices=None if devices is None else list(devices))
  return _MIRRORED[devices]


def _check_tf_config() -> None:
  text = os.environ.get("TF_CONFIG")
  if not text:
    raise UserError(
      "--strategy=multi_worker needs the TF_CONFIG environment variable "
      '({"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}).'
    )
  try:
    config = json.loads(text)
    config["cluster"]  # pylint: disable=pointless-statement
    config["task"]["type"], config["task"]["index"]  # pylint: disable=pointless-statement
  except (ValueError, KeyError, TypeError):
    raise UserError('TF_CONFIG is not JSON with "cluster" and "task": {"type", "index"}.') from None


def create(name: str, cpu_replicas: int = 0) -> tf.distribute.Strategy | None:
  """The strategy `name` (see the module docstring), None for `default`; call before any TensorFlow op."""
  if name not in values(StrategyName):
    raise UserError(f"--strategy={name} is not one of {', '.join(values(StrategyName))}.")
  if cpu_replicas and name not in (StrategyName.MIRRORED, StrategyName.MULTI_WORKER):
    raise UserError(f"--cpu_replicas={cpu_replicas} needs --strategy=mirrored (or multi_worker).")
  if name == StrategyName.DEFAULT:
    return None  # one device: the step runs without tf.distribute machinery
  if name == StrategyName.MIRRORED:
    if cpu_replicas:
      return _mirrored(tuple(_split_cpu(cpu_replicas)))
    # Every GPU; on a machine without one, the CPU as a single replica.
    gpus = tf.config.list_physical_devices("GPU")
    return _mirrored(None if gpus else ("/cpu:0",))
  if name == StrategyName.MULTI_WORKER:
    _check_tf_config()
    if cpu_replicas:
      _split_cpu(cpu_replicas)
    options = tf.distribute.experimental.CommunicationOptions(
      implementation=tf.distribute.experimental.CommunicationImplementation.AUTO,
      timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS,
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, RuntimeError, tf.errors.OpError) as error:
    raise UserError(f"--strategy=tpu found no usable TPU ({str(error).splitlines()[0][:200]}).") from None
  return tf.distribute.TPUStrategy(resolver)


def replicas(strategy: tf.distribute.Strategy) -> int:
  """Replicas in sync over the whole job (all workers)."""
  return int(strategy.num_replicas_in_sync)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run directory (the chief, or worker 0 without one)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_name(strategy: tf.distribute.Strategy) -> str:
  """`<task type>-<index>` of this process in TF_CONFIG, or "local"."""
  resolver = getattr(strategy, "cluster_resolver", None)
  return f"{resolver.task_type}-{resolver.task_id}" if resolver is not None and resolver.task_type else "local"


def check_config(strategy: tf.distribute.Strategy, loop: LoopConfig) -> None:
  """Raises UserError for loop settings a strategy cannot run."""
  count = replicas(strategy)
  if loop.batch_size % count:
    raise UserError(
      f"--batch_size={loop.batch_size} is the global batch and must be divisible by the {count} "
      "replicas of the strategy."
    )
  if loop.executor == Executor.SINGLE_THREADED:
    raise UserError(
      f"--executor=single_threaded cannot run --strategy={loop.strategy}: "
      "tf.distribute needs TensorFlow's default executor."
    )
  if loop.nan_policy == NanPolicy.SKIP_BATCH:
    # Skipping wraps the model optimizer's update in tf.cond, and Keras's
    # cross-replica gradient sum cannot run inside one (TensorFlow: merge_call
    # inside control flow is not supported).
    raise UserError(
      f"--nan_policy=skip_batch cannot run under --strategy={loop.strategy}; use --nan_policy=stop (the default)."
    )


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
  return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _sum_over_workers(strategy: tf.distribute.Strategy, values: list[float]) -> list[float]:
  """Each value summed over the replicas (eager; every worker must call it at the same point)."""

  def replica_fn():
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.constant(values, tf.float64))

  result = strategy.experimental_local_results(strategy.run(replica_fn))[0]
  return [float(v) for v in result.numpy()]


def check_workers_agree(strategy: tf.distribute.Strategy, step: int) -> None:
  """Raises UserError (on every worker) unless all workers restored the same step.

  Workers restore from the chief's directory on a shared file system; one that
  saw another checkpoint (a cache, a damaged file it skipped) would otherwise
  train other weights with the same summed gradients, silently.
  """
  if not _multi_worker(strategy):
    return
  count, total, squares = _sum_over_workers(strategy, [1.0, float(step), float(step) ** 2])
  if squares * count != total * total:  # equal iff every worker holds the same step
    raise UserError(
      f"the workers resumed from different checkpoints (this one from step {step}); check that "
      "every host sees the same --run_dir."
    )


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
  """Whether `flag` holds on any worker (for a multi-worker strategy; else `flag`)."""
  if not _multi_worker(strategy):
    return flag
  return _sum_over_workers(strategy, [float(flag)])[0] > 0

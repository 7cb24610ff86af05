"""Joining the processes of one job (TPU pod hosts, SLURM tasks) into one JAX runtime.

Every process runs the same command; each sees its local devices, reads its own rows of every
global batch, and the global batch is assembled from the process-local parts
(``sharding.global_batch``). Only process 0 writes metrics and the progress line; checkpoints
are written by all processes together (Orbax).
"""
import os

import jax

MODES = ('auto', 'on', 'off')


def detect_cluster(env=None):
  """The kind of multi-process launch ``env`` shows, or None for a single process.

  SLURM counts only inside a job step (srun) with several tasks; Open MPI via mpirun; a TPU pod
  on GKE via its worker host list. A Cloud TPU VM slice sets none of these: its launcher passes
  ``--distributed=on`` and JAX reads the topology from the TPU metadata.
  """
  env = os.environ if env is None else env
  if int(env.get('SLURM_NTASKS', '1')) > 1 and 'SLURM_STEP_ID' in env:
    return 'slurm'
  if int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1:
    return 'openmpi'
  if ',' in env.get('TPU_WORKER_HOSTNAMES', ''):
    return 'tpu'
  return None


def local_device_ids(env=None):
  """The GPUs of this node that this process drives, for ``jax.distributed.initialize``.

  None (JAX's choice) except in a SLURM task that sees fewer GPUs than its local rank: JAX
  gives local task i device i, right when every task sees all of its node's GPUs, and a device
  that does not exist when the site binds GPUs per task (CUDA_VISIBLE_DEVICES with one entry
  per task); such a task drives every GPU it sees.
  """
  env = os.environ if env is None else env
  visible, local = env.get('CUDA_VISIBLE_DEVICES'), env.get('SLURM_LOCALID')
  if visible is None or local is None:
    return None
  count = len([d for d in visible.split(',') if d.strip()])
  return list(range(count)) if 0 < count <= int(local) else None


def initialize(mode='auto', coordinator_address=None, num_processes=None, process_id=None,
               env=None, heartbeat_seconds=100):
  """Starts ``jax.distributed`` when this is one of several processes; returns how (or None).

  ``mode``: 'auto' (when ``detect_cluster`` finds a cluster or a coordinator is given),
  'on' (always; JAX detects TPU, SLURM and Open MPI settings itself), 'off' (never).
  ``heartbeat_seconds``: JAX's heartbeat timeout (after it the coordination service ends every
  process). Must run before any JAX computation.
  """
  if mode not in MODES:
    raise ValueError(f'--distributed must be one of {MODES}, got {mode!r}')
  if mode == 'off':
    return None
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError('--coordinator_address needs --num_processes and --process_id')
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               local_device_ids=local_device_ids(env),
                               heartbeat_timeout_seconds=heartbeat_seconds)
    return 'explicit'
  cluster = detect_cluster(env)
  if cluster is None and mode == 'auto':
    return None
  jax.distributed.initialize(local_device_ids=local_device_ids(env),
                             heartbeat_timeout_seconds=heartbeat_seconds)
  return cluster or 'jax-detected'

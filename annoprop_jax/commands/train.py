"""``train``: train (or resume) ``--config`` in ``--workdir``.

Exits 0 when the run has finished, 2 with one line on stderr for an input that cannot work (a
bad config, a resume with a changed config, a damaged or foreign checkpoint, a locked workdir, a
non-finite step), and 75 (``EXIT_RESUME``) when a signal stopped it early after a checkpoint: a
launcher requeues on 75.
"""
import errno
import sys

from absl import flags
from absl import logging
import jax

from annoprop_jax import checkpoint
from annoprop_jax import checkpoint_integrity
from annoprop_jax import checkpoint_recovery
from annoprop_jax import errors
from annoprop_jax import lost_process
from annoprop_jax import train as training
from annoprop_jax import workdir_lock
from annoprop_jax.commands import common
from annoprop_jax.commands import experiment

EXIT_RESUME = lost_process.EXIT_RESUME   # EX_TEMPFAIL: stopped early after saving; rerun

ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False, 'Resume a checkpoint with a config that differs in what the '
    'run depends on (schedules, seed, data, model); each change is logged.')
TAKEOVER_LOCK = flags.DEFINE_bool(
    'takeover_lock', False, 'Take over the workdir lock even if its heartbeat is fresh (the run '
    'that held it is gone, e.g. a lost host).')
LOCK_STALE_SECONDS = flags.DEFINE_float(
    'lock_stale_seconds', 120.0, 'A lock whose heartbeat is older is taken over, from any host.')

# What a run that cannot go on raises: each is one line and exit 2.
_INPUT_ERRORS = (FileNotFoundError, FloatingPointError, errors.ConfigError, errors.DataError,
                 checkpoint.CheckpointSaveError, checkpoint_integrity.CheckpointMismatchError,
                 checkpoint_recovery.NoReadableCheckpointError, workdir_lock.WorkdirLockedError)


def main(argv):
  del argv
  config = experiment.config()
  logging.set_verbosity(logging.WARNING)   # orbax and grain log every save at INFO
  experiment.join_processes()
  workdir = common.workdir('train')
  watch = lost_process.watch(experiment.LOST_PROCESS_SECONDS.value)
  try:
    state = training.train(config, workdir, allow_config_change=ALLOW_CONFIG_CHANGE.value,
                           takeover_lock=TAKEOVER_LOCK.value,
                           lock_stale_seconds=LOCK_STALE_SECONDS.value)
  except jax.errors.JaxRuntimeError:
    if watch:
      watch.confirm()     # a collective that failed because a process was lost: exits 75
    raise
  except _INPUT_ERRORS as e:
    common.fail(str(e))
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
      raise
    common.fail(f'the disk is full: {e}; the checkpoints and config.json written before are '
                'kept')
  if watch:
    watch.stop()
  if int(state.step) < config.total_steps:
    sys.exit(EXIT_RESUME)

"""What the commands that run an experiment config share: ``--config`` (a config file and its
``--config.KEY=VALUE`` overrides, or a run's config.json), joining the processes of a multi-host
job, and flag errors explained in one line."""
import re

from absl import flags
from ml_collections import config_flags

from annoprop_jax import configuration
from annoprop_jax import multihost
from annoprop_jax.commands import common

CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file: '
                                         'configs/FILE.py[:variant].', lock_config=True)
DISTRIBUTED = flags.DEFINE_enum('distributed', 'auto', list(multihost.MODES),
                                'Start jax.distributed: auto (when a cluster launch is '
                                'detected), on (always, e.g. on a Cloud TPU VM slice), off.')
COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                  'HOST:PORT of process 0, for launches JAX cannot detect.')
NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'With --coordinator_address.')
PROCESS_ID = flags.DEFINE_integer('process_id', None, 'With --coordinator_address.')
LOST_PROCESS_SECONDS = flags.DEFINE_float(
    'lost_process_seconds', 60.0, 'Several processes: one that stops answering for this long '
    'is taken as lost, and the others stop with exit 75 (rerun to resume).')


def config(run_config=False):
  """The --config, validated; with ``run_config`` the --workdir's config.json when there is no
  --config (evaluate, export, diagnose, visualize). One line and exit 2 when it cannot work."""
  value = CONFIG.value
  try:
    if value is None and run_config and common.WORKDIR.value:
      value = configuration.load_run(common.WORKDIR.value)
    if value is None:
      common.fail('--config=configs/FILE.py is required')
    return configuration.validate(value)
  except (FileNotFoundError, configuration.ConfigError) as e:
    common.fail(str(e))


def join_processes():
  """Starts jax.distributed when this is one process of several (``multihost.initialize``)."""
  try:
    # JAX's own heartbeat timeout aborts every process: it must come after ours (train).
    multihost.initialize(DISTRIBUTED.value, COORDINATOR.value, NUM_PROCESSES.value,
                         PROCESS_ID.value,
                         heartbeat_seconds=int(2 * LOST_PROCESS_SECONDS.value) + 30)
  except ValueError as e:
    common.fail(str(e))


def flag_error(error, argv):
  """One line for a flag that did not parse: a config override names the nearest keys."""
  path = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  try:
    loaded = configuration.load(path) if path else None
  except Exception:  # pylint: disable=broad-except  # the file itself is broken: say so below
    loaded = None
  for arg in argv:
    if loaded is not None and arg.startswith('--config.'):
      key = arg[len('--config.'):].split('=', 1)[0]
      if not _has_key(loaded, key):
        return str(configuration.unknown_key(loaded, key))
  text = str(error).strip()
  line = text.splitlines()[-1] if text else repr(error)
  return re.sub(r'^[\w.]*ConfigError: ', '', line)     # config_flags names the class


def _has_key(config, dotted):
  node = config
  for part in dotted.split('.'):
    if not hasattr(node, 'keys') or part not in node.keys():
      return False
    node = node[part]
  return True

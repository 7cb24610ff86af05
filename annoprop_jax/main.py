"""Command line: ``python -m annoprop_jax.main COMMAND --config=configs/FILE.py[:variant] ...``.

Commands:
  train         train (or resume) in --workdir
  evaluate      probe the latest (or --step) checkpoint of --workdir; print a table and
                append it to the run's metrics (--config optional: the run's config.json)
  export        write the encoder of --workdir's latest (or --step) checkpoint to --output:
                --format=orbax (default; load_encoder reads it) or safetensors (timm's names
                and model config, for timm.create_model + load_state_dict)
  diagnose      AB runs: whether the decoder uses the action, on --batches of the run's
                streams (KL of Q to its targets with true and shuffled moves, by IoU); prints a
                table and writes WORKDIR/diagnose/step_N.json
  visualize     pictures of --workdir's latest (or --step) checkpoint in --out (default
                WORKDIR/visualize): value maps (AB runs), attention maps, the views, training
                charts, and an index.html showing them (--images=A.png,B.jpg: other images)
  compile       lower and compile the train step for the config's mesh; print FLOPs per step
                and memory per device (``--mesh=data=2,fsdp=4``, ``--num_cpu_devices=8``)
  prepare-data  write the embedded scenes dataset described by the config into data.data_dir
  prepare       convert a real dataset into an array_record tfds dataset (no --config):
                --format=coco|imagefolder|webdataset|video --input=DIR --output=DIR --name=NAME

Several processes (TPU pod hosts, SLURM tasks) join one run with ``--distributed`` (default
auto: SLURM job steps, Open MPI and GKE TPU pods are detected) or explicit
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``.

Any config field can be overridden: ``--config.total_steps=100 --config.model.width=64``.

``train`` exits 0 when the run has finished, 2 with one line on stderr for an input that cannot
work (a bad config, a resume with a changed config, a damaged or foreign checkpoint, a locked
workdir, a non-finite step), and 75 (``EXIT_RESUME``) when a signal stopped it early after a
checkpoint: a launcher requeues on 75.
"""
import errno
import sys

from annoprop_jax import stop_request

if __name__ == '__main__' and sys.argv[1:2] == ['train']:
  # First thing: a SIGTERM during the imports below already stops the run cleanly.
  stop_request.StopRequest()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from annoprop_jax.data import prepare_cli  # pylint: disable=g-import-not-at-top,wrong-import-position
# The training stack (jax, flax, orbax, tfds) is imported only by the commands that need it,
# so `prepare` and a usage error start in a fraction of a second.

COMMANDS = ('train', 'evaluate', 'export', 'diagnose', 'visualize', 'compile', 'prepare-data',
            'prepare')

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints and metrics go.')
_DISTRIBUTED = flags.DEFINE_enum('distributed', 'auto', ['auto', 'on', 'off'],
                                 'Start jax.distributed: auto (when a cluster launch is '
                                 'detected), on (always, e.g. on a Cloud TPU VM slice), off.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'HOST:PORT of process 0, for launches JAX cannot detect.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'With --coordinator_address.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'With --coordinator_address.')
_STEP = flags.DEFINE_integer('step', None, 'evaluate / export / diagnose / visualize: the '
                             'checkpoint step (default: the latest).')
_BATCHES = flags.DEFINE_integer('batches', 4, 'diagnose: batches of the run\'s streams.')
_OUT = flags.DEFINE_string('out', None, 'visualize: the folder for the pictures and index.html '
                           '(default: WORKDIR/visualize).')
_IMAGES = flags.DEFINE_list('images', [], 'visualize: image files to draw instead of the run\'s '
                            'validation images.')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 4, 'visualize: validation images to draw.')
_ANNOTATION = flags.DEFINE_integer('annotation', None, 'visualize: the annotation l of the value '
                                   'maps (default: the target network\'s top one of the source '
                                   'view).')
_MESH = flags.DEFINE_string('mesh', None, 'compile: mesh sizes, e.g. data=2,fsdp=4,tensor=1.')
_NUM_CPU_DEVICES = flags.DEFINE_integer('num_cpu_devices', None,
                                        'compile: simulate this many CPU devices.')
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False, 'train: resume a checkpoint with a config that differs in '
    'what the run depends on (schedules, seed, data, model); each change is logged.')
_TAKEOVER_LOCK = flags.DEFINE_bool(
    'takeover_lock', False, 'train: take over the workdir lock even if its heartbeat is '
    'fresh (the run that held it is gone, e.g. a lost host).')
_LOCK_STALE_SECONDS = flags.DEFINE_float(
    'lock_stale_seconds', 120.0, 'train: a lock whose heartbeat is older is taken over, '
    'from any host.')

# train's exit status: 0 finished, 2 an input or state that cannot work (one line on stderr),
# EXIT_RESUME stopped early (SIGTERM, preemption) after saving: run the same command again.
EXIT_RESUME = 75     # EX_TEMPFAIL


def _one_line_error(message):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _explain_flag_error(error, argv):
  """Turns a config override error into one line naming the nearest valid keys."""
  from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top
  config = None
  try:
    config = _load_config_only(argv)
  except Exception:  # pylint: disable=broad-except  # the file itself is broken: say so below
    pass
  if config is not None:
    for arg in argv:
      if arg.startswith('--config.'):
        key = arg[len('--config.'):].split('=', 1)[0]
        if not _has_key(config, key):
          return str(configuration.unknown_key(config, key))
  text = str(error).strip()
  return text.splitlines()[-1] if text else repr(error)


def _has_key(config, dotted):
  node = config
  for part in dotted.split('.'):
    if not hasattr(node, 'keys') or part not in node.keys():
      return False
    node = node[part]
  return True


def _load_config_only(argv):
  """Loads the --config file alone (no overrides)."""
  from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top
  path = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  if path is None:
    return None
  return configuration.load(path)


def parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _one_line_error(_explain_flag_error(e, argv))
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    _one_line_error(_explain_flag_error(e, argv))


def _compile(config, aot):
  import jax  # pylint: disable=g-import-not-at-top
  from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top
  if _NUM_CPU_DEVICES.value:
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', _NUM_CPU_DEVICES.value)
  try:
    report = aot.compile_report(config)
  except configuration.ConfigError as e:
    _one_line_error(str(e))
  print('\n'.join(report.lines()))


def _evaluate_or_export(command, config):
  from annoprop_jax import configuration  # pylint: disable=g-import-not-at-top
  from annoprop_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from annoprop_jax import objectives  # pylint: disable=g-import-not-at-top
  from annoprop_jax import sharding  # pylint: disable=g-import-not-at-top
  from annoprop_jax.evaluation import encoder  # pylint: disable=g-import-not-at-top
  from annoprop_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  from annoprop_jax.evaluation import timm_format  # pylint: disable=g-import-not-at-top
  which = objectives.probe_params(config.objective, config.evaluation.params)
  try:
    if command == 'evaluate':
      probes = evaluator.Evaluator(config.evaluation, config.data,
                                   configuration.encoder_config(config),
                                   sharding.make_mesh(config.mesh))
      step, results = evaluator.evaluate_checkpoint(probes, _WORKDIR.value, which,
                                                    config.total_steps, _STEP.value)
      print(evaluator.table(results, step))
      return
    if not flags.FLAGS.output:
      _one_line_error('export needs --output=DIR (a new folder for the encoder)')
    export_format = flags.FLAGS.format or 'orbax'
    if export_format not in ('orbax', 'safetensors'):
      _one_line_error(f'export --format={export_format}: use orbax (params for load_encoder) '
                      'or safetensors (timm)')
    step, params, target_params = checkpoint.load_params(_WORKDIR.value, _STEP.value)
    write = encoder.export if export_format == 'orbax' else timm_format.export
    path = write(evaluator.probed_encoder(which, params, target_params),
                 configuration.encoder_config(config), flags.FLAGS.output)
    print(f'exported the {which} encoder of step {step} to {path} ({export_format})')
  except (FileNotFoundError, ValueError) as e:
    _one_line_error(str(e))


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    _one_line_error(f'usage: python -m annoprop_jax.main {{{"|".join(COMMANDS)}}} '
                    f'--config=configs/FILE.py [--workdir=DIR] [--config.KEY=VALUE ...]')
  if argv[1] == 'prepare':
    prepare_cli.run(_one_line_error)
    return
  command = argv[1]
  # pylint: disable=g-import-not-at-top
  from annoprop_jax import configuration
  from annoprop_jax import multihost
  # pylint: enable=g-import-not-at-top
  config = _CONFIG.value
  if config is None and command in ('evaluate', 'export', 'diagnose',
                                    'visualize') and _WORKDIR.value:
    try:
      config = configuration.load_run(_WORKDIR.value)
    except (FileNotFoundError, configuration.ConfigError) as e:
      _one_line_error(str(e))
  if config is None:
    _one_line_error('--config=configs/FILE.py is required')
  from annoprop_jax import aot  # pylint: disable=g-import-not-at-top
  try:
    if _MESH.value:
      for axis, size in aot.parse_mesh(_MESH.value).items():
        config.mesh[axis] = size
    configuration.validate(config)
  except configuration.ConfigError as e:
    _one_line_error(str(e))
  logging.set_verbosity(logging.WARNING)   # orbax and grain log every save at INFO
  if command == 'compile':
    _compile(config, aot)
    return
  try:
    multihost.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  except ValueError as e:
    _one_line_error(str(e))
  if command == 'prepare-data':
    from annoprop_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    for name in ('annotation', 'bootstrap'):
      if name in config.data and config.data[name].dataset == 'scenes':
        print(pipeline.dataset_directory(config.data, 'scenes'))
        break
    return
  if not _WORKDIR.value:
    _one_line_error(f'--workdir=DIR is required for {command}')
  if command in ('evaluate', 'export'):
    _evaluate_or_export(command, config)
    return
  if command == 'diagnose':
    from annoprop_jax.evaluation import diagnose  # pylint: disable=g-import-not-at-top
    try:
      result = diagnose.diagnose(config, configuration.encoder_config(config), _WORKDIR.value,
                                 _STEP.value, _BATCHES.value)
    except (FileNotFoundError, ValueError) as e:
      _one_line_error(str(e))
    print(diagnose.table(result))
    print(f'wrote {diagnose.write(result, _WORKDIR.value)}')
    return
  if command == 'visualize':
    from annoprop_jax.evaluation import visualize  # pylint: disable=g-import-not-at-top
    out = _OUT.value or f'{_WORKDIR.value.rstrip("/")}/visualize'
    try:
      index = visualize.visualize(config, configuration.encoder_config(config), _WORKDIR.value,
                                  out, _STEP.value, _IMAGES.value, _NUM_IMAGES.value,
                                  _ANNOTATION.value)
    except (FileNotFoundError, ValueError) as e:
      _one_line_error(str(e))
    print(f'wrote {index}')
    return
  from annoprop_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from annoprop_jax import checkpoint_integrity  # pylint: disable=g-import-not-at-top
  from annoprop_jax import checkpoint_recovery  # pylint: disable=g-import-not-at-top
  from annoprop_jax import errors  # pylint: disable=g-import-not-at-top
  from annoprop_jax import train  # pylint: disable=g-import-not-at-top
  from annoprop_jax import workdir_lock  # pylint: disable=g-import-not-at-top
  try:
    state = train.train(config, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value,
                        takeover_lock=_TAKEOVER_LOCK.value,
                        lock_stale_seconds=_LOCK_STALE_SECONDS.value)
  except (FileNotFoundError, FloatingPointError, checkpoint_recovery.NoReadableCheckpointError,
          checkpoint_integrity.CheckpointMismatchError, checkpoint.CheckpointSaveError,
          workdir_lock.WorkdirLockedError, configuration.ConfigError, errors.DataError) as e:
    _one_line_error(str(e))
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
      raise
    _one_line_error(f'the disk is full: {e}; the checkpoints and config.json written before '
                    'are kept')
  if int(state.step) < config.total_steps:
    sys.exit(EXIT_RESUME)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

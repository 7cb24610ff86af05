"""What every command shares: one-line errors and the flags several commands read."""
import sys

from absl import flags

from annoprop_jax import storage

WORKDIR = flags.DEFINE_string('workdir', None, "The run's folder (local or gs://).")
STEP = flags.DEFINE_integer('step', None, 'evaluate, export, diagnose, visualize: the checkpoint '
                            'step (default: the latest).')
OUTPUT = flags.DEFINE_string('output', None, 'export: the new folder for the encoder; prepare: '
                             'the data_dir to write into (OUTPUT/NAME/1.0.0).')
FORMAT = flags.DEFINE_string('format', None, 'export: orbax (default) or safetensors (timm); '
                             'prepare: coco, imagefolder, webdataset or video.')


def fail(message):
  """Exits 2 with ``error: message`` on stderr: an input that cannot work."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def workdir(command):
  if not WORKDIR.value:
    fail(f'{command} needs --workdir=DIR')
  return WORKDIR.value


def check_stores():
  """Before a command touches them: one line and exit 2, within seconds, for a bucket that a
  flag (--workdir, --output) or the config (data.data_dir, init_from) names and that cannot be
  reached (``storage.check_reachable``)."""
  names = [WORKDIR.value, OUTPUT.value]
  if 'config' in flags.FLAGS and flags.FLAGS.config is not None:
    config = flags.FLAGS.config
    names += [config.data.get('data_dir'), config.get('init_from')]
  for bucket in sorted({storage.bucket(n) for n in names if n and storage.is_remote(n)}):
    try:
      storage.check_reachable(bucket)
    except storage.StoreUnreachableError as e:
      fail(str(e))

"""What every command shares: one-line errors and the flags several commands read."""
import sys

from absl import flags

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

"""``prepare``: convert a dataset into an array_record tfds dataset (no --config), e.g.

  python -m annoprop_jax.main prepare --format=coco --input=/data/coco \
      --output=~/tensorflow_datasets --name=coco2017 [--num_workers=16] [--max_image_size=640]

See ``data/prepare.py`` for the formats and what is written.
"""
import os

from absl import flags

from annoprop_jax.commands import common
from annoprop_jax.data import prepare

INPUT = flags.DEFINE_string('input', None, 'The source folder.')
NAME = flags.DEFINE_string('name', None, 'The dataset name (lower case, digits, _).')
NUM_WORKERS = flags.DEFINE_integer('num_workers', 0, 'Worker processes (0: one per CPU core).')
SHARD_SIZE = flags.DEFINE_integer('shard_size', 1000,
                                  'Images per output shard (coco, imagefolder).')
MAX_IMAGE_SIZE = flags.DEFINE_integer(
    'max_image_size', 0, 'Scale images down so the longer side is at most this (0: keep the '
    'source size and bytes).')
JPEG_QUALITY = flags.DEFINE_integer('jpeg_quality', 95,
                                    'JPEG quality of re-encoded images and frames.')
FPS = flags.DEFINE_float('fps', 1.0, '--format=video: frames per second.')
ANNOTATIONS = flags.DEFINE_string('annotations', '', '--format=video: per-frame annotation CSV.')


def main(argv):
  del argv
  missing = [f'--{f.name}' for f in (common.FORMAT, INPUT, common.OUTPUT, NAME) if not f.value]
  if missing:
    common.fail(f'prepare needs {", ".join(missing)} (e.g. --format=coco --input=/data/coco '
                f'--output=~/tensorflow_datasets --name=coco2017)')
  expand = lambda path: os.path.expanduser(path) if path else path
  options = prepare.Options(
      format=common.FORMAT.value, input=expand(INPUT.value), output=expand(common.OUTPUT.value),
      name=NAME.value, num_workers=NUM_WORKERS.value, shard_size=SHARD_SIZE.value,
      max_image_size=MAX_IMAGE_SIZE.value, jpeg_quality=JPEG_QUALITY.value, fps=FPS.value,
      annotations=expand(ANNOTATIONS.value))
  try:
    prepare.prepare(options)
  except prepare.PrepareError as e:
    common.fail(str(e))
  except KeyboardInterrupt:
    common.fail('interrupted; rerun the same command to resume (finished shards are kept)')

"""Flags of ``python -m annoprop_jax.main prepare`` (no --config needed); see ``prepare.py``.

  python -m annoprop_jax.main prepare --format=coco --input=/data/coco \
      --output=~/tensorflow_datasets --name=coco2017 [--num_workers=16] [--max_image_size=640]
"""
import os

from absl import flags

_FORMAT = flags.DEFINE_string('format', None, 'prepare: coco, imagefolder, webdataset or video; '
                              'export: orbax (default) or safetensors (timm).')
_INPUT = flags.DEFINE_string('input', None, 'prepare: the source folder.')
_OUTPUT = flags.DEFINE_string('output', None,
                              'prepare: the data_dir to write into (OUTPUT/NAME/1.0.0); '
                              'export: the new folder for the encoder.')
_NAME = flags.DEFINE_string('name', None, 'prepare: the dataset name (lower case, digits, _).')
_NUM_WORKERS = flags.DEFINE_integer('num_workers', 0,
                                    'prepare: worker processes (0: one per CPU core).')
_SHARD_SIZE = flags.DEFINE_integer('shard_size', 1000,
                                   'prepare: images per output shard (coco, imagefolder).')
_MAX_IMAGE_SIZE = flags.DEFINE_integer(
    'max_image_size', 0, 'prepare: scale images down so the longer side is at most this '
    '(0: keep the source size and bytes).')
_JPEG_QUALITY = flags.DEFINE_integer('jpeg_quality', 95,
                                     'prepare: JPEG quality of re-encoded images and frames.')
_FPS = flags.DEFINE_float('fps', 1.0, 'prepare --format=video: frames per second.')
_ANNOTATIONS = flags.DEFINE_string('annotations', '',
                                   'prepare --format=video: per-frame annotation CSV.')


def run(error):
  """Runs the ``prepare`` command; ``error(message)`` prints one line and exits."""
  missing = [f'--{f.name}' for f in (_FORMAT, _INPUT, _OUTPUT, _NAME) if not f.value]
  if missing:
    error(f'prepare needs {", ".join(missing)} (e.g. --format=coco --input=/data/coco '
          f'--output=~/tensorflow_datasets --name=coco2017)')
  from annoprop_jax.data import prepare  # pylint: disable=g-import-not-at-top
  expand = lambda path: os.path.expanduser(path) if path else path
  options = prepare.Options(
      format=_FORMAT.value, input=expand(_INPUT.value), output=expand(_OUTPUT.value),
      name=_NAME.value,
      num_workers=_NUM_WORKERS.value, shard_size=_SHARD_SIZE.value,
      max_image_size=_MAX_IMAGE_SIZE.value, jpeg_quality=_JPEG_QUALITY.value, fps=_FPS.value,
      annotations=expand(_ANNOTATIONS.value))
  try:
    prepare.prepare(options)
  except prepare.PrepareError as e:
    error(str(e))
  except KeyboardInterrupt:
    error('interrupted; rerun the same command to resume (finished shards are kept)')

"""Writes the embedded ``scenes`` dataset as a TensorFlow-free array_record tfds dataset.

Splits: ``train`` and ``validation`` (scenes of several objects, with boxes, labels and a
caption), ``objects`` and ``objects_validation`` (one centred object per image: the probe set).
The dataset lives in ``DATA_DIR/scenes/<spec-name>/1.0.0`` where the spec name encodes the
difficulty knobs, so changing a knob writes a new dataset and never silently reuses an old one.
"""
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import tempfile
import time

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from annoprop_jax import storage
from annoprop_jax.data import scenes
from annoprop_jax.data import shapes

SPLIT_SEEDS = {'train': 0, 'validation': 1, 'objects': 2, 'objects_validation': 3}
VERSION = '1.0.0'


@dataclasses.dataclass(frozen=True)
class ScenesConfig:
  """Everything that determines the bytes of a scenes dataset."""
  spec: scenes.SceneSpec
  seed: int = 0
  sizes: tuple = (('train', 20000), ('validation', 2000), ('objects', 10000),
                  ('objects_validation', 2000))

  @property
  def name(self):
    blob = json.dumps({'spec': dataclasses.asdict(self.spec), 'seed': self.seed,
                       'sizes': list(map(list, self.sizes))}, sort_keys=True)
    return f'r{self.spec.resolution}_{hashlib.sha1(blob.encode()).hexdigest()[:10]}'

  def directory(self, data_dir):
    return storage.path(data_dir) / 'scenes' / self.name / VERSION


def _render(args):
  spec, seed, split, index = args
  split_seed = seed * 16 + SPLIT_SEEDS[split]
  if split.startswith('objects'):
    example = scenes.render_single_object(spec, split_seed, index)
  else:
    example = scenes.render_scene(spec, split_seed, index)
  buf = io.BytesIO()
  Image.fromarray(example['image']).save(buf, format='PNG')
  return index, {
      'image': buf.getvalue(),
      'objects': {'bbox': np.asarray(example['boxes'], np.float32).reshape(-1, 4),
                  'label': np.asarray(example['labels'], np.int64)},
      'caption': example['caption'],
  }


class Scenes(tfds.core.GeneratorBasedBuilder):
  """The procedurally generated scenes dataset (see ``annoprop_jax.data.scenes``)."""
  VERSION = tfds.core.Version(VERSION)

  def __init__(self, scenes_config, pool=None, **kwargs):
    self._scenes_config = scenes_config
    self._pool = pool
    super().__init__(config=tfds.core.BuilderConfig(name=scenes_config.name), **kwargs)

  def _info(self):
    spec = self._scenes_config.spec
    return tfds.core.DatasetInfo(
        builder=self,
        description='Procedural scenes of shapes with boxes, labels and captions.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(spec.resolution, spec.resolution, 3)),
            'objects': tfds.features.Sequence({
                'bbox': tfds.features.BBoxFeature(),
                'label': tfds.features.ClassLabel(names=list(shapes.SHAPES)),
            }),
            'caption': tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(scenes_spec=dataclasses.asdict(spec),
                                        seed=self._scenes_config.seed),
    )

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split, n) for split, n in self._scenes_config.sizes}

  def _generate_examples(self, split, num_examples):
    cfg = self._scenes_config
    jobs = ((cfg.spec, cfg.seed, split, i) for i in range(num_examples))
    results = self._pool.imap(_render, jobs, chunksize=256) if self._pool else map(_render, jobs)
    yield from results


def prepare(config, data_dir, num_workers=None, log=print):
  """Writes the dataset described by ``config`` unless it is already complete; returns its dir."""
  directory = config.directory(data_dir)
  if (directory / 'dataset_info.json').exists():
    return directory
  if storage.is_remote(directory):
    # tfds writes array_record shards through a writer of local files only: build it here,
    # then upload it (dataset_info.json last: its presence marks a complete dataset).
    with tempfile.TemporaryDirectory(prefix='annoprop-scenes-') as local:
      built = prepare(config, local, num_workers, log)
      log(f'Uploading it to {directory}')
      storage.put_folder(built, directory, last=('dataset_info.json',))
    return directory
  config.spec.validate()
  total = sum(n for _, n in config.sizes)
  log(f'Writing the scenes dataset ({total} images at {config.spec.resolution}px) to {directory}')
  start = time.time()
  num_workers = num_workers or os.cpu_count() or 1
  # Spawned (not forked) workers: the caller may already run JAX, which is multithreaded.
  ctx = multiprocessing.get_context('spawn')
  with ctx.Pool(num_workers) as pool:
    builder = Scenes(config, pool=pool, data_dir=storage.path(data_dir))
    try:
      builder.download_and_prepare(file_format='array_record')
    except FileExistsError:
      # Another process (a multi-process run on one machine, a racing start) wrote the same
      # deterministic dataset first: its copy is complete, ours is discarded.
      if not (directory / 'dataset_info.json').exists():
        raise
      log(f'Another process wrote {directory} first; using it')
      return directory
  storage.write_atomically(directory / 'scenes_config.json', json.dumps(
      {'spec': dataclasses.asdict(config.spec), 'seed': config.seed,
       'sizes': dict(config.sizes)}, indent=2))
  log(f'Wrote {total} images in {time.time() - start:.1f}s')
  return directory

"""Grain input pipelines for the two named streams: ``annotation`` and ``bootstrap``.

Each stream: tfds array_record data source -> grain MapDataset -> this process's shard ->
shuffle (a new order every epoch) -> decode -> pad variable-length annotations to fixed shapes ->
multi-view crops with boxes and moves -> skip and count undecodable records -> batch.
A stream yields dicts of numpy arrays holding this process's part of the global batch:

  images        (B, V, S, S, 3) uint8   views (``views`` config)
  boxes         (B, V, 4)       float32 each view's box in the original image
  flips         (B, V)          bool
  moves         (B, V, V, 4)    float32 move from view i to view j (METHOD.md, Boxes)
  local_images  (B, L, s, s, 3) uint8   optional smaller views (DINO multi-crop), with local_boxes
  labels        (B, M)          int32   object class labels, -1 = padding
  object_boxes  (B, M, 4)       float32 object boxes, zeros for padding
  caption       (B, C)          uint8   caption bytes, zero padded
  skipped_records (B,)          int32   records this process skipped as undecodable so far
"""
import dataclasses
import io
import os

import grain
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from annoprop_jax.data import scenes
from annoprop_jax.data import scenes_dataset
from annoprop_jax.data import views as views_lib

HOST_ONLY_KEYS = ('skipped_records',)


def scenes_config_from(config):
  """The ScenesConfig described by the ``data.scenes`` config block."""
  s = config.data.scenes
  spec = scenes.SceneSpec(
      resolution=s.resolution, min_objects=s.min_objects, max_objects=s.max_objects,
      object_size=tuple(s.object_size), single_object_size=tuple(s.single_object_size),
      texture_strength=s.texture_strength, colour_jitter=s.colour_jitter,
      max_occlusion=s.max_occlusion)
  sizes = (('train', s.num_train), ('validation', s.num_validation),
           ('objects', s.num_objects), ('objects_validation', s.num_objects_validation))
  return scenes_dataset.ScenesConfig(spec=spec, seed=s.seed, sizes=sizes)


def dataset_directory(config, dataset, prepare_scenes=True):
  """Directory of a prepared tfds dataset: the embedded scenes, a tfds name, or a path."""
  data_dir = os.path.expanduser(config.data.data_dir)
  if dataset == 'scenes':
    scenes_config = scenes_config_from(config)
    if prepare_scenes:
      return scenes_dataset.prepare(scenes_config, data_dir)
    return scenes_config.directory(data_dir)
  if os.path.exists(os.path.join(dataset, 'dataset_info.json')):
    return dataset
  name, _, version = dataset.partition(':')
  root = os.path.join(data_dir, *name.split('/'))
  if version:
    root = os.path.join(root, version)
  elif os.path.isdir(root):
    versions = sorted(v for v in os.listdir(root) if v[:1].isdigit())
    root = os.path.join(root, versions[-1]) if versions else root
  if not os.path.exists(os.path.join(root, 'dataset_info.json')):
    raise FileNotFoundError(
        f'dataset {dataset!r} is not prepared under data_dir={data_dir!r} (looked in {root}). '
        f'Prepare it as an array_record tfds dataset there (e.g. `tfds build {name} '
        f'--file_format=array_record --data_dir={data_dir}`), or point --config.data.data_dir '
        f'at the folder that holds it. The embedded dataset is called "scenes".')
  return root


def open_source(config, dataset, split):
  directory = dataset_directory(config, dataset)
  builder = tfds.builder_from_directory(directory)
  if split not in builder.info.splits:
    raise ValueError(f'dataset {dataset!r} has no split {split!r}; it has {sorted(builder.info.splits)}')
  return builder.as_data_source(split=split, decoders={'image': tfds.decode.SkipDecoding()})


def num_classes(config, dataset):
  """Number of object classes of a prepared dataset (None if it has no object labels)."""
  features = tfds.builder_from_directory(dataset_directory(config, dataset)).info.features
  try:
    return features['objects']['label'].num_classes
  except (KeyError, AttributeError):
    return None


@dataclasses.dataclass(frozen=True)
class Decoder:
  """Decodes one tfds record and pads its annotations; returns None when it cannot be decoded."""
  max_objects: int
  max_caption_bytes: int

  def __call__(self, record):
    try:
      with Image.open(io.BytesIO(record['image'])) as img:
        image = np.asarray(img.convert('RGB'))
    except Exception:  # pylint: disable=broad-except  # any undecodable image is skipped
      return None
    objects = record.get('objects', {})
    labels = np.asarray(objects.get('label', []), np.int64).reshape(-1)[:self.max_objects]
    bbox = np.asarray(objects.get('bbox', []), np.float32).reshape(-1, 4)[:self.max_objects]
    padded_labels = np.full((self.max_objects,), -1, np.int32)
    padded_labels[:len(labels)] = labels
    padded_boxes = np.zeros((self.max_objects, 4), np.float32)
    padded_boxes[:len(bbox)] = bbox
    caption = record.get('caption', b'')
    caption = caption.encode() if isinstance(caption, str) else bytes(caption)
    caption = np.frombuffer(caption[:self.max_caption_bytes], np.uint8)
    padded_caption = np.zeros((self.max_caption_bytes,), np.uint8)
    padded_caption[:len(caption)] = caption
    return {'image': image, 'labels': padded_labels, 'object_boxes': padded_boxes,
            'caption': padded_caption}


@dataclasses.dataclass(frozen=True)
class ViewMaker:
  """Replaces the decoded image by its views (a grain random map)."""
  views: views_lib.ViewSpec
  local_views: views_lib.ViewSpec

  def __call__(self, example, rng):
    if example is None:
      return None
    image = example.pop('image')
    out = views_lib.make_views(image, rng, self.views)
    example.update(out)
    if self.local_views.num:
      local = views_lib.make_views(image, rng, self.local_views)
      example['local_images'] = local['images']
      example['local_boxes'] = local['boxes']
    return example


class _SkipUndecodableIterator(grain.DatasetIterator):
  """Drops None elements, counts them, and remembers the process layout in its state."""

  def __init__(self, parent, process_count):
    super().__init__(parent)
    self._skipped = 0
    self._process_count = process_count

  def __next__(self):
    while True:
      element = next(self._parent)
      if element is not None:
        element['skipped_records'] = np.int32(self._skipped)
        return element
      self._skipped += 1

  def get_state(self):
    return {'parent': self._parent.get_state(), 'skipped': self._skipped,
            'process_count': self._process_count}

  def set_state(self, state):
    if state['process_count'] != self._process_count:
      raise ValueError(
          f'this data iterator state was saved with {state["process_count"]} JAX processes and '
          f'cannot be restored with {self._process_count}; resume with the same process count, '
          f'or start a new run from these weights with --config.init_from')
    self._parent.set_state(state['parent'])
    self._skipped = state['skipped']


class _SkipUndecodable(grain.IterDataset):

  def __init__(self, parent, process_count):
    super().__init__(parent)
    self._process_count = process_count

  def __iter__(self):
    return _SkipUndecodableIterator(self._parent.__iter__(), self._process_count)


def view_specs(stream_config):
  views = views_lib.ViewSpec(**_tuples(stream_config.views.to_dict()))
  local = views_lib.ViewSpec(**_tuples(stream_config.local_views.to_dict()))
  views.validate('views')
  local.validate('local_views')
  return views, local


def _tuples(d):
  return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def build_stream(source, stream_config, *, global_batch_size, seed, process_index=0,
                 process_count=1):
  """A grain IterDataset of process-local batches for one stream."""
  if global_batch_size % process_count:
    raise ValueError(f'batch size {global_batch_size} is not divisible by the {process_count} '
                     f'JAX processes')
  views, local_views = view_specs(stream_config)
  ds = grain.MapDataset.source(source)
  ds = ds[process_index::process_count]
  if len(ds) == 0:
    raise ValueError('this process got no records of the stream')
  ds = ds.seed(seed).shuffle().repeat(None)
  ds = ds.map(Decoder(stream_config.max_objects, stream_config.max_caption_bytes))
  ds = ds.random_map(ViewMaker(views, local_views))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=stream_config.num_threads,
                                            prefetch_buffer_size=stream_config.prefetch),
                          allow_nones=True)
  ds = _SkipUndecodable(ds, process_count)
  return ds.batch(global_batch_size // process_count, drop_remainder=True)


def batch_shapes(stream_config, batch_size):
  """{key: (shape, dtype)} of the device part of a stream's batch of ``batch_size`` images
  (what ``build_stream`` yields, less HOST_ONLY_KEYS): to lower a program without data."""
  v, s = stream_config.views.num, stream_config.views.size
  m = stream_config.max_objects
  shapes = {
      'images': ((batch_size, v, s, s, 3), np.uint8),
      'boxes': ((batch_size, v, 4), np.float32),
      'flips': ((batch_size, v), np.bool_),
      'moves': ((batch_size, v, v, 4), np.float32),
      'labels': ((batch_size, m), np.int32),
      'object_boxes': ((batch_size, m, 4), np.float32),
      'caption': ((batch_size, stream_config.max_caption_bytes), np.uint8),
  }
  local = stream_config.local_views
  if local.num:
    shapes['local_images'] = ((batch_size, local.num, local.size, local.size, 3), np.uint8)
    shapes['local_boxes'] = ((batch_size, local.num, 4), np.float32)
  return shapes

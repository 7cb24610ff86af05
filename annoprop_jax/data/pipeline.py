"""Grain input pipelines for the two named streams: ``annotation`` and ``bootstrap``.

Each stream: tfds array_record data source -> grain MapDataset -> shuffle (a new order every
epoch) -> decode -> pad variable-length annotations to fixed shapes -> multi-view crops with
boxes and moves -> this process's rows of each global batch -> skip and count undecodable
records -> batch. Every step of a global order is lazy, so each process decodes only its rows.
A stream yields dicts of numpy arrays holding this process's part of the global batch:

  images        (B, V, S, S, 3) uint8   views (``views`` config)
  boxes         (B, V, 4)       float32 each view's box in the original image
  flips         (B, V)          bool
  moves         (B, V, V, 4)    float32 move from view i to view j (docs/method.md, Boxes)
  local_images  (B, L, s, s, 3) uint8   optional smaller views (DINO multi-crop), with local_boxes
  labels        (B, M)          int32   object class labels, -1 = padding
  object_boxes  (B, M, 4)       float32 object boxes, zeros for padding
  caption       (B, C)          uint8   caption bytes, zero padded
  skipped_records (B,)          int32   records this process skipped as undecodable so far
"""
import dataclasses
import functools
import io
import json
import os
import zlib

import grain
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from annoprop_jax import errors
from annoprop_jax import storage
from annoprop_jax.data import feature_map
from annoprop_jax.data import scenes
from annoprop_jax.data import scenes_dataset
from annoprop_jax.data import stream_spec
from annoprop_jax.data import views as views_lib
from annoprop_jax.data import worker_processes

HOST_ONLY_KEYS = ('skipped_records',)


def device_part(stream_batch):
  """A stream's batch less its host-only counters: what the train step reads."""
  return {k: v for k, v in stream_batch.items() if k not in HOST_ONLY_KEYS}


def data_fingerprint(stream_batch):
  """A cheap checksum of a stream's batch (strided pixels), to compare data order across runs."""
  return zlib.crc32(np.ascontiguousarray(stream_batch['images'][..., ::4, ::4, :]))


def stream_metrics(batches):
  """What the host knows of each stream's batch: records skipped so far, a data fingerprint."""
  metrics = {}
  for name, batch in batches.items():
    metrics[f'{name}_skipped_records'] = int(np.max(batch['skipped_records']))
    metrics[f'{name}_data_fingerprint'] = data_fingerprint(batch)
  return metrics


def scenes_config_from(data_config):
  """The ScenesConfig described by the ``data.scenes`` config block."""
  s = data_config.scenes
  spec = scenes.SceneSpec(
      resolution=s.resolution, min_objects=s.min_objects, max_objects=s.max_objects,
      object_size=tuple(s.object_size), single_object_size=tuple(s.single_object_size),
      texture_strength=s.texture_strength, colour_jitter=s.colour_jitter,
      max_occlusion=s.max_occlusion)
  sizes = (('train', s.num_train), ('validation', s.num_validation),
           ('objects', s.num_objects), ('objects_validation', s.num_objects_validation))
  return scenes_dataset.ScenesConfig(spec=spec, seed=s.seed, sizes=sizes)


def dataset_directory(data_config, dataset, prepare_scenes=True):
  """Directory of a prepared tfds dataset: the embedded scenes, a tfds name, or a path (local
  or ``gs://``, as ``data_dir`` may be)."""
  data_dir = storage.path(data_config.data_dir)
  if dataset == 'scenes':
    scenes_config = scenes_config_from(data_config)
    if prepare_scenes:
      return scenes_dataset.prepare(scenes_config, data_dir)
    return scenes_config.directory(data_dir)
  given = storage.path(dataset)          # a dataset named by its folder
  if (given / 'dataset_info.json').exists():
    return given
  name, _, version = dataset.partition(':')
  root = data_dir.joinpath(*name.split('/'))
  if version:
    root = root / version
  elif root.is_dir():
    versions = sorted(v.name for v in root.iterdir() if v.name[:1].isdigit())
    root = root / versions[-1] if versions else root
  if not (root / 'dataset_info.json').exists():
    raise FileNotFoundError(
        f'dataset {dataset!r} is not prepared under data_dir={str(data_dir)!r} (looked in {root}). '
        f'Prepare it as an array_record tfds dataset there (e.g. `tfds build {name} '
        f'--file_format=array_record --data_dir={data_dir}`), or point --config.data.data_dir '
        f'at the folder that holds it. The embedded dataset is called "scenes".')
  return root


def open_source(data_config, dataset, split):
  """The records of ``split`` of ``dataset`` (see ``dataset_directory``), images undecoded."""
  directory = dataset_directory(data_config, dataset)
  builder = tfds.builder_from_directory(directory)
  if split.partition('[')[0] not in builder.info.splits:      # 'train' or 'train[:80%]'
    raise errors.ConfigError(f'dataset {dataset!r} has no split {split!r}; it has '
                             f'{sorted(builder.info.splits)}')
  # Images stay encoded (the Decoder decodes them); other features as tfds decodes them.
  skip = {key: tfds.decode.SkipDecoding() for key, feature in builder.info.features.items()
          if isinstance(feature, tfds.features.Image)}
  return builder.as_data_source(split=split, decoders=skip)


class StreamInfo:
  """What one stream reads, as its prepared dataset describes itself (dataset_info.json and
  features): for the resume check and a method's ``check_data``."""

  def __init__(self, data_config, stream_config):
    self._data_config = data_config
    self.dataset, self.split = stream_config.dataset, stream_config.split
    self._labels = dict(stream_config.features.items()).get('labels', 'objects/label')
    info = json.loads((dataset_directory(data_config, self.dataset)
                       / 'dataset_info.json').read_text())
    split = next((s for s in info.get('splits', ()) if s['name'] == self.split), {})
    self.records = sum(int(n) for n in split.get('shardLengths', ()))
    self.identity = (f'{info.get("name")} {info.get("version")} {self.split}: {self.records} '
                     f'records, {split.get("numBytes")} bytes')

  @functools.cached_property
  def num_classes(self):
    """The class count of the labels feature the stream reads (None if it declares none)."""
    return num_classes(self._data_config, self.dataset, self._labels)


def streams_info(data_config, names):
  """{name: StreamInfo} of the streams ``names``."""
  return {name: StreamInfo(data_config, data_config[name]) for name in names}


def dataset_identity(infos):
  """{'data.<stream>.records': 'NAME VERSION SPLIT: N records, B bytes'} of ``streams_info``:
  what tells a resumed run whether its streams read the data its checkpoint's iterator
  positions point into (a re-prepared dataset with other records has other counts or bytes)."""
  return {f'data.{name}.records': info.identity for name, info in infos.items()}


def num_classes(data_config, dataset, labels_feature=None):
  """Number of classes of the labels feature of a prepared dataset (None if it has none).

  ``labels_feature`` defaults to ``features.labels`` of the annotation stream when that stream
  reads ``dataset``, else ``objects/label``.
  """
  if labels_feature is None:
    annotation = data_config.get('annotation')
    mapping = dict(annotation.get('features', {}) or {}) if annotation else {}
    labels_feature = (mapping.get('labels', 'objects/label')
                      if annotation and annotation.dataset == dataset else 'objects/label')
  if not labels_feature:
    return None
  features = tfds.builder_from_directory(dataset_directory(data_config, dataset)).info.features
  return getattr(feature_map.leaf_feature(features, labels_feature), 'num_classes', None)


def class_names(data_config, dataset, labels_feature):
  """The class names of the labels feature of a prepared dataset (its ClassLabel's names; None
  if it declares none, or only numbers: names 0, 1, ...)."""
  features = tfds.builder_from_directory(dataset_directory(data_config, dataset)).info.features
  names = getattr(feature_map.leaf_feature(features, labels_feature), 'names', None)
  if not names or all(name == str(i) for i, name in enumerate(names)):
    return None
  return list(names)


def decode_image(value, resize=0):
  """RGB uint8 (H, W, 3) of encoded image bytes, scaled so that the shorter side is ``resize``
  pixels (0: as stored); None when the bytes do not decode."""
  try:
    with Image.open(io.BytesIO(value)) as img:
      if resize:
        scale = resize / min(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img.draft('RGB', size)   # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is enough
        return np.asarray(img.convert('RGB').resize(size, Image.BILINEAR))
      return np.asarray(img.convert('RGB'))
  except Exception:  # pylint: disable=broad-except  # any undecodable image is skipped
    return None


@dataclasses.dataclass(frozen=True)
class Decoder:
  """Decodes one tfds record and pads its annotations; returns None when it cannot be decoded.

  ``features`` maps the fields image, boxes, labels, caption to the record's feature paths
  (see ``feature_map``); a list of captions gives its first one, or with ``caption_choice=
  'random'`` a random one (called as a grain random map with ``rng``).
  """
  max_objects: int
  max_caption_bytes: int
  features: tuple = feature_map.DEFAULT
  caption_choice: str = 'first'
  resize: int = 0
  with_image: bool = True   # False: annotations only ('image' is None)

  def __call__(self, record, rng=None):
    paths = dict(self.features)
    image = None
    if self.with_image:
      image = decode_image(feature_map.lookup(record, paths['image'], b''), self.resize)
      if image is None:
        return None
    labels = feature_map.as_labels(feature_map.lookup(record, paths['labels']))
    labels = labels[:self.max_objects]
    bbox = feature_map.as_boxes(feature_map.lookup(record, paths['boxes']))[:self.max_objects]
    padded_labels = np.full((self.max_objects,), -1, np.int32)
    padded_labels[:len(labels)] = labels
    padded_boxes = np.zeros((self.max_objects, 4), np.float32)
    padded_boxes[:len(bbox)] = bbox
    caption = feature_map.as_caption(feature_map.lookup(record, paths['caption']),
                                     self.caption_choice, rng)
    caption = np.frombuffer(caption[:self.max_caption_bytes], np.uint8)
    padded_caption = np.zeros((self.max_caption_bytes,), np.uint8)
    padded_caption[:len(caption)] = caption
    return {'image': image, 'labels': padded_labels, 'object_boxes': padded_boxes,
            'caption': padded_caption}


@dataclasses.dataclass(frozen=True)
class ViewMaker:
  """Replaces the decoded image by its views (a grain random map)."""
  views: stream_spec.ViewSpec
  local_views: stream_spec.ViewSpec

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
  """Drops None elements, counts them, stops when too many of them come (a feature mapped to
  a non-image, a broken shard), and remembers the process layout in its state."""

  def __init__(self, parent, process_count, num_workers=0, limits=None):
    super().__init__(parent)
    self._skipped = self._read = self._run = 0
    self._process_count = process_count
    self._num_workers = num_workers
    self._limits = dict(stream_spec.UNDECODABLE_LIMITS, **(limits or {}))

  def __next__(self):
    while True:
      element = next(self._parent)
      self._read += 1
      if element is not None:
        self._run = 0
        element['skipped_records'] = np.int32(self._skipped)
        return element
      self._skipped += 1
      self._run += 1
      self._check()

  def _check(self):
    run, fraction = self._limits['max_undecodable_run'], self._limits['max_undecodable_fraction']
    if self._run > run or (self._read >= 1000 and self._skipped > fraction * self._read):
      raise errors.DataError(
          f'{self._skipped} of {self._read} records did not decode ({self._run} in a row; '
          f'limits: max_undecodable_run={run}, max_undecodable_fraction={fraction}): is '
          f'features.image the image feature, and are the files intact?')

  def get_state(self):
    return {'parent': self._parent.get_state(), 'skipped': self._skipped, 'read': self._read,
            'process_count': self._process_count, 'num_workers': self._num_workers}

  def set_state(self, state):
    worker_processes.check_layout(state, self._num_workers, self._process_count)
    self._parent.set_state(state['parent'])
    self._skipped, self._read, self._run = state['skipped'], state.get('read', 0), 0


class _SkipUndecodable(grain.IterDataset):

  def __init__(self, parent, process_count, num_workers=0, limits=None):
    super().__init__(parent)
    self._process_count = process_count
    self._num_workers = num_workers
    self._limits = dict(stream_spec.UNDECODABLE_LIMITS, **(limits or {}))

  def __iter__(self):
    return _SkipUndecodableIterator(self._parent.__iter__(), self._process_count,
                                    self._num_workers, self._limits)


class _ProcessRows(grain.MapDataset):
  """Process ``index``'s rows of every global batch of the global element order.

  Local element ``i`` is global element ``(i // rows * count + index) * rows + i % rows``, so
  the global batch that ``count`` processes assemble (``rows`` each, in process order) is the
  batch one process reads, and the same record gets the same views whatever the process count.
  """

  def __init__(self, parent, index, count, rows):
    super().__init__(parent)
    self._index, self._count, self._rows = index, count, rows

  def __len__(self):
    return len(self._parent)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return self.slice(i)
    return self._parent[(i // self._rows * self._count + self._index) * self._rows
                        + i % self._rows]


def host_cores():
  """Cores this process may use: its CPU affinity (a SLURM binding, a container's cpuset), and
  at most SLURM_CPUS_PER_TASK where that is set."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  per_task = os.environ.get('SLURM_CPUS_PER_TASK', '')
  return min(cores, int(per_task)) if per_task.isdigit() else cores


def image_cost(stream_config):
  """Host work for one image of a stream, in 224 px plain views: decoding (about one) plus each
  view's pixels, doubled for a view with colour jitter (one core makes ~2,000 plain and ~1,000
  jittered 224 px views/s, benchmarks/RESULTS.md)."""
  cost = 1.0
  for spec in (stream_config.views, stream_config.local_views):
    jitter = spec.colour_jitter or spec.hue_jitter or spec.grayscale
    cost += spec.num * (spec.size / 224) ** 2 * (2.0 if jitter else 1.0)
  return cost


def reading_plan(data_config, names, cores=None, saved_workers=None):
  """{name: (worker processes, read threads)} of the streams ``names``.

  A stream's explicit ``num_workers`` / ``num_threads`` stand. ``AUTO`` (-1) sizes them for this
  host: of its ``cores`` (default ``host_cores()``), two stay with the training process (its
  loop and the batches' transfer), the other streams' workers keep theirs, and the rest become
  worker processes, shared between the auto streams in proportion to their work per step
  (``batch_size`` x ``image_cost``), at least one each, with 2 read threads apiece (reads
  overlap decoding). Even on 2 cores one worker per stream beats decoding in the training
  process (224 px views from 480 px JPEGs, both streams of the paper's AB_DINO: 2,276-2,718
  against 1,602-1,793 views/s, benchmarks/RESULTS.md), whose threads share one interpreter
  lock. ``saved_workers`` ({name: count}: what a resumed run's data iterators were saved with)
  decides an AUTO stream's count: an iterator state restores only with its own.
  """
  cores = cores or host_cores()
  saved_workers = saved_workers or {}
  auto_workers = [n for n in names if data_config[n].num_workers == stream_spec.AUTO]
  auto = [n for n in auto_workers if n not in saved_workers]
  workers = {n: saved_workers[n] if n in auto_workers and n in saved_workers
             else data_config[n].num_workers for n in names}
  spare = max(len(auto), cores - 2 - sum(w for n, w in workers.items() if n not in auto))
  if auto:
    work = {n: data_config[n].batch_size * image_cost(data_config[n]) for n in auto}
    exact = {n: spare * w / sum(work.values()) for n, w in work.items()}
    share = {n: int(x) for n, x in exact.items()}
    for n in sorted(auto, key=lambda n: share[n] - exact[n])[:spare - sum(share.values())]:
      share[n] += 1                                         # the largest remainders
    for n in auto:                                          # at least one each
      if not share[n]:
        share[n] = 1
        share[max(share, key=share.get)] -= 1
    workers.update(share)
  plan = {}
  for n in names:
    threads = data_config[n].num_threads
    if threads == stream_spec.AUTO:
      threads = 2 if workers[n] else max(1, cores)      # in-process: a thread per core
    plan[n] = (workers[n], threads)
  return plan


def build_streams(data_config, names, seed, process_index=0, process_count=1, reading=None):
  """{name: IterDataset} of the streams ``names`` (an objective's ``streams``), each from its
  ``data.<name>`` block (dataset, split, batch_size) and read as ``reading`` says ({name:
  (workers, threads)}, default ``reading_plan``); the i-th is seeded ``seed * 1000 + i``."""
  reading = reading or reading_plan(data_config, names)
  return {name: build_stream(
      open_source(data_config, data_config[name].dataset, data_config[name].split),
      data_config[name], seed=seed * 1000 + i, process_index=process_index,
      process_count=process_count, reading=reading[name]) for i, name in enumerate(names)}


def build_stream(source, stream_config, *, seed, global_batch_size=None, process_index=0,
                 process_count=1, reading=None):
  """A grain IterDataset of process-local batches for one stream (a ``data.<stream>`` block);
  the global batch size is the stream's ``batch_size`` unless given, the (workers, threads) of
  ``reading`` its ``num_workers`` and ``num_threads`` unless given (AUTO: ``reading_plan``)."""
  spec = stream_spec.StreamSpec.from_config(stream_config)
  global_batch_size = global_batch_size or spec.batch_size
  if reading is None:
    reading = reading_plan({'stream': stream_config}, ('stream',))['stream']
  num_workers, num_threads = reading
  decoder = make_decoder(spec)
  feature_map.check(dict(decoder.features), feature_map.source_paths(source), spec.dataset)
  if global_batch_size % process_count:
    raise ValueError(f'batch size {global_batch_size} is not divisible by the {process_count} '
                     f'JAX processes')
  ds = grain.MapDataset.source(source)
  if len(ds) < process_count:
    raise errors.ConfigError(f'dataset {spec.dataset!r} split {spec.split!r} has {len(ds)} '
                             f'records, fewer than the {process_count} JAX processes that read '
                             f'it')
  ds = ds.seed(seed).shuffle().repeat(None)
  ds = ds.map(decoder) if decoder.caption_choice == 'first' else ds.random_map(decoder)
  ds = ds.random_map(ViewMaker(spec.views, spec.local_views))
  # Lazy: this process decodes only its rows, with the views the global order gives them.
  ds = _ProcessRows(ds, process_index, process_count, global_batch_size // process_count)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                            prefetch_buffer_size=spec.prefetch),
                          allow_nones=True)
  ds = _SkipUndecodable(ds, process_count, num_workers, dict(
      max_undecodable_run=spec.max_undecodable_run,
      max_undecodable_fraction=spec.max_undecodable_fraction))
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  return worker_processes.in_workers(ds, num_workers, process_count)


def make_decoder(spec):
  """The Decoder of a ``StreamSpec`` (``features``, ``caption_choice``, ``resize``)."""
  return Decoder(spec.max_objects, spec.max_caption_bytes, features=spec.features,
                 caption_choice=spec.caption_choice, resize=spec.resize)


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


def zeros_batch(stream_config, batch_size=1):
  """A batch of zeros with ``batch_shapes``: what init needs (shapes only), without data."""
  return {k: np.zeros(shape, dtype)
          for k, (shape, dtype) in batch_shapes(stream_config, batch_size).items()}

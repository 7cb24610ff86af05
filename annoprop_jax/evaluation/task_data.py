"""Labelled images of a task (``tasks.TASKS``) read from a prepared dataset, with their targets,
at the encoder's resolution: resized whole (``preprocess='resize'``, the scenes tasks), or the
standard evaluation crop (``'centre_crop'``: the shorter side resized to size / 0.875 bicubic,
then the central size x size, as published ImageNet probes read images).
"""
import dataclasses

import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
from PIL import Image

from annoprop_jax.data import feature_map
from annoprop_jax.data import pipeline
from annoprop_jax.data import worker_processes
from annoprop_jax.evaluation import tasks as tasks_lib


@dataclasses.dataclass
class LabelledImages:
  images: np.ndarray       # (N, S, S, 3) uint8, or StreamedImages (sliced like it)
  targets: np.ndarray      # (N,) int32 for 'class', (N, C) float32 for 'multilabel'; per
                           # object (M,) for 'box_label'
  num_classes: int
  boxes: np.ndarray = None         # 'box_label': (M, 4) object boxes ...
  image_index: np.ndarray = None   # ... and (M,) the image each object is in
  captions: np.ndarray = None      # with captions=True: (N, C) uint8 caption bytes, zero-padded


CROP_FRACTION = 0.875


def centre_crop(image, size, crop_fraction=CROP_FRACTION):
  """(H, W, 3) uint8 -> (size, size, 3): the shorter side resized to round(size /
  crop_fraction) (bicubic), then the centre cut out."""
  h, w = image.shape[:2]
  short = round(size / crop_fraction)
  scale = short / min(h, w)
  resized = Image.fromarray(image).resize((max(short, round(w * scale)),
                                           max(short, round(h * scale))), Image.BICUBIC)
  top, left = (resized.height - size) // 2, (resized.width - size) // 2
  return np.asarray(resized.crop((left, top, left + size, top + size)))


def _resize(image, size, preprocess):
  if preprocess == 'centre_crop':
    return centre_crop(image, size)
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


@dataclasses.dataclass(frozen=True)
class StreamedImages:
  """A split's images read from the dataset when sliced (``images[a:b]``) or batched
  (``local_batches``), not held: what ``load`` gives for a split of more than
  ``images_in_memory`` images. It holds the record indices only; each read decodes and resizes
  its records again. A record whose image does not decode is a ValueError naming it."""
  source: object
  indices: np.ndarray           # the records, in order
  image_feature: str            # the records' image feature (``feature_map`` path)
  size: int
  preprocess: str

  def __len__(self):
    return len(self.indices)

  def _image(self, row):
    record = int(self.indices[row])
    image = pipeline.decode_image(feature_map.lookup(self.source[record], self.image_feature,
                                                     b''))
    if image is None:
      raise ValueError(f'record {record} of the split does not decode as an image')
    return _resize(image, self.size, self.preprocess)

  def __getitem__(self, rows):
    if not isinstance(rows, slice):
      raise TypeError('StreamedImages are read in slices (images[a:b])')
    return np.stack([self._image(row) for row in range(len(self))[rows]])

  @property
  def shape(self):
    return (len(self), self.size, self.size, 3)

  def local_batches(self, batch_size, part=0, parts=1, num_threads=1, num_workers=0):
    """Yields this process's rows of each global batch of ``batch_size`` images (part ``part``
    of ``parts``, ``sharding.batch_part``: (batch_size // parts, S, S, 3), the last zero-padded),
    decoded by grain: ``num_threads`` batches at a time in threads, in ``num_workers`` worker
    processes (0: this one), in order."""
    batches = grain.MapDataset.range(-(-len(self) // batch_size)).map(
        _LocalBatch(self, batch_size, part, parts))
    batches = batches.to_iter_dataset(grain.ReadOptions(
        num_threads=max(1, num_threads), prefetch_buffer_size=max(1, num_threads)))
    return iter(worker_processes.prefetch(batches, num_workers))


@dataclasses.dataclass(frozen=True)
class _LocalBatch:
  """Batch ``b`` -> this process's rows of global rows [b * batch_size, (b + 1) * batch_size),
  zero rows past the split's end (a grain map, picklable for worker processes)."""
  images: object
  batch_size: int
  part: int
  parts: int

  def __call__(self, b):
    rows = self.batch_size // self.parts
    start = b * self.batch_size + self.part * rows
    out = np.zeros((rows, self.images.size, self.images.size, 3), np.uint8)
    for i in range(start, min(start + rows, len(self.images))):
      out[i - start] = self.images._image(i)  # pylint: disable=protected-access
    return out


def balanced_indices(labels, limit, seed=0):
  """``limit`` indices of ``labels`` (N,) with the classes as even as they allow: a seeded random
  order within each class, taken round-robin over the classes; sorted."""
  rng = np.random.default_rng(seed)
  by_class = [rng.permutation(np.nonzero(labels == c)[0]) for c in np.unique(labels)]
  picked = [members[rank] for rank in range(max(map(len, by_class)))
            for members in by_class if rank < len(members)]
  return np.sort(picked[:limit])


def record_indices(num_records, task, limit, held_out=0, part='fit', first_labels=None):
  """The records of a split that one part reads. ``held_out`` > 0 carves a validation part out
  of the split: its last ``held_out`` records (a class-balanced subset for a ``balanced`` task,
  whose records are class-sorted), which part='fit' never reads and part='held_out' reads.
  part='fit' reads ``limit`` of the rest (all when 0): the first ones, or a class-balanced
  subset. ``first_labels`` (N,): each record's first label (-1: none), for a balanced task."""
  everything = np.arange(num_records)
  held = np.array([], np.int64)
  if held_out:
    if held_out >= num_records:
      raise ValueError(f'a validation part of {held_out} records leaves none of the '
                       f'{num_records} of the split to train the probes on')
    held = (balanced_indices(first_labels, held_out, seed=1) if task.balanced
            else everything[-held_out:])
  if part == 'held_out':
    return held
  pool = np.setdiff1d(everything, held)
  if not limit or limit >= len(pool):
    return pool
  if task.balanced:
    return pool[balanced_indices(first_labels[pool], limit)]
  return pool[:limit]


def _read_rows(indices, read, empty, share):
  """({key: (len(indices), ...) array} of ``read(i)`` of each record, a dict shaped like
  ``empty``; (len(indices),) bool: read (False: ``read`` gave None, undecodable). With
  ``share`` and several JAX processes each process reads every process_count-th record and the
  results are gathered, so each record is read once on the pod."""
  count, index = (jax.process_count(), jax.process_index()) if share else (1, 0)
  per_process = -(-len(indices) // count)
  arrays = {key: np.zeros((per_process,) + np.shape(value), np.asarray(value).dtype)
            for key, value in empty.items()}
  present = np.zeros(per_process, bool)
  for k, i in enumerate(indices[index::count]):
    row = read(i)
    if row is not None:
      present[k] = True
      for key, value in row.items():
        arrays[key][k] = value
  if count > 1:
    arrays, present = jax.tree.map(np.asarray,
                                   multihost_utils.process_allgather((arrays, present)))
    # Record j was read by process j % count, as its (j // count)-th.
    in_order = lambda a: a.swapaxes(0, 1).reshape((-1,) + a.shape[2:])[:len(indices)]
    arrays, present = jax.tree.map(in_order, arrays), in_order(present)
  return arrays, present


def load(data_config, dataset, task, split, size, limit, held_out=0, part='fit',
         captions=False, preprocess='resize', images_in_memory=0):
  """``limit`` images of ``split`` (``record_indices``: all when 0; the first ones, or a
  class-balanced subset for a ``balanced`` task; with ``held_out``, the split's fit or
  validation part), at ``size`` px (``preprocess``), with targets; with ``captions``, also
  their first captions (``data.annotation.max_caption_bytes`` of them). More than
  ``images_in_memory`` images (0: no limit) come as ``StreamedImages``, read again when
  sliced, so the host holds their targets and at most a slice of images (an undecodable
  image is then a ValueError when read, where a held split skips it)."""
  source = pipeline.open_source(data_config, dataset, split)
  max_objects = task.max_objects
  features = dict(feature_map.DEFAULT, labels=task.labels)
  decoder = pipeline.Decoder(
      max_objects=max_objects, features=tuple(features.items()),
      max_caption_bytes=data_config.annotation.max_caption_bytes if captions else 1)
  first_labels = None
  if task.balanced and (held_out or limit and limit < len(source)):
    def first_label(i):
      first = feature_map.as_labels(feature_map.lookup(source[int(i)], task.labels))[:1]
      return {'label': first[0] if len(first) else -1}
    first_labels = _read_rows(np.arange(len(source)), first_label,
                              {'label': np.int32(0)}, share=True)[0]['label']
  indices = record_indices(len(source), task, limit, held_out, part, first_labels)
  streamed = bool(images_in_memory) and len(indices) > images_in_memory
  annotations = dataclasses.replace(decoder, with_image=False) if streamed else decoder

  def read(i):
    """Record ``i``'s annotations, and its image unless streamed; None: undecodable."""
    record = source[int(i)]
    example = annotations(record)
    if example is None:
      return None
    row = dict(labels=example['labels'], boxes=example['object_boxes'],
               caption=example['caption'])
    if task.target == 'closest_distance':
      depths = feature_map.lookup(record, tasks_lib.DEPTHS)
      if depths is None:
        raise ValueError(f'task {task.name}: dataset {dataset!r} has no {tasks_lib.DEPTHS} '
                         f'feature (Clevr\'s object coordinates)')
      row['distance'] = tasks_lib.closest_distance(depths)
    if not streamed:
      row['image'] = _resize(example['image'], size, preprocess)
    return row

  empty = dict(labels=np.zeros(max_objects, np.int32),
               boxes=np.zeros((max_objects, 4), np.float32),
               caption=np.zeros(decoder.max_caption_bytes, np.uint8), distance=np.int32(0))
  if not streamed:
    empty['image'] = np.zeros((size, size, 3), np.uint8)
  # Every process decodes a held split's images (each holds them all); a streamed split's
  # annotations are read by each process for its share of the records and gathered, its images
  # decoded when they are encoded.
  arrays, present = _read_rows(indices, read, empty, share=streamed)
  if not present.all():        # undecodable records: skipped, as in training
    arrays = {key: value[present] for key, value in arrays.items()}
  kept, labels = indices[present], arrays['labels']
  num_labels = pipeline.num_classes(data_config, dataset, task.labels)
  if num_labels is None:
    raise ValueError(f'dataset {dataset!r} has no {task.labels} class feature for task '
                     f'{task.name}')
  images = (StreamedImages(source, np.asarray(kept), features['image'], size, preprocess)
            if streamed else arrays['image'])
  if task.target == 'box_label':
    image_index, slot = np.nonzero(labels >= 0)
    return LabelledImages(images, labels[image_index, slot].astype(np.int32),
                          num_labels, boxes=arrays['boxes'][image_index, slot],
                          image_index=image_index)
  return LabelledImages(images, tasks_lib.targets(task, labels, num_labels, max_objects,
                                                 arrays['distance']),
                        tasks_lib.num_targets(task, num_labels, max_objects),
                        captions=arrays['caption'] if captions else None)

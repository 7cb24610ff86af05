"""Labelled images of a task (``tasks.TASKS``) read from a prepared dataset, resized whole to the
encoder's resolution (no crop), with their targets.
"""
import dataclasses

import numpy as np
from PIL import Image

from annoprop_jax.data import feature_map
from annoprop_jax.data import pipeline
from annoprop_jax.evaluation import tasks as tasks_lib


@dataclasses.dataclass
class LabelledImages:
  images: np.ndarray       # (N, S, S, 3) uint8
  targets: np.ndarray      # (N,) int32 for 'class', (N, C) float32 for 'multilabel'; per
                           # object (M,) for 'box_label'
  num_classes: int
  boxes: np.ndarray = None         # 'box_label': (M, 4) object boxes ...
  image_index: np.ndarray = None   # ... and (M,) the image each object is in


def balanced_indices(labels, limit, seed=0):
  """``limit`` indices of ``labels`` (N,) with the classes as even as they allow: a seeded random
  order within each class, taken round-robin over the classes; sorted."""
  rng = np.random.default_rng(seed)
  by_class = [rng.permutation(np.nonzero(labels == c)[0]) for c in np.unique(labels)]
  picked = [members[rank] for rank in range(max(map(len, by_class)))
            for members in by_class if rank < len(members)]
  return np.sort(picked[:limit])


def load(data_config, dataset, task, split, size, limit, max_objects=8):
  """``limit`` images of ``split`` (all when 0; the first ones, or a class-balanced subset for a
  ``balanced`` task), resized to ``size`` px, with targets."""
  source = pipeline.open_source(data_config, dataset, split)
  features = dict(feature_map.DEFAULT, labels=task.labels)
  decoder = pipeline.Decoder(max_objects=max_objects, max_caption_bytes=1,
                             features=tuple(features.items()))
  indices = range(len(source) if not limit else min(limit, len(source)))
  if limit and task.balanced and limit < len(source):
    first = [feature_map.as_labels(feature_map.lookup(source[i], task.labels))[:1]
             for i in range(len(source))]
    indices = balanced_indices(np.array([f[0] if len(f) else -1 for f in first]), limit)
  images, labels, boxes = [], [], []
  for i in indices:
    record = source[i]
    example = decoder(record)
    if example is None:
      continue        # undecodable: skipped, as in training
    image = Image.fromarray(example['image']).resize((size, size), Image.BILINEAR)
    images.append(np.asarray(image))
    labels.append(example['labels'])
    boxes.append(example['object_boxes'])
  num_labels = pipeline.num_classes(data_config, dataset, task.labels)
  if num_labels is None:
    raise ValueError(f'dataset {dataset!r} has no {task.labels} class feature for task '
                     f'{task.name}')
  labels = np.stack(labels)
  if task.target == 'box_label':
    image_index, slot = np.nonzero(labels >= 0)
    return LabelledImages(np.stack(images), labels[image_index, slot].astype(np.int32),
                          num_labels, boxes=np.stack(boxes)[image_index, slot],
                          image_index=image_index)
  return LabelledImages(np.stack(images), tasks_lib.targets(task, labels, num_labels, max_objects),
                        tasks_lib.num_targets(task, num_labels, max_objects))

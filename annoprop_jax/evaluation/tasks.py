"""Downstream tasks: labelled images read from a prepared dataset, resized whole to the encoder's
resolution (no crop), with the target each task asks for.

  objects   the class of the one object of the ``objects`` split (accuracy)
  presence  which of the classes appear in a scene (multi-label: mean average precision)
  count     how many objects a scene holds (classes 0..max, accuracy; like Clevr count)
  boxes     the class of each object of a scene, given its box (accuracy; box_probes.py): one
            row per object, its box and the index of its image
  classes   the image-level class of a prepared ImageFolder-style dataset (``labels`` feature,
            ``train`` -> ``validation``; accuracy): ImageNet-style probe splits. A limited
            number of examples is a class-balanced random subset (the records are class-sorted)
"""
import dataclasses

import numpy as np
from PIL import Image

from annoprop_jax.data import feature_map
from annoprop_jax.data import pipeline


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  train_split: str
  test_split: str
  target: str          # 'first_label', 'presence', 'count' or 'box_label'
  kind: str            # 'class' or 'multilabel' (how probes train and score)
  labels: str = 'objects/label'   # the dataset feature the targets come from
  balanced: bool = False          # a limited count draws a class-balanced subset, not the first


TASKS = {
    'objects': Task('objects', 'objects', 'objects_validation', 'first_label', 'class'),
    'presence': Task('presence', 'train', 'validation', 'presence', 'multilabel'),
    'count': Task('count', 'train', 'validation', 'count', 'class'),
    'boxes': Task('boxes', 'train', 'validation', 'box_label', 'class'),
    'classes': Task('classes', 'train', 'validation', 'first_label', 'class', labels='labels',
                    balanced=True),
}


@dataclasses.dataclass
class LabelledImages:
  images: np.ndarray       # (N, S, S, 3) uint8
  targets: np.ndarray      # (N,) int32 for 'class', (N, C) float32 for 'multilabel'; per
                           # object (M,) for 'box_label'
  num_classes: int
  boxes: np.ndarray = None         # 'box_label': (M, 4) object boxes ...
  image_index: np.ndarray = None   # ... and (M,) the image each object is in


def num_targets(task, num_labels, max_objects):
  """Classes a probe predicts: the label classes, or the counts 0..max_objects."""
  return max_objects + 1 if task.target == 'count' else num_labels


def targets(task, labels, num_labels, max_objects):
  """Per-example targets from the padded label rows (-1 = no object)."""
  present = labels >= 0
  if task.target == 'first_label':
    if not present[:, 0].all():
      raise ValueError(f'task {task.name}: some images of the split have no object label')
    return labels[:, 0].astype(np.int32)
  if task.target == 'count':
    return np.minimum(present.sum(axis=1), max_objects).astype(np.int32)
  if task.target == 'presence':
    multi_hot = np.zeros((len(labels), num_labels), np.float32)
    rows, cols = np.nonzero(present)
    multi_hot[rows, labels[rows, cols]] = 1.0
    return multi_hot
  raise ValueError(f'unknown task target {task.target!r}')


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
  return LabelledImages(np.stack(images), targets(task, labels, num_labels, max_objects),
                        num_targets(task, num_labels, max_objects))

"""Downstream tasks: which split and labels each reads, and the target it asks for (the images
are read by ``task_data.load``).

  objects   the class of the one object of the ``objects`` split (accuracy)
  presence  which of the classes appear in a scene (multi-label: mean average precision)
  count     how many objects a scene holds (classes 0..max, accuracy; like Clevr count)
  boxes     the class of each object of a scene, given its box (accuracy; box_probes.py): one
            row per object, its box and the index of its image
  classes   the image-level class of a prepared ImageFolder-style dataset (``labels`` feature,
            ``train`` -> ``validation``; accuracy): ImageNet-style probe splits. A limited
            number of examples is a class-balanced random subset (the records are class-sorted)
  distance  Clevr's distance to the closest object (its depth, ``objects/pixel_coords``' third
            coordinate, in 6 bins at 8, 8.5, 9, 9.5 and 10, as big_vision's Clevr task;
            accuracy)

The paper's downstream datasets by their tfds names (``CATALOGUE``: ``food101:classes`` reads
food101's ``label`` feature, ``train`` -> ``validation``), and ``PAPER_SUITE``, which the entry
``paper`` of ``evaluation.tasks`` stands for.
"""
import dataclasses
import re

import numpy as np


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  train_split: str
  test_split: str
  target: str          # 'first_label', 'presence', 'count' or 'box_label'
  kind: str            # 'class' or 'multilabel' (how probes train and score)
  labels: str = 'objects/label'   # the dataset feature the targets come from
  balanced: bool = False          # a limited count draws a class-balanced subset, not the first
  max_objects: int = 8            # objects read an image (count: the classes are 0..this)


TASKS = {
    'objects': Task('objects', 'objects', 'objects_validation', 'first_label', 'class'),
    'presence': Task('presence', 'train', 'validation', 'presence', 'multilabel'),
    'count': Task('count', 'train', 'validation', 'count', 'class'),
    'boxes': Task('boxes', 'train', 'validation', 'box_label', 'class'),
    'classes': Task('classes', 'train', 'validation', 'first_label', 'class', labels='labels',
                    balanced=True),
    'distance': Task('distance', 'train', 'validation', 'closest_distance', 'class',
                     labels='objects/shape', max_objects=10),
}
DISTANCE_BINS = (8.0, 8.5, 9.0, 9.5, 10.0)     # Clevr's closest-object depth -> 6 classes
DEPTHS = 'objects/pixel_coords'

# The paper's downstream datasets, as ``tfds build NAME --file_format=array_record`` writes them:
# (tfds name, task) -> what differs from ``TASKS[task]``. An entry's dataset (a name, NAME:VERSION
# or a folder) takes these when one of its path parts is the tfds name.
CATALOGUE = {
    ('imagenet2012', 'classes'): dict(labels='label'),
    ('food101', 'classes'): dict(labels='label'),
    ('oxford_iiit_pet', 'classes'): dict(labels='label', test_split='test'),
    ('resisc45', 'classes'): dict(labels='label', train_split='train[:80%]',   # one split only
                                  test_split='train[80%:]'),
    ('sun397', 'classes'): dict(labels='label', test_split='test'),   # sun397/standard-part1-120k
    ('clevr', 'count'): dict(labels='objects/shape', max_objects=10),  # 3 to 10 objects
    ('clevr', 'distance'): {},
    ('coco', 'boxes'): {},                                              # coco/2017
}
PAPER_SUITE = ('imagenet2012:classes', 'food101:classes', 'oxford_iiit_pet:classes',
               'resisc45:classes', 'sun397/standard-part1-120k:classes', 'clevr:count',
               'clevr:distance', 'coco/2017:boxes')


def expand(entries):
  """``evaluation.tasks`` with each ``paper`` replaced by ``PAPER_SUITE``."""
  return tuple(e for entry in entries for e in (PAPER_SUITE if entry == 'paper' else (entry,)))


def catalogue_name(dataset):
  """The tfds name of CATALOGUE in ``dataset``'s path parts ('~/tensorflow_datasets/food101/
  2.0.0' -> 'food101'), or None."""
  parts = re.split(r'[/:]', dataset)
  return next((name for name, _ in CATALOGUE if name in parts), None)


def resolve(entry, default_dataset):
  """(dataset, Task, results prefix) of an ``evaluation.tasks`` entry (``parse_entry``), the
  task as the dataset's CATALOGUE entry has it, its results named after the catalogue name
  ('sun397/standard-part1-120k:classes' -> 'sun397_classes')."""
  dataset, name, prefix = parse_entry(entry, default_dataset)
  catalogue = catalogue_name(dataset)
  overrides = CATALOGUE.get((catalogue, name))
  if overrides is None:
    return dataset, TASKS[name], prefix
  if prefix != name:                      # a 'DATASET:TASK' entry
    prefix = f'{catalogue}_{name}'
  return dataset, dataclasses.replace(TASKS[name], **overrides), prefix


def parse_entry(entry, default_dataset):
  """An ``evaluation.tasks`` entry, 'TASK' (on ``default_dataset``) or 'DATASET:TASK' (a
  prepared dataset's name or folder), -> (dataset, task name, the prefix of its results: the
  task's name, or the dataset's name and the task's: 'food101:classes', 'food101:2.0.0:classes'
  and '~/tensorflow_datasets/food101/2.0.0:classes' give 'food101_classes')."""
  dataset, sep, name = entry.rpartition(':')
  if not sep:
    return default_dataset, name, name
  # The dataset's name: a folder NAME/VERSION or a tfds NAME:VERSION without the version.
  parts = re.sub(r':\d+(\.\d+)*$', '', dataset).rstrip('/').split('/')
  while len(parts) > 1 and re.fullmatch(r'\d+(\.\d+)*', parts[-1]):
    parts.pop()
  label = re.sub(r'[^A-Za-z0-9]+', '_', parts[-1]).strip('_')
  return dataset, name, f'{label or "dataset"}_{name}'


def num_targets(task, num_labels, max_objects):
  """Classes a probe predicts: the label classes, the counts 0..max_objects, or the distance
  bins."""
  if task.target == 'closest_distance':
    return len(DISTANCE_BINS) + 1
  return max_objects + 1 if task.target == 'count' else num_labels


def closest_distance(depths):
  """The bin of the smallest of an image's object depths (Clevr's pixel_coords[:, 2])."""
  depths = np.asarray(depths, np.float32).reshape(-1, 3)[:, 2]
  if not len(depths):
    raise ValueError('task distance: an image without objects has no closest object')
  return int(np.digitize(depths.min(), DISTANCE_BINS, right=True))   # a bin's edge: below


def targets(task, labels, num_labels, max_objects, distances=None):
  """Per-example targets from the padded label rows (-1 = no object); ``distances``: the
  'closest_distance' targets, read from the records (``closest_distance``)."""
  if task.target == 'closest_distance':
    return np.asarray(distances, np.int32)
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

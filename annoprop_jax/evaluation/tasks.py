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


TASKS = {
    'objects': Task('objects', 'objects', 'objects_validation', 'first_label', 'class'),
    'presence': Task('presence', 'train', 'validation', 'presence', 'multilabel'),
    'count': Task('count', 'train', 'validation', 'count', 'class'),
    'boxes': Task('boxes', 'train', 'validation', 'box_label', 'class'),
    'classes': Task('classes', 'train', 'validation', 'first_label', 'class', labels='labels',
                    balanced=True),
}


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

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

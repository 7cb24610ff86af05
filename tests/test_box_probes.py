"""The boxes task: objects of scenes with their boxes, per-patch overlap by hand, probes that
find a class written into a box's tokens, and the task run end to end on the tiny scenes."""
import numpy as np
import pytest

from annoprop_jax.evaluation import box_probes
from annoprop_jax.evaluation import probes
from annoprop_jax.evaluation import tasks
from annoprop_jax.evaluation import task_data
from conftest import fresh_evaluator, tiny_config


def test_patch_overlap_by_hand():
  boxes = np.array([[0.0, 0.0, 0.5, 0.25],          # patches (0, 0) and (1, 0) of a 4 x 4 grid
                    [0.125, 0.125, 0.375, 0.375],   # a quarter of each of (0..1, 0..1)
                    [0.5, 0.5, 1.0, 1.0]])          # the bottom-right 2 x 2 patches
  overlap = box_probes.patch_overlap(boxes, 4).reshape(3, 4, 4)
  want = np.zeros((3, 4, 4))
  want[0, :2, 0] = 1.0
  want[1, :2, :2] = 0.25
  want[2, 2:, 2:] = 1.0
  np.testing.assert_allclose(overlap, want, atol=1e-12)


def _images_with_two_objects(rng, n, num_classes, grid=4, width=16):
  """Tokens of n images, each with two objects in disjoint halves: a patch inside an object's
  box carries that object's class in one channel; the rest is noise."""
  tokens = rng.normal(size=(n, grid * grid, width)).astype(np.float32)
  boxes, labels, image_index = [], [], []
  for i in range(n):
    for half, label in ((0, rng.integers(num_classes)), (1, rng.integers(num_classes))):
      size = rng.choice([1, 2])
      row, col = rng.integers(0, grid - size + 1), half * 2 + rng.integers(0, 2 - size + 1)
      box = np.array([row, col, row + size, col + size]) / grid
      inside = box_probes.patch_overlap(box[None], grid)[0] > 0
      tokens[i, inside, label] += 4.0
      boxes.append(box)
      labels.append(label)
      image_index.append(i)
  return tokens, np.array(boxes, np.float32), np.array(labels, np.int32), np.array(image_index)


def test_probes_read_the_class_written_in_the_box():
  rng = np.random.default_rng(0)
  k = 5
  train = _images_with_two_objects(rng, 300, k)
  test = _images_with_two_objects(rng, 100, k)
  (train_pooled, train_marked), (test_pooled, test_marked) = (
      box_probes.object_features(t, i, b) for t, b, _, i in (train, test))
  assert train_marked.shape == (600, 16, 17) and train_pooled.shape == (600, 16)
  config = probes.ProbeConfig(learning_rates=(3e-2,), weight_decays=(0.0,), epochs=30)
  common = dict(kind='class', num_classes=k, config=config)
  linear = probes.linear_probe(train_pooled, train[2], test_pooled, test[2], **common)
  attentive = probes.attentive_probe(train_marked, train[2], test_marked, test[2], **common)
  assert linear['score'] > 0.97 and attentive['score'] > 0.9, (linear, attentive)
  # Without the box the image-level feature cannot say which of its two objects is asked for.
  whole = probes.linear_probe(train[0].mean(1)[train[3]], train[2],
                              test[0].mean(1)[test[3]], test[2], **common)
  assert whole['score'] < 0.75, whole


def test_a_cls_token_comes_first_with_no_overlap():
  rng = np.random.default_rng(1)
  tokens, boxes, _, image_index = _images_with_two_objects(rng, 3, 5)
  cls = rng.normal(size=(3, 16)).astype(np.float32)
  pooled, marked = box_probes.object_features(tokens, image_index, boxes)
  cls_pooled, cls_marked = box_probes.object_features(tokens, image_index, boxes, cls)
  assert cls_marked.shape == (6, 17, 17)
  np.testing.assert_array_equal(cls_marked[:, 0, :16], cls[image_index])
  assert not cls_marked[:, 0, 16].any()                    # the CLS token is in no box
  np.testing.assert_array_equal(cls_marked[:, 1:], marked)
  np.testing.assert_array_equal(cls_pooled, pooled)        # the box pooling ignores it


def test_accuracy_by_size_bins():
  boxes = np.array([[0, 0, 0.2, 0.2], [0, 0, 0.3, 0.5], [0, 0, 0.3, 0.4], [0, 0, 0.9, 0.9]])
  logits = np.eye(3)[[0, 1, 2, 2]]
  got = box_probes.accuracy_by_size(logits, np.array([0, 1, 0, 2]), boxes)
  # Areas 0.04 (small, right), 0.15 (medium, right), 0.12 (medium, wrong), 0.81 (large, right).
  assert got == {'': 0.75, '_small': 1.0, '_medium': 0.5, '_large': 1.0}


def test_the_boxes_task_has_a_row_per_object_of_each_scene(tiny_data_dir):
  config = tiny_config('dino_scenes', **{'data.data_dir': tiny_data_dir})
  scenes = task_data.load(config.data, 'scenes', tasks.TASKS['presence'], 'validation', 16, 10)
  objects = task_data.load(config.data, 'scenes', tasks.TASKS['boxes'], 'validation', 16, 10)
  per_image = scenes.targets.sum(axis=1)       # classes present (an upper bound of objects ...)
  counts = np.bincount(objects.image_index, minlength=10)
  assert (counts >= per_image).all() and counts.sum() == len(objects.targets)
  for i in range(10):                          # ... and every class present has its objects
    assert set(objects.targets[objects.image_index == i]) == set(np.nonzero(scenes.targets[i])[0])
  assert objects.boxes.shape == (counts.sum(), 4)
  assert (objects.boxes[:, 2:] > objects.boxes[:, :2]).all()
  assert ((objects.boxes >= 0) & (objects.boxes <= 1)).all()
  assert objects.num_classes == 13


@pytest.mark.slow
def test_the_evaluator_scores_boxes_by_size(tiny_data_dir):
  evaluator, encoder_params = fresh_evaluator(tiny_config('dino_scenes', **{
      'data.data_dir': tiny_data_dir, 'evaluation.tasks': ('boxes',),
      'evaluation.probes': ('linear', 'knn', 'attentive'), 'evaluation.train_examples': 64,
      'evaluation.test_examples': 32, 'evaluation.epochs': 2}))
  results = evaluator(encoder_params)
  for probe in ('linear', 'knn', 'attentive'):
    assert 0.0 <= results[f'boxes_{probe}'] <= 1.0
    assert {f'boxes_{probe}_{size}' for size in ('small', 'medium', 'large')} & set(results)

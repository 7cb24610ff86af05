import numpy as np
import pytest

from annoprop_jax.data import boxes


def test_compose_crop_of_a_crop():
  outer = [0.2, 0.4, 0.6, 1.0]            # h = 0.4, w = 0.6
  inner = [0.5, 0.0, 1.0, 0.5]            # bottom-left quarter of the outer crop
  np.testing.assert_allclose(boxes.compose(outer, inner), [0.4, 0.4, 0.6, 0.7], atol=1e-6)


def test_relative_is_the_inverse_of_compose():
  outer = np.array([0.1, 0.2, 0.7, 0.9], np.float32)
  absolute = np.array([0.3, 0.1, 0.5, 0.4], np.float32)
  rel = boxes.relative(outer, absolute)
  # By hand: ((0.3-0.1)/0.6, (0.1-0.2)/0.7, (0.5-0.1)/0.6, (0.4-0.2)/0.7)
  np.testing.assert_allclose(rel, [1 / 3, -1 / 7, 2 / 3, 2 / 7], atol=1e-6)
  np.testing.assert_allclose(boxes.compose(outer, rel), absolute, atol=1e-6)


def test_invert_move():
  source = np.array([0.0, 0.0, 0.5, 0.5], np.float32)
  target = np.array([0.25, 0.5, 0.75, 1.0], np.float32)
  move = boxes.relative(source, target)           # (0.5, 1.0, 1.5, 2.0)
  np.testing.assert_allclose(move, [0.5, 1.0, 1.5, 2.0], atol=1e-6)
  back = boxes.invert(move)                       # source in target's frame
  np.testing.assert_allclose(back, [-0.5, -1.0, 0.5, 0.0], atol=1e-6)
  np.testing.assert_allclose(back, boxes.relative(target, source), atol=1e-6)
  np.testing.assert_allclose(boxes.invert(back), move, atol=1e-6)


def test_moves_matrix_and_flip():
  view_boxes = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.25, 0.5, 0.75]], np.float32)
  m = boxes.moves(view_boxes, flips=[False, True])
  np.testing.assert_allclose(m[0, 0], [0, 0, 1, 1], atol=1e-6)
  np.testing.assert_allclose(m[0, 1], [0.0, 0.5, 1.0, 1.5], atol=1e-6)
  # View 1 is flipped: view 0 in view 1's frame is (0, -0.5, 1, 0.5), mirrored: (0, 0.5, 1, 1.5).
  np.testing.assert_allclose(m[1, 0], [0.0, 0.5, 1.0, 1.5], atol=1e-6)
  np.testing.assert_allclose(m[1, 1], [0, 0, 1, 1], atol=1e-6)


def test_iou():
  assert boxes.iou([0, 0, 1, 1], [0, 0, 0.5, 1]) == pytest.approx(0.5)
  assert boxes.iou([0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]) == pytest.approx(0.0)


def test_rejects_wrong_shape():
  with pytest.raises(ValueError, match='4 coordinates'):
    boxes.relative([0, 0, 1], [0, 0, 1, 1])

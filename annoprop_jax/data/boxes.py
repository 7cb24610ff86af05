"""Box algebra in the one convention of docs/method.md.

A box is ``(ymin, xmin, ymax, xmax)`` in ``[0, 1]`` of a reference frame (the original image
unless said otherwise), the tfds ``BBoxFeature`` order. A view's box is where its pixels came
from. The *move* from view ``i`` to view ``j`` is view ``j``'s box expressed in view ``i``'s
frame; a horizontally flipped source view mirrors its frame, so the move's x coordinates are
mirrored. All functions work on the last axis and broadcast over leading axes (numpy).
"""
import numpy as np

UNIT_BOX = np.array([0.0, 0.0, 1.0, 1.0], np.float32)


def _split(box):
  box = np.asarray(box, np.float32)
  if box.shape[-1] != 4:
    raise ValueError(f'boxes must have 4 coordinates on the last axis, got shape {box.shape}')
  return box[..., 0], box[..., 1], box[..., 2], box[..., 3]


def compose(outer, inner):
  """Absolute box of ``inner`` (given in ``outer``'s frame): a crop of a crop."""
  oy0, ox0, oy1, ox1 = _split(outer)
  iy0, ix0, iy1, ix1 = _split(inner)
  h, w = oy1 - oy0, ox1 - ox0
  return np.stack([oy0 + iy0 * h, ox0 + ix0 * w, oy0 + iy1 * h, ox0 + ix1 * w], axis=-1)


def relative(source, target):
  """``target`` expressed in ``source``'s frame (the inverse of :func:`compose`)."""
  sy0, sx0, sy1, sx1 = _split(source)
  ty0, tx0, ty1, tx1 = _split(target)
  h, w = sy1 - sy0, sx1 - sx0
  return np.stack([(ty0 - sy0) / h, (tx0 - sx0) / w, (ty1 - sy0) / h, (tx1 - sx0) / w], axis=-1)


def invert(move):
  """Given the move i->j (j in i's frame), the move j->i (i in j's frame)."""
  return relative(move, UNIT_BOX)


def mirror_x(box):
  """The same region seen in a horizontally flipped frame."""
  y0, x0, y1, x1 = _split(box)
  return np.stack([y0, 1.0 - x1, y1, 1.0 - x0], axis=-1)


def moves(view_boxes, flips=None):
  """All ordered-pair moves of one image's views.

  Args:
    view_boxes: (V, 4) boxes of the views in the original image.
    flips: optional (V,) bools, whether each view was horizontally flipped.
  Returns:
    (V, V, 4) array whose ``[i, j]`` entry is the move from view i to view j.
  """
  view_boxes = np.asarray(view_boxes, np.float32)
  m = relative(view_boxes[:, None, :], view_boxes[None, :, :])
  if flips is not None:
    flips = np.asarray(flips, bool)
    m = np.where(flips[:, None, None], mirror_x(m), m)
  return m.astype(np.float32)


def iou(a, b):
  """Intersection over union of boxes, broadcasting over leading axes."""
  ay0, ax0, ay1, ax1 = _split(a)
  by0, bx0, by1, bx1 = _split(b)
  ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
  iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
  inter = ih * iw
  union = (ay1 - ay0) * (ax1 - ax0) + (by1 - by0) * (bx1 - bx0) - inter
  return inter / np.maximum(union, 1e-12)

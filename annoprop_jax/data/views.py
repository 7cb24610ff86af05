"""Multi-view RandomResizedCrop that tracks where every view came from.

Each view records its box in the original image (``boxes``), whether it was flipped
(``flips``), and the move of every ordered pair of views (``moves``, see ``boxes.moves``).
Colour and hue jitter, when enabled, change pixels only, never boxes; a view's whole jitter is one
affine map of its colours, applied in one pass.
"""
import math

import cv2
import numpy as np

from annoprop_jax.data import boxes as boxes_lib

# The pipeline runs in parallel over images; OpenCV's own threads would only contend with it.
cv2.setNumThreads(1)


def sample_crop_box(rng, image_hw, scale, ratio, attempts=10):
  """A RandomResizedCrop box (ymin, xmin, ymax, xmax) in [0, 1] of an image of shape
  ``image_hw``."""
  height, width = image_hw
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(attempts):
    target_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = math.sqrt(target_area * aspect)
    h = math.sqrt(target_area / aspect)
    if w <= width and h <= height:
      y0 = rng.uniform(0, height - h)
      x0 = rng.uniform(0, width - w)
      return np.array([y0 / height, x0 / width, (y0 + h) / height, (x0 + w) / width], np.float32)
  # Fallback: the largest centred crop with the aspect ratio clipped to the allowed range.
  aspect = min(max(width / height, ratio[0]), ratio[1])
  w, h = (width, width / aspect) if width / height < aspect else (height * aspect, height)
  w, h = min(w, width), min(h, height)
  y0, x0 = (height - h) / 2, (width - w) / 2
  return np.array([y0 / height, x0 / width, (y0 + h) / height, (x0 + w) / width], np.float32)


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)   # RGB -> grey (ITU-R BT.601)
_GREY = np.outer(np.ones(3), _LUMA)                     # colour -> its grey in every channel


def hue_rotation(turns):
  """(3, 3) rotation of colours about the grey axis by ``turns`` of the colour wheel (1/3: red
  -> green -> blue); greys stay put."""
  angle = 2 * math.pi * turns
  k = np.full(3, 1 / math.sqrt(3))
  cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  return (math.cos(angle) * np.eye(3) + math.sin(angle) * cross
          + (1 - math.cos(angle)) * np.outer(k, k))


def rotate_hue(pixels, turns):
  """``pixels`` (..., 3) float32 with their hues turned by ``turns`` (``hue_rotation``)."""
  return pixels @ hue_rotation(turns).T.astype(np.float32)


def colour_transform(rng, strength, hue, grayscale, channel_mean):
  """The colour jitter of one view as one affine map of its colours, ``colour' = A colour + b``.

  The ops that are on, in a random order: brightness, contrast and saturation when ``strength``
  > 0 (each a factor in [1 - strength, 1 + strength]), a hue rotation in [-hue, hue] turns when
  ``hue`` > 0; then grey with probability ``grayscale``. Every op is affine in the colour, so
  their composition is one (3, 3) ``A`` and (3,) ``b``; contrast pulls towards the mean grey
  level that the ops before it left, which follows from the view's ``channel_mean`` (3,) alone.
  """
  a, b = np.eye(3), np.zeros(3)
  ops = ((0, 1, 2) if strength > 0 else ()) + ((3,) if hue > 0 else ())
  for op in (rng.permutation(ops) if ops else ()):
    if op == 3:
      m, offset = hue_rotation(rng.uniform(-hue, hue)), 0.0
    else:
      factor = rng.uniform(max(0.0, 1 - strength), 1 + strength)
      offset = 0.0
      if op == 0:                                   # brightness
        m = factor * np.eye(3)
      elif op == 1:                                 # contrast, about the current mean level
        m, offset = factor * np.eye(3), (1 - factor) * np.mean(a @ channel_mean + b)
      else:                                         # saturation, about each pixel's grey
        m = factor * np.eye(3) + (1 - factor) * _GREY
    a, b = m @ a, m @ b + offset
  if grayscale > 0 and rng.uniform() < grayscale:
    a, b = _GREY @ a, _GREY @ b
  return a, b


def _jittered(view, rng, spec):
  """``view`` (S, S, 3) uint8 through ``colour_transform``'s map in one pass (float arithmetic,
  rounded and saturated to uint8 once, at the end)."""
  channel_mean = np.array(cv2.mean(view)[:3])
  a, b = colour_transform(rng, spec.colour_jitter, spec.hue_jitter, spec.grayscale,
                          channel_mean)
  return cv2.transform(view, np.concatenate([a, b[:, None]], axis=1))


def crop(image, box, size):
  """(size, size, 3) uint8: ``box`` (ymin, xmin, ymax, xmax in [0, 1]) of ``image`` (H, W, 3
  uint8) resampled to ``size`` x ``size``, the pixels of a view.

  Bilinear interpolation, antialiased where the box shrinks: a Gaussian of the variance of a
  bilinear (triangle) kernel stretched by the shrink factor f, less the variance the
  interpolation itself adds, sigma^2 = (f^2 - 1) / 6 source pixels, blurs the box's pixels
  first (what PIL's antialiased bilinear resize does with a triangle kernel; 0.1-0.2 grey
  levels from it on average, in a third to a half of its time). A box's pixel centres map onto
  the view's (the half-pixel convention of PIL and OpenCV); outside the image its edge pixels
  repeat.
  """
  image = np.ascontiguousarray(image)          # OpenCV takes no negative strides
  height, width = image.shape[:2]
  y0, x0, y1, x1 = box[0] * height, box[1] * width, box[2] * height, box[3] * width
  fy, fx = (y1 - y0) / size, (x1 - x0) / size            # source pixels per view pixel
  if fy > 1 or fx > 1:                                     # blur only around the box
    sy, sx = (math.sqrt(max(f * f - 1, 0) / 6) for f in (fy, fx))
    top, left = max(0, int(y0 - 3 * sy) - 2), max(0, int(x0 - 3 * sx) - 2)
    bottom, right = min(height, int(y1 + 3 * sy) + 3), min(width, int(x1 + 3 * sx) + 3)
    image = cv2.GaussianBlur(image[top:bottom, left:right], (0, 0), sigmaX=max(sx, 1e-3),
                             sigmaY=max(sy, 1e-3), borderType=cv2.BORDER_REPLICATE)
    y0, y1, x0, x1 = y0 - top, y1 - top, x0 - left, x1 - left
  # View pixel (r, c) has its centre at source (y0 + (r + 0.5) fy - 0.5, x0 + (c + 0.5) fx - 0.5).
  warp = np.array([[1 / fx, 0, (0.5 - x0) / fx - 0.5], [0, 1 / fy, (0.5 - y0) / fy - 0.5]])
  return cv2.warpAffine(image, warp, (size, size), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)


def make_views(image, rng, spec):
  """Cuts ``spec.num`` views out of ``image`` (H, W, 3 uint8).

  Returns a dict with ``images`` (V, S, S, 3) uint8, ``boxes`` (V, 4) float32 in the original
  image, ``flips`` (V,) bool and ``moves`` (V, V, 4) float32.
  """
  height, width = image.shape[:2]
  jitter = spec.colour_jitter > 0 or spec.hue_jitter > 0 or spec.grayscale > 0
  views, view_boxes, flips = [], [], []
  for _ in range(spec.num):
    box = sample_crop_box(rng, (height, width), spec.scale, spec.ratio)
    view = crop(image, box, spec.size)
    flip = bool(spec.flip and rng.uniform() < 0.5)
    if flip:
      view = cv2.flip(view, 1)
    if jitter:
      view = _jittered(view, rng, spec)
    views.append(view)
    view_boxes.append(box)
    flips.append(flip)
  view_boxes = np.stack(view_boxes) if views else np.zeros((0, 4), np.float32)
  return {
      'images': np.stack(views) if views else np.zeros((0, spec.size, spec.size, 3), np.uint8),
      'boxes': view_boxes,
      'flips': np.array(flips, bool),
      'moves': boxes_lib.moves(view_boxes, flips),
  }

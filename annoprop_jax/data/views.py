"""Multi-view RandomResizedCrop that tracks where every view came from.

Each view records its box in the original image (``boxes``), whether it was flipped
(``flips``), and the move of every ordered pair of views (``moves``, see ``boxes.moves``).
Colour and hue jitter, when enabled, change pixels only, never boxes.
"""
import dataclasses
import math

import numpy as np
from PIL import Image

from annoprop_jax.data import boxes as boxes_lib


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """How to cut ``num`` views of ``size`` x ``size`` pixels out of one image."""
  num: int = 2
  size: int = 32
  scale: tuple = (0.25, 1.0)        # area of a view as a fraction of the image area
  ratio: tuple = (3 / 4, 4 / 3)     # aspect ratio (width / height) range, sampled log-uniformly
  flip: bool = True                 # random horizontal flips (mirror the view's frame)
  colour_jitter: float = 0.0        # strength of brightness/contrast/saturation jitter, 0 = off
  hue_jitter: float = 0.0           # max hue rotation, a fraction of the colour wheel (0-0.5)
  grayscale: float = 0.0            # probability of converting a view to grey

  def validate(self, name='views'):
    if self.num < 0 or self.size < 1:
      raise ValueError(f'{name}: num must be >= 0 and size >= 1, got num={self.num} size={self.size}')
    lo, hi = self.scale
    if not 0 < lo <= hi <= 1:
      raise ValueError(f'{name}.scale must satisfy 0 < min <= max <= 1, got {self.scale}')
    if not 0 < self.ratio[0] <= self.ratio[1]:
      raise ValueError(f'{name}.ratio must satisfy 0 < min <= max, got {self.ratio}')
    if self.colour_jitter < 0 or not 0 <= self.grayscale <= 1:
      raise ValueError(f'{name}: colour_jitter must be >= 0 and grayscale in [0, 1]')
    if not 0 <= self.hue_jitter <= 0.5:
      raise ValueError(f'{name}.hue_jitter must be in [0, 0.5] (of the colour wheel), '
                       f'got {self.hue_jitter}')


def sample_crop_box(rng, image_hw, scale, ratio, attempts=10):
  """A RandomResizedCrop box (ymin, xmin, ymax, xmax) in [0, 1] of an image of shape ``image_hw``."""
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


def rotate_hue(pixels, turns):
  """Rotates every colour about the grey axis by ``turns`` of the colour wheel (1/3: red ->
  green -> blue); greys stay put. ``pixels`` (..., 3) float32."""
  angle = 2 * math.pi * turns
  k = np.full(3, 1 / math.sqrt(3), np.float32)
  cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], np.float32)
  rotation = (math.cos(angle) * np.eye(3, dtype=np.float32) + math.sin(angle) * cross
              + (1 - math.cos(angle)) * np.outer(k, k))
  return pixels @ rotation.T


def _jitter(pixels, rng, strength, hue, grayscale):
  """Brightness, contrast, saturation and (when ``hue`` > 0) hue jitter in a random order, then
  optional grey (float32 0-255). Without hue jitter the random draws are those of the three
  other ops alone, so the views of earlier runs are reproduced exactly."""
  ops = ((0, 1, 2) if strength > 0 else ()) + ((3,) if hue > 0 else ())
  for op in (rng.permutation(ops) if ops else ()):
    if op == 3:
      pixels = rotate_hue(pixels, rng.uniform(-hue, hue))
      continue
    factor = rng.uniform(max(0.0, 1 - strength), 1 + strength)
    if op == 0:
      pixels = pixels * factor
    elif op == 1:
      pixels = (pixels - pixels.mean()) * factor + pixels.mean()
    else:
      grey = pixels @ _LUMA
      pixels = (pixels - grey[..., None]) * factor + grey[..., None]
  if grayscale > 0 and rng.uniform() < grayscale:
    grey = pixels @ _LUMA
    pixels = np.repeat(grey[..., None], 3, axis=-1)
  return pixels


def crop(image, box, size):
  """(size, size, 3) uint8: ``box`` (in [0, 1]) of the PIL ``image`` resized bilinearly, the
  pixels of a view."""
  y0, x0, y1, x1 = box
  return np.asarray(image.resize((size, size), Image.BILINEAR,
                                 box=(x0 * image.width, y0 * image.height,
                                      x1 * image.width, y1 * image.height)))


def make_views(image, rng, spec):
  """Cuts ``spec.num`` views out of ``image`` (H, W, 3 uint8).

  Returns a dict with ``images`` (V, S, S, 3) uint8, ``boxes`` (V, 4) float32 in the original
  image, ``flips`` (V,) bool and ``moves`` (V, V, 4) float32.
  """
  height, width = image.shape[:2]
  pil = Image.fromarray(image)
  views, view_boxes, flips = [], [], []
  for _ in range(spec.num):
    box = sample_crop_box(rng, (height, width), spec.scale, spec.ratio)
    pixels = crop(pil, box, spec.size)
    flip = bool(spec.flip and rng.uniform() < 0.5)
    if flip:
      pixels = pixels[:, ::-1]
    if spec.colour_jitter > 0 or spec.hue_jitter > 0 or spec.grayscale > 0:
      pixels = _jitter(pixels.astype(np.float32), rng, spec.colour_jitter, spec.hue_jitter,
                       spec.grayscale)
      pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    views.append(np.ascontiguousarray(pixels))
    view_boxes.append(box)
    flips.append(flip)
  view_boxes = np.stack(view_boxes) if views else np.zeros((0, 4), np.float32)
  return {
      'images': np.stack(views) if views else np.zeros((0, spec.size, spec.size, 3), np.uint8),
      'boxes': view_boxes,
      'flips': np.array(flips, bool),
      'moves': boxes_lib.moves(view_boxes, flips),
  }

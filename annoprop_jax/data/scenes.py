"""The embedded "scenes" dataset: coloured shapes on textured backgrounds (numpy + PIL).

Two kinds of examples, each a function of ``(spec, seed, index)`` alone (randomness from
``np.random.default_rng([seed, index, kind])``, never global state), well under a millisecond
at 64 px:

- ``render_scene``: several shapes placed at random with limited mutual occlusion, with boxes,
  labels and a spatial caption;
- ``render_single_object``: one roughly centred shape (classification).

Both return ``{'image': uint8 (H, W, 3), 'boxes': float32 (n, 4), 'labels': int32 (n,),
'caption': str}``. Boxes are ``(ymin, xmin, ymax, xmax)`` in [0, 1] (tfds BBoxFeature order),
the tight box of each object's whole (unoccluded) anti-aliased mask: every pixel it covers at
all lies inside, so ``ymax = (last_row + 1) / H``. Labels index ``shapes.SHAPES``, in drawing
order (later objects on top). ``scenes_preview.py`` draws a grid of both kinds.
"""
import dataclasses
import functools
import math
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

from annoprop_jax.data import shapes
from annoprop_jax.data.shapes import COLOURS, SHAPES, TEXTURES

# Captions are ASCII and shorter than this, so the streams' default ``max_caption_bytes`` (this)
# never cuts one (and CLIP's default text_max_len is this + BOS + EOS).
MAX_CAPTION_BYTES = 160

_SIZE_WORDS = ('small', 'medium', 'large')
_KIND_SCENE, _KIND_SINGLE = 0, 1           # the third seed word of each kind's generator
_PLACEMENT_TRIES = 12          # placement draws per object before it is dropped
_MIN_OBJECT_CONTRAST = 110.0   # min RGB distance object colour <-> background colours
_MIN_TEXTURE_CONTRAST = 90.0   # min RGB distance of the two texture colours


@dataclasses.dataclass(frozen=True)
class SceneSpec:
  """Parameters of the procedural scene distribution."""

  resolution: int = 64              # square images, pixels
  min_objects: int = 1
  max_objects: int = 5
  # Object size (the diameter of the circle that holds the shape under any rotation) as a
  # fraction of the image side, for scenes ...
  object_size: Tuple[float, float] = (0.3, 0.55)
  # ... and for the single centred objects.
  single_object_size: Tuple[float, float] = (0.5, 0.8)
  texture_strength: float = 0.5      # 0 = flat background colour, 1 = strongest texture contrast
  # Per-channel uniform perturbation of the palette colour, as a fraction of +-128.
  colour_jitter: float = 0.15
  # The most of an object's box that the boxes of later objects may cover. The config's
  # ``data.scenes`` block takes every default from here.
  max_occlusion: float = 0.4

  def validate(self) -> None:
    """Raises ``ValueError`` describing the first invalid field."""

    def is_int(v) -> bool:
      return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_num(v) -> bool:
      return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    if not is_int(self.resolution) or self.resolution < 16:
      raise ValueError(f'SceneSpec.resolution must be an int >= 16, got {self.resolution!r}')
    if not is_int(self.min_objects) or self.min_objects < 1:
      raise ValueError(f'SceneSpec.min_objects must be an int >= 1, got {self.min_objects!r}')
    if not is_int(self.max_objects) or self.max_objects < self.min_objects:
      raise ValueError('SceneSpec.max_objects must be an int >= min_objects '
                       f'({self.min_objects!r}), got {self.max_objects!r}')
    for name in ('object_size', 'single_object_size'):
      value = getattr(self, name)
      try:
        lo, hi = value
      except (TypeError, ValueError):
        raise ValueError(f'SceneSpec.{name} must be a pair (lo, hi), got {value!r}') from None
      if not (is_num(lo) and is_num(hi)) or not (0.0 < lo <= hi <= 1.0):
        raise ValueError(f'SceneSpec.{name} must satisfy 0 < lo <= hi <= 1, got {value!r}')
    for name in ('texture_strength', 'colour_jitter', 'max_occlusion'):
      value = getattr(self, name)
      if not is_num(value) or not (0.0 <= float(value) <= 1.0):
        raise ValueError(f'SceneSpec.{name} must be in [0, 1], got {value!r}')


def _check_spec(spec: SceneSpec) -> None:
  # Validated on every call (~2 us): caching on the (hash-equal) spec would conflate e.g.
  # resolution=64 with the invalid resolution=64.0.
  if not isinstance(spec, SceneSpec):
    raise TypeError(f'expected a SceneSpec, got {type(spec).__name__}')
  spec.validate()


def _rng(seed: int, index: int, kind: int) -> np.random.Generator:
  seed, index = int(seed), int(index)
  if seed < 0 or index < 0:
    raise ValueError(f'seed and index must be >= 0, got seed={seed}, index={index}')
  return np.random.default_rng([seed, index, kind])



@functools.lru_cache(maxsize=16)
def _grid(res: int) -> Tuple[np.ndarray, np.ndarray]:
  c = np.arange(res, dtype=np.float32) + 0.5
  yy, xx = np.meshgrid(c, c, indexing='ij')
  yy.setflags(write=False)
  xx.setflags(write=False)
  return yy, xx


def _texture_pattern(rng: np.random.Generator, texture: str, res: int) -> np.ndarray:
  """A (res, res) float32 mixing weight in [0, 1] (0 = base colour)."""
  if texture == 'plain':
    return np.zeros((res, res), np.float32)
  yy, xx = _grid(res)
  scale = res / 64.0
  theta = rng.uniform(0.0, np.pi)
  c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
  u = xx * c + yy * s
  if texture == 'gradient':
    v = u - u.min()
    return v / max(float(v.max()), 1e-6)
  v = yy * c - xx * s
  if texture == 'striped':
    period = rng.uniform(6.0, 14.0) * scale
    phase = rng.uniform(0.0, 2.0 * np.pi)
    return np.clip(0.5 + 2.5 * np.sin(u * np.float32(2 * np.pi / period) + phase), 0, 1)
  if texture == 'checkered':
    period = rng.uniform(6.0, 12.0) * scale
    off = rng.uniform(0.0, period, size=2)
    return ((np.floor((u + off[0]) / period) + np.floor(
        (v + off[1]) / period)) % 2).astype(np.float32)
  if texture == 'dotted':
    period = rng.uniform(7.0, 12.0) * scale
    radius = period * rng.uniform(0.18, 0.3)
    off = rng.uniform(0.0, period, size=2)
    du = (u + off[0]) % period - period / 2
    dv = (v + off[1]) % period - period / 2
    d = np.sqrt(du * du + dv * dv)
    return np.clip(radius + 0.5 - d, 0, 1).astype(np.float32)
  if texture == 'noisy':
    low = rng.random((6, 6), dtype=np.float32)
    smooth = np.asarray(Image.fromarray(low).resize((res, res), Image.BILINEAR), np.float32)
    fine = rng.random((res, res), dtype=np.float32)
    return 0.5 * smooth + 0.5 * fine
  raise ValueError(f'unknown texture {texture!r}')


def _render_background(rng: np.random.Generator,
                       spec: SceneSpec) -> Tuple[np.ndarray, int, List[np.ndarray]]:
  """Returns (float32 image (H, W, 3), texture index, background colours)."""
  res = spec.resolution
  tex = int(rng.integers(len(TEXTURES)))
  c0 = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
  if TEXTURES[tex] == 'plain':
    return np.broadcast_to(c0, (res, res, 3)).copy(), tex, [c0]
  for _ in range(20):
    c1 = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
    if _dist(c1, c0) >= _MIN_TEXTURE_CONTRAST:
      break
  c1 = c0 + np.float32(spec.texture_strength) * (c1 - c0)
  t = _texture_pattern(rng, TEXTURES[tex], res)[..., None]
  img = c0 + t * (c1 - c0)
  return img.astype(np.float32), tex, [c0, c1]


def _dist(a: np.ndarray, b: np.ndarray) -> float:
  d = a - b
  return math.sqrt(float(d @ d))


def _pick_colour(rng: np.random.Generator, spec: SceneSpec,
                 bg_colours: Sequence[np.ndarray]) -> Tuple[int, np.ndarray]:
  """A named colour (+ jitter) contrasting with all background colours."""
  best, best_d = None, -1.0
  for _ in range(24):
    ci = int(rng.integers(len(COLOURS)))
    jitter = rng.uniform(-1.0, 1.0, size=3).astype(np.float32)
    rgb = shapes.PALETTE_RGB[ci] + jitter * np.float32(spec.colour_jitter * 128.0)
    rgb = np.clip(rgb, 0.0, 255.0)
    d = min(_dist(rgb, b) for b in bg_colours)
    if d >= _MIN_OBJECT_CONTRAST:
      return ci, rgb
    if d > best_d:
      best, best_d = (ci, rgb), d
  return best



def _composite(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray, ty: int, tx: int) -> None:
  h, w = alpha.shape
  region = img[ty:ty + h, tx:tx + w]
  region += alpha[..., None] * (colour - region)


def _size_word(size: float, size_range: Tuple[float, float]) -> str:
  lo, hi = size_range
  if hi - lo <= 1e-9:
    return 'medium'
  f = (size - lo) / (hi - lo)
  return _SIZE_WORDS[min(2, max(0, int(f * 3.0)))]


def _relation(a_box: np.ndarray, b_box: np.ndarray) -> str:
  """Spatial relation of object a w.r.t. object b (from box centres)."""
  ay, ax = (a_box[0] + a_box[2]) / 2, (a_box[1] + a_box[3]) / 2
  by, bx = (b_box[0] + b_box[2]) / 2, (b_box[1] + b_box[3]) / 2
  if abs(ax - bx) >= abs(ay - by):
    return 'left of' if ax < bx else 'right of'
  return 'above' if ay < by else 'below'


def _finish_image(img: np.ndarray) -> np.ndarray:
  return np.clip(img + 0.5, 0.0, 255.0).astype(np.uint8)


def _covered_after(box, boxes, covered, max_occlusion):
  """The covered part of each earlier object's box once ``box`` is drawn on top (bool masks),
  or None if more than ``max_occlusion`` of one of them would be covered."""
  result = []
  for (y0, x0, y1, x1), cov in zip(boxes, covered):
    iy0, ix0, iy1, ix1 = max(y0, box[0]), max(x0, box[1]), min(y1, box[2]), min(x1, box[3])
    if iy0 < iy1 and ix0 < ix1:
      cov = cov.copy()
      cov[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = True
      if np.count_nonzero(cov) > max_occlusion * cov.size:
        return None
    result.append(cov)
  return result


def _place(rng, mask_shape, tight_box, res, boxes, covered, max_occlusion):
  """(offset y, offset x, image box, new covered masks) of the first of _PLACEMENT_TRIES random
  offsets of a mask that covers no earlier object too much; None if there is none."""
  (h, w), (by0, bx0, by1, bx1) = mask_shape, tight_box
  for _ in range(_PLACEMENT_TRIES):
    ty = int(rng.integers(0, res - h + 1))
    tx = int(rng.integers(0, res - w + 1))
    box = (ty + by0, tx + bx0, ty + by1, tx + bx1)
    new_covered = _covered_after(box, boxes, covered, max_occlusion)
    if new_covered is not None:
      return ty, tx, box, new_covered
  return None


def render_scene(spec: SceneSpec, seed: int, index: int) -> dict:
  """Scene ``index`` of the dataset of ``spec`` and ``seed``.

  Objects are drawn in order, later ones on top. An object that would cover more than
  ``spec.max_occlusion`` of an earlier object's box at each of its placement tries is dropped
  (never the first), so a scene can hold fewer objects than it drew.
  """
  _check_spec(spec)
  rng = _rng(seed, index, _KIND_SCENE)
  res = spec.resolution
  img, tex, bg_colours = _render_background(rng, spec)
  num_objects = int(rng.integers(spec.min_objects, spec.max_objects + 1))
  lo, hi = spec.object_size
  boxes, covered = [], []   # pixel boxes (end-exclusive); covered part of each, by later boxes
  labels, colour_ids, sizes = [], [], []
  for _ in range(num_objects):
    shape_idx = int(rng.integers(len(SHAPES)))
    colour_idx, colour = _pick_colour(rng, spec, bg_colours)
    size = float(rng.uniform(lo, hi))
    angle = float(rng.uniform(0.0, 2.0 * np.pi))
    # At most res - 1 across: room for the mask's sub-pixel offset.
    alpha, tight_box = shapes.render_mask(rng, shape_idx, min(size * res, res - 1.0), angle)
    placed = _place(rng, alpha.shape, tight_box, res, boxes, covered, spec.max_occlusion)
    if placed is None:
      continue
    ty, tx, box, covered = placed
    _composite(img, alpha, colour, ty, tx)
    boxes.append(box)
    covered.append(np.zeros((box[2] - box[0], box[3] - box[1]), bool))
    labels.append(shape_idx)
    colour_ids.append(colour_idx)
    sizes.append(size)
  boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / np.float32(res)
  return {
      'image': _finish_image(img),
      'boxes': boxes,
      'labels': np.asarray(labels, dtype=np.int32),
      'caption': _scene_caption(boxes, labels, colour_ids, sizes, spec.object_size, tex),
  }


def _phrase(size_word: str, colour_idx: int, shape_idx: int) -> str:
  return f'a {size_word} {COLOURS[colour_idx]} {SHAPES[shape_idx]}'


def _scene_caption(boxes, labels, colour_ids, sizes, size_range, tex) -> str:
  n = len(labels)
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  # Describe up to 3 objects, largest first (ties: drawing order).
  order = sorted(range(n), key=lambda i: (-float(areas[i]), i))[:3]
  phrases = [_phrase(_size_word(sizes[i], size_range), colour_ids[i], labels[i]) for i in order]
  tail = f' on a {TEXTURES[tex]} background'
  text = phrases[0]
  if n >= 2:
    a, b = order[0], order[1]
    text = f'{phrases[0]} {_relation(boxes[a], boxes[b])} {phrases[1]}'
  if n >= 3:
    a, c = order[0], order[2]
    ref = f'the {COLOURS[colour_ids[a]]} {SHAPES[labels[a]]}'
    longer = f'{text} and {phrases[2]} {_relation(boxes[c], boxes[a])} {ref}'
    if len(longer) + len(tail) < MAX_CAPTION_BYTES:
      text = longer
  return text + tail


def render_single_object(spec: SceneSpec, seed: int, index: int) -> dict:
  """Renders one roughly centred object (offset <= 5% of the side)."""
  _check_spec(spec)
  rng = _rng(seed, index, _KIND_SINGLE)
  res = spec.resolution
  img, tex, bg_colours = _render_background(rng, spec)
  shape_idx = int(rng.integers(len(SHAPES)))
  colour_idx, colour = _pick_colour(rng, spec, bg_colours)
  lo, hi = spec.single_object_size
  size = float(rng.uniform(lo, hi))
  angle = float(rng.uniform(0.0, 2.0 * np.pi))
  extent = min(size * res, res - 1.0)
  alpha, (by0, bx0, by1, bx1) = shapes.render_mask(rng, shape_idx, extent, angle)
  h, w = alpha.shape
  cy, cx = (res / 2.0 + rng.uniform(-0.05, 0.05, size=2) * res).tolist()
  # Centre the tight box (not the local canvas) on (cy, cx).
  ty = int(round(cy - (by0 + by1) / 2.0))
  tx = int(round(cx - (bx0 + bx1) / 2.0))
  ty = min(max(ty, 0), res - h)
  tx = min(max(tx, 0), res - w)
  _composite(img, alpha, colour, ty, tx)
  box = np.array([[ty + by0, tx + bx0, ty + by1, tx + bx1]], np.float32) / np.float32(res)
  caption = (f'{_phrase(_size_word(size, spec.single_object_size), colour_idx, shape_idx)}'
             f' on a {TEXTURES[tex]} background')
  return {
      'image': _finish_image(img),
      'boxes': box,
      'labels': np.array([shape_idx], np.int32),
      'caption': caption,
  }

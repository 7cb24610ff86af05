"""The vocabulary of the scenes dataset and its shapes as anti-aliased masks.

Shapes are unit polygons, drawn in order: the first polygon is filled with 255, later ones with
their fill (0 = a hole). Each is centred on its bounding box and scaled so that every filled
vertex lies within the unit circle, so any rotation fits a box of side 2.
"""
import math
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ('circle', 'square', 'triangle', 'star', 'ring', 'cross', 'heart', 'arrow', 'crescent',
          'semicircle', 'bar', 'diamond', 'l-shape')
_PALETTE = (
    ('red', (220, 30, 35)),
    ('green', (35, 165, 50)),
    ('blue', (35, 70, 225)),
    ('yellow', (245, 225, 35)),
    ('orange', (245, 135, 20)),
    ('purple', (130, 45, 175)),
    ('pink', (250, 135, 195)),
    ('cyan', (40, 215, 225)),
    ('white', (245, 245, 245)),
    ('black', (15, 15, 15)),
    ('brown', (125, 70, 25)),
    ('grey', (128, 128, 128)),
)
COLOURS = tuple(name for name, _ in _PALETTE)
PALETTE_RGB = np.array([rgb for _, rgb in _PALETTE], dtype=np.float32)
TEXTURES = ('plain', 'striped', 'checkered', 'dotted', 'noisy', 'gradient')

SUPERSAMPLE = 4       # mask supersampling factor (per axis)


def _circle_pts(n: int, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
  t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
  return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _arc(cx, cy, r, a0, a1, n) -> np.ndarray:
  t = np.linspace(a0, a1, n)
  return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _build_unit_shapes() -> Dict[str, List[Tuple[np.ndarray, int]]]:
  s: Dict[str, List[Tuple[np.ndarray, int]]] = {}
  s['circle'] = [(_circle_pts(48), 255)]
  s['square'] = [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 255)]
  s['triangle'] = [(
      np.array([[math.cos(a), math.sin(a)] for a in np.deg2rad([-90, 30, 150])], float),
      255,
  )]
  star = []
  for k in range(10):
    a = np.deg2rad(-90 + 36 * k)
    r = 1.0 if k % 2 == 0 else 0.42
    star.append([r * math.cos(a), r * math.sin(a)])
  s['star'] = [(np.array(star), 255)]
  s['ring'] = [(_circle_pts(48), 255), (_circle_pts(40, 0.56), 0)]
  w = 0.32
  s['cross'] = [(
      np.array(
          [
              [-w, -1],
              [w, -1],
              [w, -w],
              [1, -w],
              [1, w],
              [w, w],
              [w, 1],
              [-w, 1],
              [-w, w],
              [-1, w],
              [-1, -w],
              [-w, -w],
          ],
          float,
      ),
      255,
  )]
  t = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
  hx = 16.0 * np.sin(t)**3
  hy = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
  s['heart'] = [(np.stack([hx, hy], axis=1), 255)]
  s['arrow'] = [(
      np.array([
          [-1.0, -0.24],
          [0.05, -0.24],
          [0.05, -0.62],
          [1.0, 0.0],
          [0.05, 0.62],
          [0.05, 0.24],
          [-1.0, 0.24],
      ]),
      255,
  )]
  # Crescent: unit disc minus a disc of radius rh centred at (dx, 0), as a
  # single polygon (outer arc, then the inner arc back).
  rh, dx = 0.8, 0.42
  xi = (1.0 - rh * rh + dx * dx) / (2.0 * dx)
  yi = math.sqrt(1.0 - xi * xi)
  a0 = math.atan2(yi, xi)
  outer = _arc(0.0, 0.0, 1.0, a0, 2.0 * np.pi - a0, 40)
  b0 = math.atan2(-yi, xi - dx) + 2.0 * np.pi  # lower intersection, seen from hole
  b1 = math.atan2(yi, xi - dx)  # upper intersection
  inner = _arc(dx, 0.0, rh, b0, b1, 32)
  s['crescent'] = [(np.concatenate([outer, inner[1:-1]]), 255)]
  s['semicircle'] = [(_arc(0.0, 0.0, 1.0, 0.0, np.pi, 33), 255)]
  s['bar'] = [(np.array([[-1, -0.3], [1, -0.3], [1, 0.3], [-1, 0.3]], float), 255)]
  s['diamond'] = [(np.array([[0, -1], [0.55, 0], [0, 1], [-0.55, 0]], float), 255)]
  s['l-shape'] = [(
      np.array(
          [[0, 0], [0.42, 0], [0.42, 0.58], [0.9, 0.58], [0.9, 1.0], [0, 1.0]],
          float,
      ),
      255,
  )]

  out: Dict[str, List[Tuple[np.ndarray, int]]] = {}
  for name, polys in s.items():
    filled = np.concatenate([p for p, f in polys if f])
    centre = (filled.min(axis=0) + filled.max(axis=0)) / 2.0
    radius = np.sqrt(((filled - centre)**2).sum(axis=1)).max()
    out[name] = [(((p - centre) / radius).astype(np.float64), f) for p, f in polys]
  return out


_UNIT_SHAPES = _build_unit_shapes()
_UNIT_SHAPE_LIST = [_UNIT_SHAPES[name] for name in SHAPES]


def render_mask(rng: np.random.Generator, shape_idx: int, diameter: float,
                 angle: float) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
  """Anti-aliased coverage mask of a rotated shape in its local box.

    Returns (alpha float32 (h, w) in [0, 1], tight box (y0, x0, y1, x1) of the
    non-zero pixels in local integer coordinates, end-exclusive).
    """
  ss = SUPERSAMPLE
  r = diameter / 2.0
  ca, sa = math.cos(angle), math.sin(angle)
  rot = np.array([[ca, sa], [-sa, ca]]) * r  # row vectors: p @ rot
  polys = [(p @ rot, f) for p, f in _UNIT_SHAPE_LIST[shape_idx]]
  lo = polys[0][0].min(axis=0)
  hi = polys[0][0].max(axis=0)
  frac = rng.random(2)  # random sub-pixel offset
  shift = frac - lo
  w = int(math.ceil(hi[0] + shift[0]))
  h = int(math.ceil(hi[1] + shift[1]))
  canvas = Image.new('L', (w * ss, h * ss), 0)
  draw = ImageDraw.Draw(canvas)
  for p, f in polys:
    q = (p + shift) * ss - 0.5  # PIL samples supersample pixels at integer coords
    draw.polygon([tuple(v) for v in q.tolist()], fill=f)
  # Box-filter downsample (C code); any covered sub-pixel gives >= 15/255,
  # so "non-zero" below means "touched by the shape" at full resolution.
  small = canvas.reduce(ss)
  x0, y0, x1, y1 = small.getbbox()
  a = np.asarray(small, dtype=np.float32) * np.float32(1.0 / 255.0)
  return a, (y0, x0, y1, x1)



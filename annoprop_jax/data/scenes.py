"""Procedural synthetic "scenes" dataset: coloured shapes on textured backgrounds.

Pure numpy + PIL, deterministic and fast (a 64x64 scene takes well under a
millisecond).  Two kinds of examples are produced:

* :func:`render_scene` -- several shapes placed at random with limited mutual
  occlusion, with boxes, labels and a spatial caption;
* :func:`render_single_object` -- one roughly centred shape (classification).

Both return ``{"image": uint8 (H, W, 3), "boxes": float32 (n, 4),
"labels": int32 (n,), "caption": str}``.  Boxes are ``(ymin, xmin, ymax,
xmax)`` normalised to ``[0, 1]`` (tfds ``BBoxFeature`` order) and are the
tight box of each object's full (unoccluded) anti-aliased mask: every pixel
with non-zero coverage lies inside it, so ``ymax = (last_row + 1) / H``.
Labels index into :data:`SHAPES`, in drawing order (later objects are drawn
on top of earlier ones).

Output depends only on ``(spec, seed, index)``; randomness comes from
``np.random.default_rng([seed, index, kind])`` and never from global state.

Run ``python -m annoprop_jax.data.scenes out.png [objects.png]`` to render a
preview grid.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES",
    "COLOURS",
    "TEXTURES",
    "SceneSpec",
    "render_scene",
    "render_single_object",
]

# ---------------------------------------------------------------------------
# Vocabulary.
# ---------------------------------------------------------------------------

SHAPES: Tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "heart",
    "arrow",
    "crescent",
    "semicircle",
    "bar",
    "diamond",
    "l-shape",
)

_PALETTE: Tuple[Tuple[str, Tuple[int, int, int]], ...] = (
    ("red", (220, 30, 35)),
    ("green", (35, 165, 50)),
    ("blue", (35, 70, 225)),
    ("yellow", (245, 225, 35)),
    ("orange", (245, 135, 20)),
    ("purple", (130, 45, 175)),
    ("pink", (250, 135, 195)),
    ("cyan", (40, 215, 225)),
    ("white", (245, 245, 245)),
    ("black", (15, 15, 15)),
    ("brown", (125, 70, 25)),
    ("grey", (128, 128, 128)),
)
COLOURS: Tuple[str, ...] = tuple(name for name, _ in _PALETTE)
_PALETTE_RGB = np.array([rgb for _, rgb in _PALETTE], dtype=np.float32)

TEXTURES: Tuple[str, ...] = (
    "plain",
    "striped",
    "checkered",
    "dotted",
    "noisy",
    "gradient",
)

_SIZE_WORDS = ("small", "medium", "large")

_KIND_SCENE = 0
_KIND_SINGLE = 1

_SUPERSAMPLE = 4  # mask supersampling factor (per axis)
_PLACEMENT_TRIES = 12  # placement retries per object before dropping it
_MIN_OBJECT_CONTRAST = 110.0  # min RGB distance object colour <-> background
_MIN_TEXTURE_CONTRAST = 90.0  # min RGB distance of the two texture colours
_MAX_CAPTION_LEN = 159

# ---------------------------------------------------------------------------
# Spec.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """Parameters of the procedural scene distribution."""

    resolution: int = 64  # square images, pixels
    min_objects: int = 1
    max_objects: int = 5
    # Object size (diameter of the circle enclosing the shape under any
    # rotation) as a fraction of the image side, for scenes.
    object_size: Tuple[float, float] = (0.3, 0.55)
    # Same, for the single centred object images.
    single_object_size: Tuple[float, float] = (0.5, 0.8)
    # 0 = flat background colour, 1 = strongest texture contrast.
    texture_strength: float = 0.5
    # Per-channel uniform perturbation of the palette colour, as a fraction
    # of +-128 (0 = exact palette colour).
    colour_jitter: float = 0.15
    # Max fraction of an object's box area that boxes of later objects may
    # cover.
    max_occlusion: float = 0.5

    def validate(self) -> None:
        """Raises ``ValueError`` describing the first invalid field."""

        def is_int(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
                v, bool
            )

        if not is_int(self.resolution) or self.resolution < 16:
            raise ValueError(
                f"SceneSpec.resolution must be an int >= 16, got {self.resolution!r}"
            )
        if not is_int(self.min_objects) or self.min_objects < 1:
            raise ValueError(
                f"SceneSpec.min_objects must be an int >= 1, got {self.min_objects!r}"
            )
        if not is_int(self.max_objects) or self.max_objects < self.min_objects:
            raise ValueError(
                "SceneSpec.max_objects must be an int >= min_objects "
                f"({self.min_objects!r}), got {self.max_objects!r}"
            )
        for name in ("object_size", "single_object_size"):
            value = getattr(self, name)
            try:
                lo, hi = value
            except (TypeError, ValueError):
                raise ValueError(
                    f"SceneSpec.{name} must be a pair (lo, hi), got {value!r}"
                ) from None
            if not (is_num(lo) and is_num(hi)) or not (0.0 < lo <= hi <= 1.0):
                raise ValueError(
                    f"SceneSpec.{name} must satisfy 0 < lo <= hi <= 1, got {value!r}"
                )
        for name in ("texture_strength", "colour_jitter", "max_occlusion"):
            value = getattr(self, name)
            if not is_num(value) or not (0.0 <= float(value) <= 1.0):
                raise ValueError(f"SceneSpec.{name} must be in [0, 1], got {value!r}")


def _check_spec(spec: SceneSpec) -> None:
    # Validated on every call (~2 us): caching on the (hash-equal) spec would
    # conflate e.g. resolution=64 with the invalid resolution=64.0.
    if not isinstance(spec, SceneSpec):
        raise TypeError(f"expected a SceneSpec, got {type(spec).__name__}")
    spec.validate()


def _rng(seed: int, index: int, kind: int) -> np.random.Generator:
    seed, index = int(seed), int(index)
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([seed, index, kind])


# ---------------------------------------------------------------------------
# Unit shapes: lists of (polygon (k, 2) in (x, y), fill) drawn in order; the
# first polygon is filled with 255, later ones with their fill (0 = hole).
# Shapes are centred on their bounding box and scaled so every filled vertex
# lies within the unit circle (so any rotation fits in a diameter-2 box).
# ---------------------------------------------------------------------------


def _circle_pts(n: int, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _arc(cx, cy, r, a0, a1, n) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _build_unit_shapes() -> Dict[str, List[Tuple[np.ndarray, int]]]:
    s: Dict[str, List[Tuple[np.ndarray, int]]] = {}
    s["circle"] = [(_circle_pts(48), 255)]
    s["square"] = [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 255)]
    s["triangle"] = [
        (
            np.array(
                [[math.cos(a), math.sin(a)] for a in np.deg2rad([-90, 30, 150])], float
            ),
            255,
        )
    ]
    star = []
    for k in range(10):
        a = np.deg2rad(-90 + 36 * k)
        r = 1.0 if k % 2 == 0 else 0.42
        star.append([r * math.cos(a), r * math.sin(a)])
    s["star"] = [(np.array(star), 255)]
    s["ring"] = [(_circle_pts(48), 255), (_circle_pts(40, 0.56), 0)]
    w = 0.32
    s["cross"] = [
        (
            np.array(
                [
                    [-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w],
                    [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w],
                ],
                float,
            ),
            255,
        )
    ]
    t = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    hx = 16.0 * np.sin(t) ** 3
    hy = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    s["heart"] = [(np.stack([hx, hy], axis=1), 255)]
    s["arrow"] = [
        (
            np.array(
                [
                    [-1.0, -0.24], [0.05, -0.24], [0.05, -0.62], [1.0, 0.0],
                    [0.05, 0.62], [0.05, 0.24], [-1.0, 0.24],
                ]
            ),
            255,
        )
    ]
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
    s["crescent"] = [(np.concatenate([outer, inner[1:-1]]), 255)]
    s["semicircle"] = [(_arc(0.0, 0.0, 1.0, 0.0, np.pi, 33), 255)]
    s["bar"] = [(np.array([[-1, -0.3], [1, -0.3], [1, 0.3], [-1, 0.3]], float), 255)]
    s["diamond"] = [(np.array([[0, -1], [0.55, 0], [0, 1], [-0.55, 0]], float), 255)]
    s["l-shape"] = [
        (
            np.array(
                [[0, 0], [0.42, 0], [0.42, 0.58], [0.9, 0.58], [0.9, 1.0], [0, 1.0]],
                float,
            ),
            255,
        )
    ]

    out: Dict[str, List[Tuple[np.ndarray, int]]] = {}
    for name, polys in s.items():
        filled = np.concatenate([p for p, f in polys if f])
        centre = (filled.min(axis=0) + filled.max(axis=0)) / 2.0
        radius = np.sqrt(((filled - centre) ** 2).sum(axis=1)).max()
        out[name] = [
            (((p - centre) / radius).astype(np.float64), f) for p, f in polys
        ]
    return out


_UNIT_SHAPES = _build_unit_shapes()
assert set(_UNIT_SHAPES) == set(SHAPES)
_UNIT_SHAPE_LIST = [_UNIT_SHAPES[name] for name in SHAPES]


# ---------------------------------------------------------------------------
# Rendering helpers.
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _grid(res: int) -> Tuple[np.ndarray, np.ndarray]:
    c = np.arange(res, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(c, c, indexing="ij")
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _texture_pattern(rng: np.random.Generator, texture: str, res: int) -> np.ndarray:
    """A (res, res) float32 mixing weight in [0, 1] (0 = base colour)."""
    if texture == "plain":
        return np.zeros((res, res), np.float32)
    yy, xx = _grid(res)
    scale = res / 64.0
    theta = rng.uniform(0.0, np.pi)
    c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    u = xx * c + yy * s
    if texture == "gradient":
        v = u - u.min()
        return v / max(float(v.max()), 1e-6)
    v = yy * c - xx * s
    if texture == "striped":
        period = rng.uniform(6.0, 14.0) * scale
        phase = rng.uniform(0.0, 2.0 * np.pi)
        return np.clip(0.5 + 2.5 * np.sin(u * np.float32(2 * np.pi / period) + phase), 0, 1)
    if texture == "checkered":
        period = rng.uniform(6.0, 12.0) * scale
        off = rng.uniform(0.0, period, size=2)
        return ((np.floor((u + off[0]) / period) + np.floor((v + off[1]) / period)) % 2).astype(
            np.float32
        )
    if texture == "dotted":
        period = rng.uniform(7.0, 12.0) * scale
        radius = period * rng.uniform(0.18, 0.3)
        off = rng.uniform(0.0, period, size=2)
        du = (u + off[0]) % period - period / 2
        dv = (v + off[1]) % period - period / 2
        d = np.sqrt(du * du + dv * dv)
        return np.clip(radius + 0.5 - d, 0, 1).astype(np.float32)
    if texture == "noisy":
        low = rng.random((6, 6), dtype=np.float32)
        smooth = np.asarray(
            Image.fromarray(low).resize((res, res), Image.BILINEAR), np.float32
        )
        fine = rng.random((res, res), dtype=np.float32)
        return 0.5 * smooth + 0.5 * fine
    raise ValueError(f"unknown texture {texture!r}")


def _render_background(
    rng: np.random.Generator, spec: SceneSpec
) -> Tuple[np.ndarray, int, List[np.ndarray]]:
    """Returns (float32 image (H, W, 3), texture index, background colours)."""
    res = spec.resolution
    tex = int(rng.integers(len(TEXTURES)))
    c0 = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
    if TEXTURES[tex] == "plain":
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


def _pick_colour(
    rng: np.random.Generator, spec: SceneSpec, bg_colours: Sequence[np.ndarray]
) -> Tuple[int, np.ndarray]:
    """A named colour (+ jitter) contrasting with all background colours."""
    best, best_d = None, -1.0
    for _ in range(24):
        ci = int(rng.integers(len(COLOURS)))
        rgb = _PALETTE_RGB[ci] + rng.uniform(-1.0, 1.0, size=3).astype(np.float32) * (
            np.float32(spec.colour_jitter * 128.0)
        )
        rgb = np.clip(rgb, 0.0, 255.0)
        d = min(_dist(rgb, b) for b in bg_colours)
        if d >= _MIN_OBJECT_CONTRAST:
            return ci, rgb
        if d > best_d:
            best, best_d = (ci, rgb), d
    return best


def _render_mask(
    rng: np.random.Generator, shape_idx: int, diameter: float, angle: float
) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """Anti-aliased coverage mask of a rotated shape in its local box.

    Returns (alpha float32 (h, w) in [0, 1], tight box (y0, x0, y1, x1) of the
    non-zero pixels in local integer coordinates, end-exclusive).
    """
    ss = _SUPERSAMPLE
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
    canvas = Image.new("L", (w * ss, h * ss), 0)
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


def _composite(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray, ty: int, tx: int) -> None:
    h, w = alpha.shape
    region = img[ty : ty + h, tx : tx + w]
    region += alpha[..., None] * (colour - region)


def _size_word(size: float, size_range: Tuple[float, float]) -> str:
    lo, hi = size_range
    if hi - lo <= 1e-9:
        return "medium"
    f = (size - lo) / (hi - lo)
    return _SIZE_WORDS[min(2, max(0, int(f * 3.0)))]


def _relation(a_box: np.ndarray, b_box: np.ndarray) -> str:
    """Spatial relation of object a w.r.t. object b (from box centres)."""
    ay, ax = (a_box[0] + a_box[2]) / 2, (a_box[1] + a_box[3]) / 2
    by, bx = (b_box[0] + b_box[2]) / 2, (b_box[1] + b_box[3]) / 2
    if abs(ax - bx) >= abs(ay - by):
        return "left of" if ax < bx else "right of"
    return "above" if ay < by else "below"


def _finish_image(img: np.ndarray) -> np.ndarray:
    return np.clip(img + 0.5, 0.0, 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------


def render_scene(spec: SceneSpec, seed: int, index: int) -> dict:
    """Renders scene ``index`` of the dataset with parameters ``spec``/``seed``.

    Objects are drawn in order (later ones on top).  Placements that would
    make the boxes of later objects cover more than ``spec.max_occlusion`` of
    an earlier object's box are retried and, failing that, the object is
    dropped (the first object is always kept), so fewer than the sampled
    number of objects may appear.
    """
    _check_spec(spec)
    rng = _rng(seed, index, _KIND_SCENE)
    res = spec.resolution
    img, tex, bg_colours = _render_background(rng, spec)
    n_target = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    lo, hi = spec.object_size
    max_diam = res - 1.0  # leaves room for the sub-pixel offset

    boxes: List[Tuple[int, int, int, int]] = []  # pixel boxes, end-exclusive
    covered: List[np.ndarray] = []  # per object: bool mask of box covered by later boxes
    labels: List[int] = []
    colour_ids: List[int] = []
    sizes: List[float] = []
    for _ in range(n_target):
        shape_idx = int(rng.integers(len(SHAPES)))
        colour_idx, colour = _pick_colour(rng, spec, bg_colours)
        size = float(rng.uniform(lo, hi))
        angle = float(rng.uniform(0.0, 2.0 * np.pi))
        alpha, (by0, bx0, by1, bx1) = _render_mask(rng, shape_idx, min(size * res, max_diam), angle)
        h, w = alpha.shape
        placed = None
        for _try in range(_PLACEMENT_TRIES):
            ty = int(rng.integers(0, res - h + 1))
            tx = int(rng.integers(0, res - w + 1))
            nb = (ty + by0, tx + bx0, ty + by1, tx + bx1)
            ok = True
            updates = []
            for (y0, x0, y1, x1), cov in zip(boxes, covered):
                iy0, ix0 = max(y0, nb[0]), max(x0, nb[1])
                iy1, ix1 = min(y1, nb[2]), min(x1, nb[3])
                if iy0 >= iy1 or ix0 >= ix1:
                    updates.append(None)
                    continue
                new_cov = cov.copy()
                new_cov[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = True
                if np.count_nonzero(new_cov) > spec.max_occlusion * new_cov.size:
                    ok = False
                    break
                updates.append(new_cov)
            if ok:
                placed = (ty, tx, nb, updates)
                break
        if placed is None:
            continue  # drop this object
        ty, tx, nb, updates = placed
        for i, u in enumerate(updates):
            if u is not None:
                covered[i] = u
        _composite(img, alpha, colour, ty, tx)
        boxes.append(nb)
        covered.append(np.zeros((nb[2] - nb[0], nb[3] - nb[1]), bool))
        labels.append(shape_idx)
        colour_ids.append(colour_idx)
        sizes.append(size)

    boxes_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / np.float32(res)
    caption = _scene_caption(boxes_arr, labels, colour_ids, sizes, spec.object_size, tex)
    return {
        "image": _finish_image(img),
        "boxes": boxes_arr,
        "labels": np.asarray(labels, dtype=np.int32),
        "caption": caption,
    }


def _phrase(size_word: str, colour_idx: int, shape_idx: int) -> str:
    return f"a {size_word} {COLOURS[colour_idx]} {SHAPES[shape_idx]}"


def _scene_caption(boxes, labels, colour_ids, sizes, size_range, tex) -> str:
    n = len(labels)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # Describe up to 3 objects, largest first (ties: drawing order).
    order = sorted(range(n), key=lambda i: (-float(areas[i]), i))[:3]
    phrases = [_phrase(_size_word(sizes[i], size_range), colour_ids[i], labels[i]) for i in order]
    tail = f" on a {TEXTURES[tex]} background"
    text = phrases[0]
    if n >= 2:
        a, b = order[0], order[1]
        text = f"{phrases[0]} {_relation(boxes[a], boxes[b])} {phrases[1]}"
    if n >= 3:
        a, c = order[0], order[2]
        ref = f"the {COLOURS[colour_ids[a]]} {SHAPES[labels[a]]}"
        longer = f"{text} and {phrases[2]} {_relation(boxes[c], boxes[a])} {ref}"
        if len(longer) + len(tail) <= _MAX_CAPTION_LEN:
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
    alpha, (by0, bx0, by1, bx1) = _render_mask(rng, shape_idx, min(size * res, res - 1.0), angle)
    h, w = alpha.shape
    cy, cx = (res / 2.0 + rng.uniform(-0.05, 0.05, size=2) * res).tolist()
    # Centre the tight box (not the local canvas) on (cy, cx).
    ty = int(round(cy - (by0 + by1) / 2.0))
    tx = int(round(cx - (bx0 + bx1) / 2.0))
    ty = min(max(ty, 0), res - h)
    tx = min(max(tx, 0), res - w)
    _composite(img, alpha, colour, ty, tx)
    box = np.array([[ty + by0, tx + bx0, ty + by1, tx + bx1]], np.float32) / np.float32(res)
    caption = (
        f"{_phrase(_size_word(size, spec.single_object_size), colour_idx, shape_idx)}"
        f" on a {TEXTURES[tex]} background"
    )
    return {
        "image": _finish_image(img),
        "boxes": box,
        "labels": np.array([shape_idx], np.int32),
        "caption": caption,
    }


# ---------------------------------------------------------------------------
# Preview.
# ---------------------------------------------------------------------------


def _grid_image(images: Sequence[np.ndarray], rows: int, cols: int, pad: int = 2) -> np.ndarray:
    h, w = images[0].shape[:2]
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for k, im in enumerate(images[: rows * cols]):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = im
    return out


def _main(argv: Sequence[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(
            "usage: python -m annoprop_jax.data.scenes SCENES.png [OBJECTS.png] [SEED] [SCALE]\n"
            "  without OBJECTS.png both 4x8 grids are stacked into SCENES.png"
        )
    spec = SceneSpec()
    seed = int(argv[3]) if len(argv) > 3 else 0
    scale = int(argv[4]) if len(argv) > 4 else 2
    scenes = [render_scene(spec, seed, i) for i in range(32)]
    objects = [render_single_object(spec, seed, i) for i in range(32)]
    g_s = _grid_image([e["image"] for e in scenes], 4, 8)
    g_o = _grid_image([e["image"] for e in objects], 4, 8)

    def save(arr: np.ndarray, path: str) -> None:
        im = Image.fromarray(arr)
        if scale > 1:
            im = im.resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
        im.save(path)

    if len(argv) > 2 and argv[2]:
        save(g_s, argv[1])
        save(g_o, argv[2])
    else:
        save(np.concatenate([g_s, np.full((8, g_s.shape[1], 3), 255, np.uint8), g_o]), argv[1])
    for k, e in enumerate(scenes[:8]):
        print(f"scene {k}: {e['caption']}")
    for k, e in enumerate(objects[:8]):
        print(f"object {k}: {e['caption']}")


if __name__ == "__main__":
    import sys

    _main(sys.argv)

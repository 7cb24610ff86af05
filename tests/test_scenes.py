"""Tests for the procedural scenes dataset (annoprop_jax.data.scenes)."""

import collections
import dataclasses

import numpy as np
import pytest

from annoprop_jax.data import shapes
from annoprop_jax.data.scenes import SceneSpec, render_scene, render_single_object
from annoprop_jax.data.shapes import COLOURS, SHAPES, TEXTURES

SIZE_WORDS = ('small', 'medium', 'large')
RELATIONS = ('left of', 'right of', 'above', 'below')
FLAT = SceneSpec(texture_strength=0.0)


def _pixel_boxes(boxes, res):
  """Normalised (ymin, xmin, ymax, xmax) -> integer pixel boxes (end-exclusive)."""
  return np.rint(np.asarray(boxes) * res).astype(int)


def _parse_phrase(words):
  """['a', size, colour, shape] -> (size, colour, shape)."""
  assert words[0] == 'a', words
  assert words[1] in SIZE_WORDS, words
  assert words[2] in COLOURS, words
  assert words[3] in SHAPES, words
  return words[1], words[2], words[3]


def _check_example(ex, res, max_objects):
  img, boxes, labels, caption = ex['image'], ex['boxes'], ex['labels'], ex['caption']
  assert img.dtype == np.uint8 and img.shape == (res, res, 3)
  assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
  assert labels.dtype == np.int32 and labels.shape == (boxes.shape[0],)
  assert len(labels) >= 1 and len(labels) <= max_objects
  assert np.all(boxes >= 0.0) and np.all(boxes <= 1.0)
  assert np.all(boxes[:, 0] < boxes[:, 2]) and np.all(boxes[:, 1] < boxes[:, 3])
  assert np.all(labels >= 0) and np.all(labels < len(SHAPES))
  # Box coordinates are exact multiples of one pixel.
  np.testing.assert_allclose(boxes * res, np.rint(boxes * res), atol=1e-4)
  assert isinstance(caption, str) and caption
  assert caption.isascii() and caption == caption.lower()
  assert len(caption) < 160
  assert caption.endswith(' background')
  assert caption.split()[-2] in TEXTURES
  size, colour, shape = _parse_phrase(caption.split()[:4])
  assert SHAPES.index(shape) in labels.tolist()


# ---------------------------------------------------------------------------
# Determinism.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('fn', [render_scene, render_single_object])
def test_deterministic(fn):
  spec = SceneSpec()
  a, b = fn(spec, 3, 17), fn(spec, 3, 17)
  assert a['image'].tobytes() == b['image'].tobytes()
  assert a['boxes'].tobytes() == b['boxes'].tobytes()
  assert a['labels'].tobytes() == b['labels'].tobytes()
  assert a['caption'] == b['caption']
  # Interleaving other renders (and touching global RNG) changes nothing.
  np.random.seed(123)
  fn(spec, 5, 2)
  np.random.rand(10)
  c = fn(spec, 3, 17)
  assert c['image'].tobytes() == a['image'].tobytes()


@pytest.mark.parametrize('fn', [render_scene, render_single_object])
def test_different_inputs_differ(fn):
  spec = SceneSpec()
  base = fn(spec, 0, 0)['image'].tobytes()
  assert fn(spec, 0, 1)['image'].tobytes() != base
  assert fn(spec, 1, 0)['image'].tobytes() != base
  images = {fn(spec, 0, i)['image'].tobytes() for i in range(30)}
  assert len(images) == 30


def test_scene_and_single_object_streams_differ():
  spec = SceneSpec()
  assert (render_scene(spec, 0, 0)['image'].tobytes() != render_single_object(spec, 0,
                                                                              0)['image'].tobytes())


# ---------------------------------------------------------------------------
# Structure, boxes and captions.
# ---------------------------------------------------------------------------


def test_scene_structure_and_caption():
  spec = SceneSpec()
  counts = collections.Counter()
  for i in range(80):
    ex = render_scene(spec, 0, i)
    _check_example(ex, spec.resolution, spec.max_objects)
    counts[len(ex['labels'])] += 1
    n = len(ex['labels'])
    words = ex['caption'].split()
    if n == 1:
      assert len(words) == 8  # "a size colour shape on a texture background"
    else:
      assert any(rel in ex['caption'] for rel in RELATIONS)
      # Second described object follows the relation.
      rest = ex['caption'].split(' left of ', 1)[-1] if ' left of ' in ex['caption'] else None
      if rest is not None and not rest.startswith('the '):
        _parse_phrase(rest.split()[:4])
    if n >= 3:
      assert ' and a ' in ex['caption']
  # The number of objects varies and multi-object scenes are common.
  assert len(counts) >= 4
  assert sum(v for k, v in counts.items() if k >= 2) >= 40


@pytest.mark.parametrize('res', [16, 32, 100, 128])
def test_resolutions(res):
  spec = SceneSpec(resolution=res)
  for i in range(10):
    _check_example(render_scene(spec, 2, i), res, spec.max_objects)
    _check_example(render_single_object(spec, 2, i), res, 1)


def test_extreme_specs():
  spec = SceneSpec(
      resolution=16,
      min_objects=3,
      max_objects=8,
      object_size=(1.0, 1.0),
      single_object_size=(1.0, 1.0),
      texture_strength=1.0,
      colour_jitter=1.0,
      max_occlusion=0.0,
  )
  for i in range(10):
    ex = render_scene(spec, 0, i)
    _check_example(ex, 16, 8)
    assert len(ex['labels']) == 1  # nothing else fits without occlusion
    _check_example(render_single_object(spec, 0, i), 16, 1)


@pytest.mark.parametrize('fn', [render_scene, render_single_object])
def test_boxes_match_drawn_pixels_on_flat_background(fn):
  res = FLAT.resolution
  for i in range(60):
    ex = fn(FLAT, 4, i)
    img = ex['image'].astype(np.int32)
    pboxes = _pixel_boxes(ex['boxes'], res)
    union = np.zeros((res, res), bool)
    union_slack = np.zeros((res, res), bool)
    for y0, x0, y1, x1 in pboxes:
      union[y0:y1, x0:x1] = True
      union_slack[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
    outside = img[~union]
    if len(outside) == 0:
      continue
    bg = outside[0]
    # Flat background: everything outside the (slack) boxes is one colour.
    assert np.all(img[~union_slack] == bg), f'example {i}: drawn pixels outside boxes'
    differs = np.any(img != bg, axis=-1)
    # With exact tight boxes even the slack is unnecessary.
    assert not np.any(differs & ~union), f'example {i}'
    for k, (y0, x0, y1, x1) in enumerate(pboxes):
      region = differs[y0:y1, x0:x1]
      assert region.any(), f'example {i}, box {k} is empty'
      # Tightness: each border row/column of the box has drawn pixels.
      assert region[0].any() and region[-1].any(), f'example {i}, box {k}'
      assert region[:, 0].any() and region[:, -1].any(), f'example {i}, box {k}'


def test_occlusion_limit_respected():
  for max_occ in (0.5, 0.2):
    spec = SceneSpec(max_occlusion=max_occ, min_objects=4, max_objects=6)
    res = spec.resolution
    for i in range(40):
      ex = render_scene(spec, 6, i)
      pboxes = _pixel_boxes(ex['boxes'], res)
      for j, (y0, x0, y1, x1) in enumerate(pboxes):
        cover = np.zeros((res, res), bool)
        for ly0, lx0, ly1, lx1 in pboxes[j + 1:]:
          cover[ly0:ly1, lx0:lx1] = True
        frac = cover[y0:y1, x0:x1].mean()
        assert frac <= max_occ + 1e-9, (i, j, frac)


def test_caption_relation_matches_boxes():
  spec = SceneSpec(min_objects=2, max_objects=2, max_occlusion=0.3)
  checked = 0
  for i in range(150):
    ex = render_scene(spec, 8, i)
    labels = ex['labels'].tolist()
    if len(labels) != 2 or labels[0] == labels[1]:
      continue
    cap = ex['caption']
    rel = next(r for r in RELATIONS if f' {r} a ' in cap)
    first, second = cap.split(' on a ')[0].split(f' {rel} ')
    s1, s2 = first.split()[3], second.split()[3]
    b1 = ex['boxes'][labels.index(SHAPES.index(s1))]
    b2 = ex['boxes'][labels.index(SHAPES.index(s2))]
    c1 = ((b1[0] + b1[2]) / 2, (b1[1] + b1[3]) / 2)
    c2 = ((b2[0] + b2[2]) / 2, (b2[1] + b2[3]) / 2)
    dy, dx = c1[0] - c2[0], c1[1] - c2[1]
    if abs(dx) >= abs(dy):
      expected = 'left of' if dx < 0 else 'right of'
    else:
      expected = 'above' if dy < 0 else 'below'
    assert rel == expected, (i, cap, b1, b2)
    checked += 1
  assert checked >= 50


def test_colour_word_matches_pixels_without_jitter():
  spec = SceneSpec(texture_strength=0.0, colour_jitter=0.0)
  palette = dict(zip(COLOURS, shapes.PALETTE_RGB.astype(np.int32)))
  for i in range(40):
    ex = render_single_object(spec, 9, i)
    colour = ex['caption'].split()[2]
    y0, x0, y1, x1 = _pixel_boxes(ex['boxes'], spec.resolution)[0]
    crop = ex['image'][y0:y1, x0:x1].reshape(-1, 3).astype(np.int32)
    # Fully covered pixels have exactly the palette colour.
    assert np.any(np.all(crop == palette[colour], axis=-1)), (i, ex['caption'])


def test_single_object_is_centred_and_consistent():
  spec = SceneSpec()
  lo, hi = spec.single_object_size
  for i in range(80):
    ex = render_single_object(spec, 5, i)
    _check_example(ex, spec.resolution, 1)
    assert ex['boxes'].shape == (1, 4) and ex['labels'].shape == (1,)
    y0, x0, y1, x1 = ex['boxes'][0]
    assert abs((y0 + y1) / 2 - 0.5) <= 0.1 and abs((x0 + x1) / 2 - 0.5) <= 0.1
    words = ex['caption'].split()
    assert len(words) == 8
    assert SHAPES[int(ex['labels'][0])] == words[3]
    # Objects are large: the longer box side is at least ~half the size range.
    assert max(y1 - y0, x1 - x0) >= 0.5 * lo
    assert max(y1 - y0, x1 - x0) <= hi + 2.0 / spec.resolution


def test_object_contrasts_with_background():
  for i in range(40):
    ex = render_single_object(FLAT, 11, i)
    img = ex['image'].astype(np.float64)
    bg = img[0, 0]
    y0, x0, y1, x1 = _pixel_boxes(ex['boxes'], FLAT.resolution)[0]
    crop = img[y0:y1, x0:x1].reshape(-1, 3)
    dist = np.sqrt(((crop - bg)**2).sum(-1))
    assert dist.max() >= 100.0, (i, ex['caption'])


# ---------------------------------------------------------------------------
# Spec validation.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    'kwargs',
    [
        dict(min_objects=4, max_objects=3),
        dict(min_objects=0),
        dict(resolution=8),
        dict(resolution=15),
        dict(resolution=64.0),
        dict(object_size=(0.0, 0.5)),
        dict(object_size=(0.3, 1.2)),
        dict(object_size=(0.6, 0.4)),
        dict(object_size=(0.5,)),
        dict(single_object_size=(-0.1, 0.5)),
        dict(single_object_size=(0.5, 1.01)),
        dict(texture_strength=1.5),
        dict(texture_strength=-0.1),
        dict(colour_jitter=-0.01),
        dict(max_occlusion=1.1),
    ],
)
def test_validate_rejects_bad_specs(kwargs):
  spec = SceneSpec(**kwargs)
  with pytest.raises(ValueError):
    spec.validate()
  with pytest.raises(ValueError):
    render_scene(spec, 0, 0)
  with pytest.raises(ValueError):
    render_single_object(spec, 0, 0)


def test_validate_accepts_good_specs():
  SceneSpec().validate()
  SceneSpec(resolution=16, object_size=(1.0, 1.0), max_occlusion=0.0).validate()
  SceneSpec(min_objects=3, max_objects=3, texture_strength=1.0).validate()
  assert dataclasses.is_dataclass(SceneSpec)
  with pytest.raises(dataclasses.FrozenInstanceError):
    SceneSpec().resolution = 32  # type: ignore[misc]


def test_negative_seed_rejected():
  with pytest.raises(ValueError):
    render_scene(SceneSpec(), -1, 0)


# ---------------------------------------------------------------------------
# Vocabulary and balance.
# ---------------------------------------------------------------------------


def test_vocabulary():
  assert len(SHAPES) >= 12 and len(set(SHAPES)) == len(SHAPES)
  assert len(COLOURS) >= 10 and len(set(COLOURS)) == len(COLOURS)
  assert set(TEXTURES) >= {'plain', 'striped', 'checkered', 'dotted', 'noisy', 'gradient'}
  for word in SHAPES + COLOURS + TEXTURES:
    assert word.isascii() and word == word.lower() and ' ' not in word


def test_class_balance():
  spec = SceneSpec()
  scene_labels, single_labels = collections.Counter(), collections.Counter()
  colours, textures = collections.Counter(), collections.Counter()
  for i in range(300):
    ex = render_scene(spec, 21, i)
    scene_labels.update(ex['labels'].tolist())
    words = ex['caption'].split()
    colours.update(w for w in words if w in COLOURS)
    textures[words[-2]] += 1
    ex = render_single_object(spec, 21, i)
    single_labels.update(ex['labels'].tolist())
    textures[ex['caption'].split()[-2]] += 1
  n = len(SHAPES)
  assert set(scene_labels) == set(range(n))
  assert set(single_labels) == set(range(n))
  assert set(colours) == set(COLOURS)
  assert set(textures) == set(TEXTURES)
  # Roughly uniform: no class below a third of its expected frequency.
  total = sum(scene_labels.values())
  assert min(scene_labels.values()) >= total / n / 3
  assert min(single_labels.values()) >= 300 / n / 3


def test_preview_draws_the_scenes_then_the_objects(tmp_path, capsys):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from annoprop_jax.data import scenes_preview  # pylint: disable=g-import-not-at-top
  scenes_preview.main(['preview', str(tmp_path / 'grid.png'), '', '3', '1'])
  grid = np.asarray(Image.open(tmp_path / 'grid.png'))
  cell, pad = SceneSpec().resolution, 2
  rows_px = 4 * (cell + pad) + pad
  assert grid.shape == (2 * rows_px + 8, 8 * (cell + pad) + pad, 3)
  index = 10                     # row 1, column 2 of each grid (rows of 8)
  y, x = pad + 1 * (cell + pad), pad + 2 * (cell + pad)
  np.testing.assert_array_equal(grid[y:y + cell, x:x + cell],
                                render_scene(SceneSpec(), 3, index)['image'])
  y += rows_px + 8
  np.testing.assert_array_equal(grid[y:y + cell, x:x + cell],
                                render_single_object(SceneSpec(), 3, index)['image'])
  assert capsys.readouterr().out.startswith(f"scene 0: {render_scene(SceneSpec(), 3, 0)['caption']}")

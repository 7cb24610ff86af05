import numpy as np
import pytest

from annoprop_jax.data import stream_spec
from annoprop_jax.data import views


def _coordinate_image(size=64):
  """Red encodes the row, green the column: pixels tell where they came from."""
  y, x = np.mgrid[:size, :size]
  return np.stack([y * 4, x * 4, np.full_like(y, 128)], -1).astype(np.uint8)


def test_views_record_where_their_pixels_came_from():
  image = _coordinate_image()
  spec = stream_spec.ViewSpec(num=4, size=16, scale=(0.1, 0.6), flip=True)
  rng = np.random.default_rng(0)
  for _ in range(5):
    out = views.make_views(image, rng, spec)
    assert out['images'].shape == (4, 16, 16, 3) and out['images'].dtype == np.uint8
    for v in range(4):
      y0, x0, y1, x1 = out['boxes'][v]
      px = out['images'][v]
      if out['flips'][v]:
        px = px[:, ::-1]
      # The centre of output pixel (r, c) maps to this source position (in pixels).
      r, c = 3, 12
      src_y = (y0 + (r + 0.5) / 16 * (y1 - y0)) * 64 - 0.5
      src_x = (x0 + (c + 0.5) / 16 * (x1 - x0)) * 64 - 0.5
      assert abs(px[r, c, 0] / 4 - src_y) < 1.5
      assert abs(px[r, c, 1] / 4 - src_x) < 1.5


def test_moves_put_the_target_view_where_its_pixels_are_in_the_source_view():
  # The coordinate image tells each view pixel's source position; the move i -> j must place
  # view j's pixels at the same positions in view i's (possibly mirrored) frame.
  image = _coordinate_image(64)
  spec = stream_spec.ViewSpec(num=3, size=32, scale=(0.2, 0.7), flip=True)
  for seed in range(8):
    out = views.make_views(image, np.random.default_rng(seed), spec)
    for i in range(3):
      for j in range(3):
        y0, x0, y1, x1 = out['moves'][i, j]
        r, c = 16, 3             # a pixel of view j's array
        # Where it lies across the move's box: a flip of j or of i's frame reverses x.
        cj = 31 - c if out['flips'][j] != out['flips'][i] else c
        # Its position in view i's frame, as the move says, in view i's pixel units.
        fy = y0 + (r + 0.5) / 32 * (y1 - y0)
        fx = x0 + (cj + 0.5) / 32 * (x1 - x0)
        ri, ci = fy * 32 - 0.5, fx * 32 - 0.5
        if not (0 <= ri <= 31 and 0 <= ci <= 31):
          continue               # outside view i
        want = out['images'][j][r, c, :2].astype(float)
        got = out['images'][i][int(round(ri)), int(round(ci)), :2].astype(float)
        # One source pixel is 4 grey levels; rounding to view i's grid moves < 1.5 source pixels.
        assert np.all(np.abs(got - want) <= 4 * 2), (seed, i, j, got, want)
    for i in range(3):
      np.testing.assert_allclose(out['moves'][i, i], [0, 0, 1, 1], atol=1e-6)


def test_crop_boxes_respect_scale_and_ratio():
  rng = np.random.default_rng(0)
  for _ in range(200):
    b = views.sample_crop_box(rng, (64, 64), (0.05, 1.0), (3 / 4, 4 / 3))
    assert 0 <= b[0] < b[2] <= 1 + 1e-6 and 0 <= b[1] < b[3] <= 1 + 1e-6
    area = (b[2] - b[0]) * (b[3] - b[1])
    assert 0.05 - 1e-4 <= area <= 1 + 1e-4


def test_bad_spec():
  with pytest.raises(ValueError, match='scale'):
    stream_spec.ViewSpec(scale=(0.5, 0.2))
  with pytest.raises(ValueError, match='hue_jitter'):
    stream_spec.ViewSpec(hue_jitter=0.6)


def test_hue_rotation_turns_the_colour_wheel_and_keeps_greys():
  rgb = np.array([[255, 0, 0], [0, 255, 0], [90, 90, 90]], np.float32)
  # A third of the wheel: red -> green, green -> blue; grey is the rotation axis.
  np.testing.assert_allclose(views.rotate_hue(rgb, 1 / 3),
                             [[0, 255, 0], [0, 0, 255], [90, 90, 90]], atol=1e-3)
  np.testing.assert_allclose(views.rotate_hue(views.rotate_hue(rgb, 0.1), -0.1), rgb, atol=1e-3)


def test_hue_jitter_changes_hues_only_where_it_is_asked_for():
  red = np.full((32, 32, 3), 100, np.uint8)     # (200, 100, 100): every hue of it is in range
  red[..., 0] = 200
  spec = stream_spec.ViewSpec(num=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, hue_jitter=0.5)
  out = views.make_views(red, np.random.default_rng(0), spec)['images'].astype(float)
  assert np.ptp(out[:, 0, 0, 1]) > 50          # the green channel varies between views
  np.testing.assert_allclose(out.mean(-1), 400 / 3, atol=1)   # the grey level is kept
  plain = views.make_views(red, np.random.default_rng(0), stream_spec.ViewSpec(
      num=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False))['images']
  assert (plain == red).all()


def _sequential_jitter(pixels, rng, strength, hue, grayscale):
  """The jitter op by op on float pixels (the definition that colour_transform composes)."""
  ops = ((0, 1, 2) if strength > 0 else ()) + ((3,) if hue > 0 else ())
  luma = np.array([0.299, 0.587, 0.114])
  for op in (rng.permutation(ops) if ops else ()):
    if op == 3:
      pixels = views.rotate_hue(pixels, rng.uniform(-hue, hue))
      continue
    factor = rng.uniform(max(0.0, 1 - strength), 1 + strength)
    if op == 0:
      pixels = pixels * factor
    elif op == 1:
      pixels = (pixels - pixels.mean()) * factor + pixels.mean()
    else:
      grey = (pixels @ luma)[..., None]
      pixels = (pixels - grey) * factor + grey
  if grayscale > 0 and rng.uniform() < grayscale:
    pixels = np.repeat((pixels @ luma)[..., None], 3, axis=-1)
  return pixels


def test_one_affine_colour_map_is_the_jitter_ops_in_sequence():
  pixels = np.random.default_rng(0).uniform(0, 255, (16, 16, 3))
  for seed in range(20):
    a, b = views.colour_transform(np.random.default_rng(seed), 0.4, 0.2, 0.5,
                                  pixels.reshape(-1, 3).mean(0))
    want = _sequential_jitter(pixels, np.random.default_rng(seed), 0.4, 0.2, 0.5)
    np.testing.assert_allclose(pixels @ a.T + b, want, atol=1e-3)


def test_jittered_views_are_their_crops_through_the_colour_map():
  image = np.random.default_rng(1).integers(0, 256, (48, 48, 3)).astype(np.uint8)
  spec = stream_spec.ViewSpec(num=1, size=16, flip=False, colour_jitter=0.4, hue_jitter=0.3,
                        grayscale=0.3)
  for seed in range(10):
    rng = np.random.default_rng(seed)
    out = views.make_views(image, rng, spec)
    plain = views.crop(image, out['boxes'][0], 16).astype(np.float64)
    rng = np.random.default_rng(seed)                 # replay: the box, then the jitter draws
    views.sample_crop_box(rng, (48, 48), spec.scale, spec.ratio)
    want = np.clip(np.rint(_sequential_jitter(plain, rng, 0.4, 0.3, 0.3)), 0, 255)
    assert np.abs(out['images'][0] - want).max() <= 1


def test_crop_resamples_as_an_antialiased_bilinear_resize():
  from PIL import Image   # pylint: disable=g-import-not-at-top  # the reference resampler
  y, x = np.mgrid[:120, :160] / 12.0
  image = np.stack([127 + 100 * np.sin(y + x), 127 + 100 * np.cos(y * 1.3), 127 + 80 * np.sin(x)],
                   -1).astype(np.uint8)
  rng = np.random.default_rng(0)
  for size, scale in ((24, (0.3, 1.0)), (96, (0.05, 0.2)), (64, (0.2, 1.0))):
    for _ in range(5):
      box = views.sample_crop_box(rng, (120, 160), scale, (3 / 4, 4 / 3))
      y0, x0, y1, x1 = box
      want = np.asarray(Image.fromarray(image).resize(
          (size, size), Image.BILINEAR, box=(x0 * 160, y0 * 120, x1 * 160, y1 * 120)))
      assert np.abs(views.crop(image, box, size).astype(float) - want).mean() < 1.0
  # Shrinking a 2-pixel checkerboard 8x leaves its mean grey, not an aliased pattern.
  board = np.kron((np.indices((64, 64)).sum(0) % 2) * 255, np.ones((1, 1)))[..., None]
  shrunk = views.crop(np.repeat(board, 3, -1).astype(np.uint8), (0, 0, 1, 1), 8)
  assert np.abs(shrunk.astype(float) - 127.5).max() < 8

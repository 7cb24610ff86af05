import numpy as np
import pytest

from annoprop_jax.data import boxes
from annoprop_jax.data import views


def _coordinate_image(size=64):
  """Red encodes the row, green the column: pixels tell where they came from."""
  y, x = np.mgrid[:size, :size]
  return np.stack([y * 4, x * 4, np.full_like(y, 128)], -1).astype(np.uint8)


def test_views_record_where_their_pixels_came_from():
  image = _coordinate_image()
  spec = views.ViewSpec(num=4, size=16, scale=(0.1, 0.6), flip=True)
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


def test_moves_follow_boxes_and_flips():
  out = views.make_views(_coordinate_image(), np.random.default_rng(1),
                         views.ViewSpec(num=3, size=8, flip=True))
  np.testing.assert_allclose(out['moves'], boxes.moves(out['boxes'], out['flips']), atol=1e-6)
  for i in range(3):
    expected = [0, 0, 1, 1]
    np.testing.assert_allclose(out['moves'][i, i], expected, atol=1e-6)


def test_crop_boxes_respect_scale_and_ratio():
  rng = np.random.default_rng(0)
  for _ in range(200):
    b = views.sample_crop_box(rng, (64, 64), (0.05, 1.0), (3 / 4, 4 / 3))
    assert 0 <= b[0] < b[2] <= 1 + 1e-6 and 0 <= b[1] < b[3] <= 1 + 1e-6
    area = (b[2] - b[0]) * (b[3] - b[1])
    assert 0.05 - 1e-4 <= area <= 1 + 1e-4


def test_bad_spec():
  with pytest.raises(ValueError, match='scale'):
    views.ViewSpec(scale=(0.5, 0.2)).validate()
  with pytest.raises(ValueError, match='hue_jitter'):
    views.ViewSpec(hue_jitter=0.6).validate()


def test_hue_rotation_turns_the_colour_wheel_and_keeps_greys():
  rgb = np.array([[255, 0, 0], [0, 255, 0], [90, 90, 90]], np.float32)
  # A third of the wheel: red -> green, green -> blue; grey is the rotation axis.
  np.testing.assert_allclose(views.rotate_hue(rgb, 1 / 3),
                             [[0, 255, 0], [0, 0, 255], [90, 90, 90]], atol=1e-3)
  np.testing.assert_allclose(views.rotate_hue(views.rotate_hue(rgb, 0.1), -0.1), rgb, atol=1e-3)


def test_hue_jitter_changes_hues_only_where_it_is_asked_for():
  red = np.full((32, 32, 3), 100, np.uint8)     # (200, 100, 100): every hue of it is in range
  red[..., 0] = 200
  spec = views.ViewSpec(num=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, hue_jitter=0.5)
  out = views.make_views(red, np.random.default_rng(0), spec)['images'].astype(float)
  assert np.ptp(out[:, 0, 0, 1]) > 50          # the green channel varies between views
  np.testing.assert_allclose(out.mean(-1), 400 / 3, atol=1)   # the grey level is kept
  plain = views.make_views(red, np.random.default_rng(0), views.ViewSpec(
      num=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False))['images']
  assert (plain == red).all()

"""visualize: a value map peaks where its Q peaks, attention maps are the ViT's own attention,
and the pictures are drawn (test_diagnose draws those of a trained AB run)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax.data import boxes as boxes_lib
from annoprop_jax.evaluation import attention_maps
from annoprop_jax.evaluation import value_maps
from annoprop_jax.evaluation import visualize
from annoprop_jax.models import layer_norm
from annoprop_jax.models import vit


def test_value_map_of_a_hand_made_q_peaks_at_its_box():
  source = np.array([0.1, 0.2, 0.6, 0.9], np.float32)
  boxes = value_maps.target_boxes()
  where = (1, 6, 2)                                    # side 0.5, row 6, column 2
  wanted_move = boxes_lib.relative(source, boxes[where])

  def q_of_moves(moves):   # l = 1 is likely exactly for the move to the wanted box
    likely = np.exp(-20 * np.sum((moves - wanted_move) ** 2, axis=-1))
    return np.stack([1 - likely, likely], axis=-1)

  def p_of_boxes(target):
    likely = np.exp(-20 * np.sum((target - boxes[0, 0, 8]) ** 2, axis=-1))
    return np.stack([1 - likely, likely], axis=-1)

  vmap = value_maps.value_map(q_of_moves, source, 1, p_of_boxes)
  assert vmap.q.shape == vmap.p.shape == (3, 9, 9)
  assert vmap.peak() == where and vmap.q[where] == pytest.approx(1.0)
  # Centres 0.25 + 0.5 * (6, 2) / 8 = (0.625, 0.375), side 0.5.
  np.testing.assert_allclose(vmap.boxes[where], [0.375, 0.125, 0.875, 0.625], atol=1e-6)
  assert np.unravel_index(np.argmax(vmap.p), vmap.p.shape) == (0, 0, 8)
  # Drawn: one panel per box size and row, the source box, a colour bar.
  png = visualize.png_bytes(visualize.draw_value_map(np.zeros((64, 64, 3), np.uint8), vmap,
                                                     'class 1'))
  height, width, _ = visualize.image_array(png).shape
  assert 600 < width < 900 and 350 < height < 600


def _vit(pool):
  config = vit.EncoderConfig(patch_size=8, width=32, depth=2, num_heads=2, pool=pool, image_size=32)
  model = vit.ViT(config)
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8))['params']
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(treedef, [x + 0.3 * jax.random.normal(k, x.shape)
                                        for x, k in zip(leaves, keys)])
  return config, model, params


@pytest.mark.parametrize('pool', ['cls', 'mean'])
def test_attention_maps_are_the_last_blocks_attention(pool):
  """The maps' weights, applied to the block's values and output projection, give the block's
  own attention output (captured from the ViT) at the pooled query."""
  config, model, params = _vit(pool)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8))
  maps = attention_maps.last_block_attention(config, params, images)
  assert maps.shape == (2, 2, 4, 4)
  np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, rtol=1e-5)
  _, state = model.apply({'params': params}, images, mutable=['intermediates'],
                         capture_intermediates=lambda m, _: isinstance(
                             m, (layer_norm.LayerNorm, nn.MultiHeadDotProductAttention)))
  block = state['intermediates']['block1']
  y = block['LayerNorm_0']['__call__'][0]
  want = block['MultiHeadDotProductAttention_0']['__call__'][0]
  attention = params['block1']['MultiHeadDotProductAttention_0']
  v = jnp.einsum('btd,dhk->bthk', y, attention['value']['kernel']) + attention['value']['bias']
  weights = maps.reshape(2, 2, 16)
  if pool == 'cls':   # the CLS query's row: its own share s on itself, 1 - s times the map
    share = _cls_self_share(y, attention)[..., None]
    mixed = share * v[:, 0] + (1 - share) * jnp.einsum('bht,bthk->bhk', weights, v[:, 1:])
    want = want[:, 0]
  else:
    mixed = jnp.einsum('bht,bthk->bhk', weights, v)
    want = want.mean(axis=1)
  out = jnp.einsum('bhk,hkd->bd', mixed, attention['out']['kernel']) + attention['out']['bias']
  np.testing.assert_allclose(out, want, atol=2e-5)


def _cls_self_share(y, attention):
  """(B, heads) the CLS query's attention weight on the CLS token itself."""
  project = lambda name: (jnp.einsum('btd,dhk->bthk', y, attention[name]['kernel'])
                          + attention[name]['bias'])
  q, k = project('query'), project('key')
  logits = jnp.einsum('bhk,bthk->bht', q[:, 0], k) / jnp.sqrt(q.shape[-1])
  return jax.nn.softmax(logits, -1)[..., 0]


def test_default_source_box_surrounds_the_first_object():
  box = visualize.default_source_box(np.array([[0.4, 0.5, 0.6, 0.7]], np.float32))
  assert box[0] < 0.4 and box[1] < 0.5 and box[2] > 0.6 and box[3] > 0.7
  assert box.min() >= 0 and box.max() <= 1
  np.testing.assert_allclose(visualize.default_source_box(np.zeros((0, 4))),
                             [0.25, 0.25, 0.75, 0.75])

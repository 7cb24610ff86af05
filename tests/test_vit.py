"""The ViT's options for the masking baselines (MAE, I-JEPA): token masking keeps each kept
patch's position and ignores the dropped patches; stochastic depth drops whole residual
branches per example in training passes only; LayerScale starts the branches at its value."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax import configuration
from annoprop_jax import objectives
from annoprop_jax.models import vit
from conftest import tiny_config


def _vit(pool='mean', **fields):
  config = vit.EncoderConfig(patch_size=4, width=32, depth=2, num_heads=2, pool=pool,
                             image_size=16, **fields)
  model = vit.ViT(config)
  images = jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 16, 3), minval=-1, maxval=1)
  return model, model.init(jax.random.PRNGKey(1), images), images


@pytest.mark.parametrize('pool', ['mean', 'cls'])
def test_kept_tokens_keep_their_positions_and_ignore_the_dropped_patches(pool):
  model, params, images = _vit(pool)
  pooled, tokens = model.apply(params, images)
  everything = jnp.broadcast_to(jnp.arange(16), (3, 16))
  np.testing.assert_array_equal(model.apply(params, images, everything)[1], tokens)
  # Kept in another order: the same tokens in that order (positions travel with them).
  order = jnp.stack([jax.random.permutation(jax.random.PRNGKey(i), 16) for i in range(3)])
  pooled_p, tokens_p = model.apply(params, images, order)
  np.testing.assert_allclose(tokens_p, jnp.take_along_axis(tokens, order[..., None], 1),
                             atol=1e-5)
  np.testing.assert_allclose(pooled_p, pooled, atol=1e-5)
  # Four patches kept: four tokens, which do not see the other patches' pixels.
  keep = order[:, :4]
  _, kept = model.apply(params, images, keep)
  assert kept.shape == (3, 4, 32)
  dropped = jnp.ones((3, 16), bool).at[jnp.arange(3)[:, None], keep].set(False)
  pixel_of = jnp.repeat(jnp.repeat(dropped.reshape(3, 4, 4), 4, 1), 4, 2)[..., None]
  noisy = jnp.where(pixel_of, -images, images)          # every dropped patch changed
  np.testing.assert_array_equal(model.apply(params, noisy, keep)[1], kept)
  assert not np.allclose(model.apply(params, noisy)[1], tokens)


def test_stochastic_depth_drops_whole_branches_per_example_in_training_only():
  block = vit.EncoderBlock(num_heads=2, mlp_dim=64, drop_rate=0.5)
  x = jax.random.normal(jax.random.PRNGKey(0), (256, 5, 32))
  params = block.init(jax.random.PRNGKey(1), x)
  plain = block.apply(params, x)
  dropped = block.apply(params, x, rngs={vit.DROP_PATH_RNG: jax.random.PRNGKey(2)})
  # Both branches of an example dropped: the block passes it through (p = 0.25).
  identity = np.all(np.asarray(dropped) == np.asarray(x), axis=(1, 2))
  assert 0.15 < identity.mean() < 0.35, identity.mean()
  assert not np.any(np.all(np.asarray(plain) == np.asarray(x), axis=(1, 2)))
  # Without the rng (evaluation, the target network) nothing is dropped.
  np.testing.assert_array_equal(
      plain, vit.EncoderBlock(num_heads=2, mlp_dim=64).apply(params, x))


def test_layer_scale_starts_each_branch_at_its_value():
  model, params, images = _vit(layer_scale=1e-6)
  block = params['params']['block0']
  for name in ('layer_scale_attention', 'layer_scale_mlp'):
    np.testing.assert_array_equal(block[name], np.full(32, 1e-6, np.float32))
  # The blocks are nearly the identity at the start: the tokens are the embedded patches.
  patches = model.apply(params, images, method=lambda m, x: m(x, None))[1]
  off = vit.ViT(vit.EncoderConfig(patch_size=4, width=32, depth=0, num_heads=2, pool='mean',
                                  image_size=16))
  shallow = {'params': {k: v for k, v in params['params'].items() if not k.startswith('block')}}
  np.testing.assert_allclose(patches, off.apply(shallow, images)[1], atol=1e-4)
  with pytest.raises(ValueError, match='layer_scale must be >= 0'):
    vit.EncoderConfig(layer_scale=-1.0)
  with pytest.raises(ValueError, match=r'drop_path must be in \[0, 1\)'):
    vit.EncoderConfig(drop_path=1.0)


def test_a_training_step_with_stochastic_depth_samples_a_new_network_per_key(tiny_data_dir):
  from annoprop_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config = tiny_config('ab_dino_scenes', **{'data.data_dir': tiny_data_dir,
                                            'model.drop_path': 0.5, 'model.depth': 2})
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  batch = {n: pipeline.zeros_batch(config.data[n]) for n in objective.streams}
  batch = jax.tree.map(lambda a: a + (np.arange(a.size).reshape(a.shape) % 7).astype(a.dtype),
                       batch)
  params, state = objective.init(jax.random.PRNGKey(0), batch)
  loss = lambda key, training=True: objective.loss(objectives.LossInputs(  # training: a step
      params=params, target_params=params, method_state=state, batch=batch,
      step=jnp.int32(0), rng=key, training=training))[0]
  a, b = loss(jax.random.PRNGKey(1)), loss(jax.random.PRNGKey(2))
  assert np.isfinite(a) and a != b                      # another key, another sub-network
  assert loss(jax.random.PRNGKey(1), False) == loss(jax.random.PRNGKey(2), False)

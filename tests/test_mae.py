"""MAE: masks (counts, a partition, a new draw per image), patches in the patch embedding's
order, the loss on masked patches only against per-patch normalised pixels, the decoder putting
each token back in its place, and a short run that lowers the loss."""
import jax
import jax.numpy as jnp
import numpy as np

from annoprop_jax import configuration
from annoprop_jax import objectives
from annoprop_jax.models import vit
from annoprop_jax.objectives import mae
from conftest import short_run_losses


def test_masks_keep_a_quarter_of_the_patches_and_partition_them():
  keep, restore, masked = mae.random_masks(jax.random.PRNGKey(0), 8, 16, 0.75)
  keep, restore, masked = map(np.asarray, (keep, restore, masked))
  assert keep.shape == (8, 4) and masked.sum(1).tolist() == [12] * 8
  for b in range(8):
    assert not masked[b, keep[b]].any()                      # the kept ones are the visible
    assert sorted(restore[b]) == list(range(16))
    assert sorted(restore[b, keep[b]]) == [0, 1, 2, 3]       # first in [visible, masked]
  assert len({tuple(sorted(k)) for k in keep}) > 1           # a new draw per image


def test_patches_are_in_the_order_the_patch_embedding_reads():
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 12, 3))
  patches = np.asarray(mae.patchify(images, 4))
  assert patches.shape == (2, 6, 48)
  # By hand: patch (r, c) is rows 4r..4r+3, columns 4c..4c+3, row-major.
  np.testing.assert_array_equal(patches[1, 4], np.asarray(images[1, 4:8, 4:8]).reshape(-1))
  # The ViT's embedding is a linear map of exactly these vectors.
  conv = vit.nn.Conv(5, (4, 4), strides=(4, 4), padding='VALID')
  params = conv.init(jax.random.PRNGKey(1), images)['params']
  embedded = conv.apply({'params': params}, images).reshape(2, 6, 5)
  np.testing.assert_allclose(embedded, patches @ np.asarray(params['kernel']).reshape(48, 5)
                             + np.asarray(params['bias']), atol=1e-5)


def test_the_loss_counts_masked_patches_against_normalised_pixels():
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3), minval=-1, maxval=1)
  target = np.asarray(mae.patchify(images, 4))
  normalised = (target - target.mean(-1, keepdims=True)) / np.sqrt(
      target.var(-1, keepdims=True, ddof=1) + 1e-6)
  masked = jnp.array([[True, False, True, False], [False, False, False, True]])
  # Exact on the masked patches, anything on the visible ones: no loss.
  predicted = np.where(np.asarray(masked)[..., None], normalised, 5.0)
  assert float(mae.mae_loss(predicted, images, masked, 4)) < 1e-10
  # Zeros: each masked patch's P = 48 normalised pixels have mean 0 and unbiased variance ~1,
  # so a mean square of (P - 1) / P.
  zeros = mae.mae_loss(jnp.zeros_like(predicted), images, masked, 4)
  np.testing.assert_allclose(zeros, 47 / 48, rtol=1e-4)
  raw = mae.mae_loss(jnp.zeros_like(predicted), images, masked, 4, norm_pix_loss=False)
  np.testing.assert_allclose(raw, (target[np.asarray(masked)] ** 2).mean(), rtol=1e-6)


def test_the_decoder_puts_each_visible_token_back_in_its_place():
  decoder = mae.PixelDecoder(width=16, depth=0, num_heads=2, grid=4, pixels=12)
  tokens = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 8))
  params = decoder.init(jax.random.PRNGKey(1), tokens)
  everything = decoder.apply(params, tokens)                 # no mask: every token in place
  keep, restore, masked = mae.random_masks(jax.random.PRNGKey(2), 2, 16, 0.75)
  visible = jnp.take_along_axis(tokens, keep[..., None], axis=1)
  out = np.asarray(decoder.apply(params, visible, restore))
  # Without decoder blocks each output reads its own position only: a visible patch gets its
  # token's prediction, every masked patch the mask token's at its position.
  np.testing.assert_allclose(out[~np.asarray(masked)], np.asarray(everything)[~np.asarray(masked)],
                             atol=1e-5)
  masked_out = out[np.asarray(masked)]
  assert not np.allclose(masked_out, np.asarray(everything)[np.asarray(masked)])


def test_a_short_mae_run_lowers_its_loss(tmp_path, tiny_data_dir):
  config, losses = short_run_losses('mae_scenes', tiny_data_dir, tmp_path)
  assert losses[-1] < losses[0] - 0.1, losses
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  assert objective.streams == ('annotation',) and not objectives.is_bootstrapped('mae')

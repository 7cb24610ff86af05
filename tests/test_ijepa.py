"""I-JEPA: block sizes by the public collator's formula, target blocks and contexts (counts,
disjointness), padded indices, padding that no token reads (encoder and predictor), the loss by
hand, the config's checks, and a short run that lowers the loss."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax import configuration
from annoprop_jax import errors
from annoprop_jax import objectives
from annoprop_jax.models import vit
from annoprop_jax.objectives import ijepa
from conftest import short_run_losses
from conftest import tiny_config

CONFIG = ijepa.IJEPA.default_config()


@pytest.mark.parametrize('xp', [np, jnp])
def test_block_sizes_follow_the_public_collator(xp):
  # By hand, a 14 x 14 grid (224 px / 16) at u = 0.5: scale 0.175 -> int(196 * 0.175) = 34
  # patches, aspect ratio 1.125 -> h = round(sqrt(38.25)) = 6, w = round(sqrt(30.2)) = 5.
  assert tuple(map(int, ijepa.block_size(0.5, (0.15, 0.2), (0.75, 1.5), 14, xp))) == (6, 5)
  # The context at u = 0.5: int(196 * 0.925) = 181 -> 13 x 13; at u = 1 the whole grid, cut
  # to 13 x 13 (a side is below the grid's).
  assert tuple(map(int, ijepa.block_size(0.5, (0.85, 1.0), (1.0, 1.0), 14, xp))) == (13, 13)
  assert tuple(map(int, ijepa.block_size(1.0, (0.85, 1.0), (1.0, 1.0), 14, xp))) == (13, 13)
  # u = 0: int(196 * 0.15) = 29, ratio 0.75 -> h = round(4.66) = 5, w = round(6.22) = 6.
  assert tuple(map(int, ijepa.block_size(0.0, (0.15, 0.2), (0.75, 1.5), 14, xp))) == (5, 6)


def test_the_largest_block_bounds_every_size():
  for grid in (4, 8, 14):
    bound = ijepa.largest_block((0.15, 0.2), (0.75, 1.5), grid)
    sizes = [ijepa.block_size(u, (0.15, 0.2), (0.75, 1.5), grid, np)
             for u in np.linspace(0, 1, 201)]
    assert max(int(h) * int(w) for h, w in sizes) <= bound < grid * grid


def test_contexts_leave_out_every_target_block():
  grid, batch = 8, 16
  targets, contexts = map(np.asarray, ijepa.sample_blocks(jax.random.PRNGKey(0), batch, grid,
                                                          CONFIG))
  assert targets.shape == (batch, 4, 64) and contexts.shape == (batch, 64)
  sizes = targets.sum(-1)
  assert (sizes == sizes[0, 0]).all() and sizes[0, 0] > 0          # one size per step
  assert not (contexts & targets.any(1)).any()                       # disjoint from targets
  assert (contexts.sum(-1) > CONFIG.min_context).all()
  # Each target block is a rectangle: its rows and columns span exactly its patch count.
  for block in targets.reshape(-1, grid, grid):
    rows, cols = np.nonzero(block)
    assert (np.ptp(rows) + 1) * (np.ptp(cols) + 1) == block.sum()
  assert len({c.tobytes() for c in contexts}) > 1                    # a new draw per image


def test_indices_are_in_raster_order_and_padded():
  mask = jnp.array([[False, True, False, True, True], [True, False, False, False, False]])
  where, real = ijepa.indices(mask, 4)
  assert np.asarray(where).tolist() == [[1, 3, 4, 0], [0, 0, 0, 0]]
  assert np.asarray(real).tolist() == [[True, True, True, False], [True, False, False, False]]


def test_the_encoder_ignores_padded_tokens():
  model = vit.ViT(vit.EncoderConfig(image_size=16, patch_size=4, width=16, depth=2, num_heads=2,
                                    pool='mean'))
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), minval=-1, maxval=1)
  params = model.init(jax.random.PRNGKey(1), images)
  keep = jnp.array([[3, 7, 9], [0, 5, 15]])
  pooled, tokens = model.apply(params, images, keep)
  padded = jnp.array([[3, 7, 9, 1, 2], [0, 5, 15, 6, 6]])
  kept = jnp.array([[True] * 3 + [False] * 2] * 2)
  pooled_p, tokens_p = model.apply(params, images, padded, kept)
  np.testing.assert_allclose(pooled_p, pooled, atol=1e-5)
  np.testing.assert_allclose(tokens_p[:, :3], tokens, atol=1e-5)


def test_the_predictor_ignores_padding_and_reads_the_context():
  predictor = ijepa.Predictor(width=16, depth=2, num_heads=2, grid=4)
  tokens = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 8))
  context = jnp.array([[0, 5, 10]])
  targets = jnp.array([[[3, 7]]])
  params = predictor.init(jax.random.PRNGKey(1), tokens)
  out = predictor.apply(params, tokens, context, targets)
  # Padding on both sides, of any value: the real predictions stay.
  tokens_p = jnp.concatenate([tokens, 9 * jnp.ones((1, 2, 8))], axis=1)
  out_p = predictor.apply(params, tokens_p, jnp.array([[0, 5, 10, 2, 2]]),
                          jnp.array([[[3, 7, 11]]]), jnp.array([[True] * 3 + [False] * 2]),
                          jnp.array([[[True, True, False]]]))
  np.testing.assert_allclose(out_p[:, :, :2], out, atol=1e-5)
  # The prediction does read the context.
  assert not np.allclose(predictor.apply(params, tokens + 1, context, targets), out, atol=1e-3)


def test_the_loss_by_hand():
  predicted = jnp.zeros((1, 1, 3, 2))
  targets = jnp.array([[[[0.5, -2.0], [1.5, 0.0], [7.0, 7.0]]]])
  real = jnp.array([[[True, True, False]]])
  # Smooth L1 (beta 1): 0.125, 1.5, 1.0, 0 over 2 real tokens x 2 features; padding ignored.
  np.testing.assert_allclose(ijepa.ijepa_loss(predicted, targets, real), 2.625 / 4, rtol=1e-6)
  np.testing.assert_allclose(ijepa.ijepa_loss(predicted, targets, real, 'l2'), 6.5 / 4,
                             rtol=1e-6)
  normal = ijepa.normalise(jnp.array([[1.0, 2.0, 3.0, 6.0]]))
  np.testing.assert_allclose(normal, (np.array([[1, 2, 3, 6]]) - 3) / math.sqrt(3.5 + 1e-5),
                             rtol=1e-5)


@pytest.mark.parametrize('change, message', [
    ({'model.patch_size': 8}, 'patch grid of at least 3 x 3'),
    ({'data.annotation.local_views.num': 2}, 'local_views.num must be 0'),
    ({'objective.target_scale': (0.3, 0.2)}, 'objective.target_scale'),
    ({'objective.distance': 'l1'}, 'objective.distance'),
])
def test_bad_configs_are_one_line_errors(change, message):
  with pytest.raises(errors.ConfigError, match=message):
    configuration.validate(tiny_config('ijepa_scenes', **change))


def test_a_short_ijepa_run_lowers_its_loss(tmp_path, tiny_data_dir):
  config, losses = short_run_losses('ijepa_scenes', tiny_data_dir, tmp_path)
  assert losses[-1] < losses[0] - 0.1, losses
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  assert objective.streams == ('annotation',) and not objectives.is_bootstrapped('ijepa')

"""CLIP: byte tokenizer, text tower padding mask, symmetric InfoNCE by hand, a short run."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax import configuration
from annoprop_jax import metrics as metrics_lib
from annoprop_jax import objectives
from annoprop_jax import optimizer
from annoprop_jax import train
from annoprop_jax.data import tokenizer
from annoprop_jax.models import network
from annoprop_jax.models import text
from annoprop_jax.objectives import clip
from conftest import loss_inputs, tiny_config


def _padded(captions, length):
  out = np.zeros((len(captions), length), np.uint8)
  for i, c in enumerate(captions):
    c = c[:length]                      # the pipeline truncates the same way
    out[i, :len(c)] = np.frombuffer(c, np.uint8)
  return out


def test_encode_exact_ids_and_truncation():
  np.testing.assert_array_equal(tokenizer.encode(b'ab', 6), [1, 100, 101, 2, 0, 0])
  np.testing.assert_array_equal(tokenizer.encode('ab', 4), [1, 100, 101, 2])
  # Too long: the bytes are cut, EOS stays last.
  np.testing.assert_array_equal(tokenizer.encode('abcdef', 5), [1, 100, 101, 102, 2])
  assert tokenizer.encode('x', 8).dtype == np.int32
  with pytest.raises(ValueError, match='BOS and EOS'):
    tokenizer.encode('a', 1)


@pytest.mark.parametrize('caption', ['a small red circle left of a blue square', 'héllo ✓', ''])
def test_decode_round_trip(caption):
  tokens = tokenizer.encode(caption, 64)
  assert tokenizer.decode(tokens) == caption
  assert tokenizer.decode(tokens, as_bytes=True) == caption.encode()
  assert int(tokens.max()) < tokenizer.VOCAB_SIZE


def test_caption_bytes_to_tokens_equals_encode():
  captions = [b'ab', b'', b'a big green star on a striped background', b'x' * 12, b'y' * 11]
  padded = _padded(captions, 12)        # the 12-byte caption fills its row: no zero at the end
  tokens = jax.jit(tokenizer.tokens_from_caption_bytes)(padded)
  assert tokens.shape == (5, 14) and tokens.dtype == jnp.int32
  for row, caption in zip(np.asarray(tokens), captions):
    np.testing.assert_array_equal(row, tokenizer.encode(caption, 14))
  # Leading dimensions are kept, e.g. (B, V, C).
  stacked = tokenizer.tokens_from_caption_bytes(padded.reshape(5, 1, 12))
  np.testing.assert_array_equal(stacked[:, 0], tokens)


def _tower():
  tower = text.TextTransformer(width=32, depth=2, num_heads=2, max_len=16)
  tokens = jnp.asarray(tokenizer.encode('red circle', 16))[None]
  params = tower.init(jax.random.PRNGKey(0), tokens)
  return tower, params, tokens


def test_text_tower_ignores_everything_after_eos():
  tower, params, tokens = _tower()
  end = int(text.end_positions(tokens)[0])
  assert end == len('red circle') + 1
  junk = tokens.at[0, end + 1:].set(jnp.arange(end + 1, 16) + 50)   # nonzero garbage after EOS
  pooled, feats = tower.apply(params, tokens)
  pooled_junk, feats_junk = tower.apply(params, junk)
  assert pooled.shape == (1, 32) and feats.shape == (1, 16, 32)
  np.testing.assert_allclose(pooled, pooled_junk, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(feats[:, :end + 1], feats_junk[:, :end + 1], rtol=1e-5, atol=1e-6)
  # The pooled vector is the EOS token's feature.
  np.testing.assert_allclose(pooled[0], feats[0, end], rtol=1e-6)


def test_text_tower_depends_on_caption_bytes():
  tower, params, tokens = _tower()
  other = jnp.asarray(tokenizer.encode('red square', 16))[None]
  changed = jnp.asarray(tokenizer.encode('rEd circle', 16))[None]
  pooled = tower.apply(params, tokens)[0]
  assert np.abs(pooled - tower.apply(params, other)[0]).max() > 1e-3
  assert np.abs(pooled - tower.apply(params, changed)[0]).max() > 1e-3


def test_text_tower_rejects_too_long_input():
  tower, params, _ = _tower()
  with pytest.raises(ValueError, match='max_len'):
    tower.apply(params, jnp.ones((1, 17), jnp.int32))


@pytest.mark.parametrize('scale', [1.0, 4.0])
def test_clip_loss_orthogonal_pairs(scale):
  # Each image matches its own caption with similarity 1 and the other with 0, both directions:
  # loss = -log(e^s / (e^s + 1)) = log(1 + e^-s).
  emb = jnp.eye(2)
  loss, accuracy = clip.clip_loss(emb, emb, scale)
  assert float(loss) == pytest.approx(math.log(1 + math.exp(-scale)), rel=1e-5)
  assert float(accuracy) == 1.0


def test_clip_loss_is_symmetric_cross_entropy():
  rng = np.random.default_rng(0)
  img = rng.normal(size=(3, 4))
  txt = rng.normal(size=(3, 4))
  img /= np.linalg.norm(img, axis=-1, keepdims=True)
  txt /= np.linalg.norm(txt, axis=-1, keepdims=True)
  s = 5.0
  logits = s * img @ txt.T
  i2t = -np.mean([logits[i, i] - np.log(np.exp(logits[i]).sum()) for i in range(3)])
  t2i = -np.mean([logits[i, i] - np.log(np.exp(logits[:, i]).sum()) for i in range(3)])
  loss, accuracy = clip.clip_loss(jnp.asarray(img), jnp.asarray(txt), s)
  assert float(loss) == pytest.approx((i2t + t2i) / 2, rel=1e-5)
  assert float(accuracy) == pytest.approx(np.mean(logits.argmax(1) == np.arange(3)))


def test_logit_scale_is_clamped_at_100():
  assert float(clip.clamped_scale(jnp.float32(math.log(10.0)), 100.0)) == pytest.approx(10.0)
  assert float(clip.clamped_scale(jnp.float32(math.log(1e4)), 100.0)) == pytest.approx(100.0)
  grad = jax.grad(lambda t: clip.clamped_scale(t, 100.0))(jnp.float32(math.log(1e4)))
  assert float(grad) == 0.0


def _objective_and_batch():
  config = tiny_config('clip_scenes')
  objective = objectives.build(config.objective, configuration.encoder_config(config))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(4, 1, 16, 16, 3), dtype=np.uint8)
  caption = _padded([b'a red circle', b'a blue square', b'a tiny star', b'two moons'],
                    config.data.annotation.max_caption_bytes)
  return config, objective, {'annotation': {'images': images, 'caption': caption}}


def test_clip_params_embeddings_and_loss_agree():
  config, objective, batch = _objective_and_batch()
  params, method_state = objective.init(jax.random.PRNGKey(0), batch)
  assert set(params) == {'encoder', 'head', 'annotation_encoder'}
  assert set(params['annotation_encoder']) == {'text', 'projection', 'logit_scale'}
  scale_param = params['annotation_encoder']['logit_scale']
  assert scale_param.dtype == jnp.float32
  assert float(scale_param) == pytest.approx(math.log(1 / 0.07), rel=1e-6)
  mask = optimizer.decay_mask(params)
  assert not mask['annotation_encoder']['logit_scale']
  assert not mask['annotation_encoder']['text']['pos_embedding']
  assert mask['annotation_encoder']['projection']['projection']['kernel']

  data, net = batch['annotation'], objective.method.net

  def embeddings(params):
    pooled, _ = network.apply(net, params, network.Network.encode, data['images'][:, 0])
    image = network.apply(net, params, network.Network.base, pooled)
    text_emb, _, scale = network.apply(net, params, network.Network.embed_annotations,
                                       objective.method.tokens(data['caption']))
    return image, text_emb, scale

  image_emb, text_emb, scale = embeddings(params)
  assert image_emb.shape == text_emb.shape == (4, config.objective.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(image_emb, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(text_emb, axis=-1), 1.0, rtol=1e-5)
  expected, _ = clip.clip_loss(image_emb, text_emb, scale)
  loss, (metrics, new_state) = objective.loss(loss_inputs(params, params, method_state, batch))
  assert float(loss) == pytest.approx(float(expected), rel=1e-5)
  assert float(metrics['clip_logit_scale']) == pytest.approx(1 / 0.07, rel=1e-5)
  assert new_state == method_state

  # Above the clamp the scale reads 100 and the loss uses it.
  params = {**params, 'annotation_encoder': {**params['annotation_encoder'],
                                             'logit_scale': jnp.float32(10.0)}}
  assert float(embeddings(params)[2]) == pytest.approx(100.0)
  _, (metrics, _) = objective.loss(loss_inputs(params, params, method_state, batch))
  assert float(metrics['clip_logit_scale']) == pytest.approx(100.0)


def test_captions_longer_than_the_text_tower_fail_clearly():
  config, objective, batch = _objective_and_batch()
  batch['annotation']['caption'] = np.zeros((4, config.objective.text_max_len), np.uint8)
  with pytest.raises(ValueError, match='text_max_len'):
    objective.init(jax.random.PRNGKey(0), batch)


@pytest.mark.slow
def test_clip_trains_on_scene_captions(tmp_path, tiny_data_dir):
  config = tiny_config('clip_scenes', **{'data.data_dir': tiny_data_dir})
  config.total_steps = 100
  config.log_every = 20
  train.train(config, str(tmp_path), print_fn=lambda line: None)
  records = metrics_lib.read_metrics(str(tmp_path))
  losses = [r['clip_loss'] for r in records]
  assert [r['step'] for r in records] == list(range(20, 101, 20))
  assert all(np.isfinite(losses))
  assert losses[-1] < losses[0]
  # Below chance (log of the batch size): images are matched to their own captions.
  assert np.mean(losses[-2:]) < math.log(config.data.annotation.batch_size)

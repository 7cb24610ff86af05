"""Attention's implementations (models/attention.py) against a naive float64 reference and one
another, the choice ``auto`` makes, and the config's checks."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from annoprop_jax import configuration
from annoprop_jax.models import attention
from annoprop_jax.models import decoder
from annoprop_jax.models import vit

import conftest


def naive(query, key, value, mask=None):
  """softmax(q k^T / sqrt(d)) v per batch row and head, in float64 with numpy."""
  q, k, v = (np.asarray(x, np.float64) for x in (query, key, value))
  logits = np.einsum('bthd,bshd->bhts', q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = np.where(np.broadcast_to(np.asarray(mask, bool), logits.shape), logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum('bhts,bshd->bthd', weights, v)


def _inputs(dtype, t=9, s=13, heads=3, dim=16, seed=0):
  rng = np.random.default_rng(seed)
  q, k, v = (rng.normal(size=(2, n, heads, dim)) for n in (t, s, s))
  return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def _block_mask(t, s, block=3):
  """A block-diagonal mask like the decoder's (each query sees keys of its own block)."""
  return (np.arange(t)[:, None] // block == np.arange(s)[None] // block)[None, None]


@pytest.mark.parametrize('implementation', ['plain', 'xla', 'auto'])
@pytest.mark.parametrize('masked', [False, True])
def test_each_implementation_is_softmax_attention(implementation, masked):
  q, k, v = _inputs(jnp.float32, t=9, s=9)
  mask = _block_mask(9, 9) if masked else None
  got = attention.attention_fn(implementation)(q, k, v, mask=mask)
  want = naive(q, k, v, mask)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-6)
  if masked:   # the mask matters: without it the answer is another one
    assert np.abs(naive(q, k, v) - want).max() > 0.1


def test_bfloat16_xla_is_closer_to_exact_than_plain():
  """'xla' keeps the scores and the softmax in float32; 'plain' rounds them to bf16."""
  q, k, v = _inputs(jnp.bfloat16, t=64, s=64, dim=64, seed=1)
  want = naive(q, k, v)
  error = {name: np.abs(np.asarray(attention.attention_fn(name)(q, k, v), np.float64)
                        - want).max() for name in ('plain', 'xla')}
  assert error['xla'] <= error['plain'] and error['plain'] < 0.05, error


def test_gradients_agree_between_implementations():
  q, k, v = _inputs(jnp.float32, t=6, s=10)
  w = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 3, 16)), jnp.float32)
  grads = {name: jax.grad(lambda *x, f=attention.attention_fn(name): jnp.sum(w * f(*x)),
                          (0, 1, 2))(q, k, v) for name in ('plain', 'xla')}
  for a, b in zip(grads['plain'], grads['xla']):
    assert np.abs(np.asarray(a)).max() > 1e-3
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_auto_is_plain_off_gpus_and_cudnn_is_refused_there():
  assert attention.resolve('auto', jnp.bfloat16, 64, backend='cpu') == 'plain'
  assert attention.resolve('auto', jnp.bfloat16, 64, backend='tpu') == 'plain'
  assert attention.resolve('xla', jnp.float32, 64, backend='cpu') == 'xla'
  with pytest.raises(ValueError, match='needs an NVIDIA GPU'):
    attention.resolve('cudnn', jnp.bfloat16, 64, backend='cpu')
  with pytest.raises(ValueError, match='unknown attention'):
    attention.resolve('flash', jnp.float32, 64)


@pytest.mark.parametrize('implementation', ['xla', 'plain'])
def test_encoder_and_decoder_equal_with_either_implementation(implementation):
  """The ViT and the masked, packed decoder give today's (plain) outputs with the same params."""
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)), jnp.uint8)
  encoder = lambda name: vit.ViT(vit.EncoderConfig(patch_size=8, width=32, depth=2, num_heads=2,
                                                   attention=name))
  params = encoder('plain').init(jax.random.PRNGKey(0), images)
  pooled, tokens = encoder(implementation).apply(params, images)
  want_pooled, want_tokens = encoder('plain').apply(params, images)
  np.testing.assert_allclose(pooled, want_pooled, atol=1e-5)
  moves = jnp.asarray(np.random.default_rng(1).uniform(-1, 2, (2, 3, 4)), jnp.float32)
  make = lambda name: decoder.AnnotationDecoder(width=32, depth=2, num_heads=2, attention=name)
  dparams = make('plain').init(jax.random.PRNGKey(1), tokens, moves)
  np.testing.assert_allclose(make(implementation).apply(dparams, tokens, moves),
                             make('plain').apply(dparams, want_tokens, moves), atol=1e-5)


def test_flax_attention_module_passes_its_mask_through():
  """Through nn.MultiHeadDotProductAttention (a float 0/1 mask, as Flax makes them)."""
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 8)), jnp.float32)
  valid = jnp.arange(6)[None] < jnp.array([[4], [6]])
  mask = nn.make_attention_mask(valid, valid)
  module = lambda name: nn.MultiHeadDotProductAttention(
      num_heads=2, attention_fn=attention.attention_fn(name))
  params = module('plain').init(jax.random.PRNGKey(0), x, x, mask=mask)
  got = module('xla').apply(params, x, x, mask=mask)
  np.testing.assert_allclose(got, module('plain').apply(params, x, x, mask=mask), atol=1e-5)
  unmasked = module('xla').apply(params, x, x)
  assert np.abs(np.asarray(unmasked - got))[0, :4].max() > 1e-3   # row 0 had keys masked


def test_config_checks_the_implementation():
  config = conftest.tiny_config()
  config.model.attention = 'flash'
  with pytest.raises(configuration.ConfigError, match='model.attention must be one of'):
    configuration.validate(config)
  config.model.attention = 'cudnn'
  with pytest.raises(configuration.ConfigError, match="model.attention='cudnn' needs "
                     "dtype='bfloat16'"):
    configuration.validate(config)


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != 'gpu', reason='needs an NVIDIA GPU')
def test_cudnn_equals_xla_on_a_gpu():
  q, k, v = _inputs(jnp.bfloat16, t=197, s=197, heads=6, dim=64)
  got = attention.attention_fn('cudnn')(q, k, v)
  want = naive(q, k, v)
  assert np.abs(np.asarray(got, np.float64) - want).max() < 0.02

"""Attention maps as DINO's paper draws them: in the ViT's last block, the attention of the
pooled query over the patches, per head: the CLS token's row (``pool='cls'``), or for a
mean-pooled encoder the mean of all rows (what the pooled vector gathers)."""
import dataclasses

import jax
import jax.numpy as jnp

from annoprop_jax.models import layer_norm
from annoprop_jax.models import vit


def last_block_attention(encoder_config, params, images):
  """(B, heads, rows, cols) attention weights of uint8 ``images`` (B, S, S, 3) over the patch
  grid; each map sums to 1 over the patches (less the CLS token's own share, renormalised)."""
  config = dataclasses.replace(encoder_config, remat='none')
  model = vit.ViT(config)
  last = f'block{config.depth - 1}'
  first_norm = lambda module, _: (isinstance(module, layer_norm.LayerNorm)
                                  and module.name == 'LayerNorm_0')
  _, state = model.apply({'params': params}, images, capture_intermediates=first_norm,
                         mutable=['intermediates'])
  y = state['intermediates'][last]['LayerNorm_0']['__call__'][0]      # (B, T, D)
  attention = params[last]['MultiHeadDotProductAttention_0']
  project = lambda name: (jnp.einsum('btd,dhk->bthk', y, attention[name]['kernel'])
                          + attention[name]['bias'])
  q, k = project('query'), project('key')
  weights = jax.nn.softmax(jnp.einsum('bqhk,bthk->bhqt', q, k) / jnp.sqrt(q.shape[-1]), -1)
  if config.pool == 'cls':
    weights = weights[:, :, 0, 1:]                      # the CLS query, over the patches
  else:
    weights = weights.mean(axis=2)
  weights = weights / weights.sum(-1, keepdims=True)
  patch = config.patch_size
  return weights.reshape(*weights.shape[:2], images.shape[1] // patch, images.shape[2] // patch)

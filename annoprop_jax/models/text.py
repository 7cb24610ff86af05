"""Text tower for captions: a small pre-norm transformer over byte tokens (see data/tokenizer).

Attention is bidirectional with a padding mask: every token up to and including the first EOS
is valid, everything after it is ignored, so the pooled output does not depend on what follows
EOS. The pooled output is the final-layer feature of the EOS token (as in CLIP), which has
attended to the whole caption.
"""
import flax.linen as nn
import jax.numpy as jnp

from annoprop_jax.data import tokenizer
from annoprop_jax.models import vit


def end_positions(tokens):
  """(B, L) tokens -> (B,) index of the first EOS (or of the last non-padding token if none)."""
  length = tokens.shape[-1]
  is_eos = tokens == tokenizer.EOS
  first_eos = jnp.argmax(is_eos, axis=-1)
  last_token = jnp.max(jnp.where(tokens != tokenizer.PAD, jnp.arange(length), 0), axis=-1)
  return jnp.where(is_eos.any(axis=-1), first_eos, last_token)


class TextTransformer(nn.Module):
  """Caption encoder.

  Input: tokens (B, L) int32 with L <= max_len.
  Output: ``(pooled (B, width), tokens (B, L, width))`` in float32; pooled = the EOS token.
  """
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  mlp_ratio: float = 4.0
  max_len: int = 162
  vocab_size: int = tokenizer.VOCAB_SIZE
  dtype: str = 'float32'          # compute dtype; params stay float32
  attention: str = 'auto'         # attention.IMPLEMENTATIONS (the encoder's model.attention)

  @nn.compact
  def __call__(self, tokens):
    dtype = jnp.dtype(self.dtype)
    if tokens.ndim != 2:
      raise ValueError(f'tokens must be (B, L), got shape {tokens.shape}')
    b, length = tokens.shape
    if length > self.max_len:
      raise ValueError(f'{length} tokens exceed the text tower max_len {self.max_len}')
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                 name='token_embedding')(tokens)
    pos = self.param('pos_embedding', nn.initializers.normal(0.01),
                     (1, self.max_len, self.width), jnp.float32)
    x = (x + pos[:, :length]).astype(dtype)
    end = end_positions(tokens)
    valid = jnp.arange(length)[None] <= end[:, None]                # (B, L)
    mask = nn.make_attention_mask(valid, valid)                     # (B, 1, L, L)
    for i in range(self.depth):
      x = vit.EncoderBlock(self.num_heads, int(self.width * self.mlp_ratio), dtype=dtype,
                           attention=self.attention, name=f'block{i}')(x, mask=mask)
    x = nn.LayerNorm(dtype=dtype, name='text_norm')(x).astype(jnp.float32)
    pooled = jnp.take_along_axis(x, end[:, None, None], axis=1)[:, 0]
    assert pooled.shape == (b, self.width) and x.shape == (b, length, self.width)
    return pooled, x

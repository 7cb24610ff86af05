"""Box tokens and the box-conditioned annotation decoder (docs/method.md, Q_AB).

A *move* (the target view's box in the source view's frame) becomes 4 tokens: each coordinate
is clipped to ``[low, high]``, quantised into ``bins`` bins and embedded with its own table.
The decoder's queries are the 4 tokens of each target box; they attend to each other (and never
to another target's tokens: a block-diagonal mask packs all targets of one source view into one
call) and cross-attend to the source view's patch tokens. Each target's 4 outputs are
mean-pooled into one vector, phi_AB(x1, a).
"""
import flax.linen as nn
import jax.numpy as jnp

from annoprop_jax.models import attention as attention_lib
from annoprop_jax.models import layer_norm
from annoprop_jax.models import vit


def quantise_moves(moves, low, high, bins):
  """(..., 4) moves -> (int32 bin indices (..., 4), bool clipped (..., 4))."""
  clipped = (moves < low) | (moves > high)
  frac = (jnp.clip(moves, low, high) - low) / (high - low)
  return jnp.clip(jnp.floor(frac * bins), 0, bins - 1).astype(jnp.int32), clipped


class BoxTokens(nn.Module):
  """(..., 4) moves -> (..., 4, width) tokens, one embedding table per coordinate."""
  width: int
  bins: int = 128
  low: float = -5.0
  high: float = 6.0

  @nn.compact
  def __call__(self, moves):
    index, _ = quantise_moves(moves, self.low, self.high, self.bins)
    tables = self.param('tables', nn.initializers.normal(0.02), (4, self.bins, self.width),
                        jnp.float32)
    return tables[jnp.arange(4), index]


class DecoderBlock(nn.Module):
  """Pre-norm: masked self-attention among box tokens, cross-attention to patches, MLP."""
  num_heads: int
  mlp_dim: int
  dtype: str = 'float32'
  attention: str = 'auto'        # attention.IMPLEMENTATIONS

  @nn.compact
  def __call__(self, x, memory, self_mask):
    dtype = jnp.dtype(self.dtype)
    attend = attention_lib.attention_fn(self.attention)
    y = layer_norm.LayerNorm(dtype=dtype)(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=dtype,
                                            attention_fn=attend,
                                            name='self_attention')(y, y, mask=self_mask)
    y = layer_norm.LayerNorm(dtype=dtype)(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=dtype,
                                            attention_fn=attend,
                                            name='cross_attention')(y, memory)
    y = layer_norm.LayerNorm(dtype=dtype)(x)
    return x + vit.MlpBlock(self.mlp_dim, dtype=dtype)(y)


class AnnotationDecoder(nn.Module):
  """phi_AB for every (source view, target box) pair of a packed call.

  Args of ``__call__``:
    patch_tokens: (S, N, D) encoder tokens of S source views.
    moves: (S, T, 4) the moves from each source view to its T target boxes.
  Returns: (S, T, width).
  """
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  mlp_ratio: float = 4.0
  bins: int = 128
  low: float = -5.0
  high: float = 6.0
  dtype: str = 'float32'
  attention: str = 'auto'        # attention.IMPLEMENTATIONS (the encoder's model.attention)

  @nn.compact
  def __call__(self, patch_tokens, moves):
    s, t, _ = moves.shape
    dtype = jnp.dtype(self.dtype)
    queries = BoxTokens(self.width, self.bins, self.low, self.high, name='box_tokens')(moves)
    x = queries.reshape(s, t * 4, self.width).astype(dtype)
    memory = nn.Dense(self.width, dtype=dtype, name='memory_projection')(
        layer_norm.LayerNorm(dtype=dtype, name='memory_norm')(patch_tokens.astype(dtype)))
    owner = jnp.arange(t * 4) // 4
    self_mask = (owner[:, None] == owner[None, :])[None, None]      # block diagonal
    for i in range(self.depth):
      x = DecoderBlock(self.num_heads, int(self.width * self.mlp_ratio), self.dtype,
                       self.attention, name=f'block{i}')(x, memory, self_mask)
    x = layer_norm.LayerNorm(dtype=dtype, name='decoder_norm')(x).astype(jnp.float32)
    return x.reshape(s, t, 4, self.width).mean(axis=2)

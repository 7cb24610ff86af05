"""Vision Transformer encoder (big_vision style) returning a pooled vector and patch tokens."""
import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from annoprop_jax.models import attention as attention_lib
from annoprop_jax.models import layer_norm

# width, depth, heads, MLP ratio. Paper sizes (ViT, its H and DINOv2's g with an MLP of 6144)
# plus tiny ones that train on a CPU.
VIT_SIZES = {
    'cpu_tiny': (64, 2, 2, 4.0),
    'cpu_small': (128, 4, 4, 4.0),
    'Ti': (192, 12, 3, 4.0),
    'S': (384, 12, 6, 4.0),
    'M': (512, 12, 8, 4.0),
    'B': (768, 12, 12, 4.0),
    'L': (1024, 24, 16, 4.0),
    'H': (1280, 32, 16, 4.0),
    'g': (1408, 40, 16, 48 / 11),
}


def vit_size(name):
  """``'S/16'`` -> dict(width, depth, num_heads, mlp_ratio, patch_size) for a config's ``model``
  block."""
  size, _, patch = name.partition('/')
  if size not in VIT_SIZES or not patch.isdigit() or int(patch) <= 0:
    raise ValueError(f'unknown ViT size {name!r}: use SIZE/PATCH with SIZE in '
                     f'{", ".join(VIT_SIZES)}')
  width, depth, heads, mlp_ratio = VIT_SIZES[size]
  return dict(width=width, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio,
              patch_size=int(patch))


def sincos_posemb(num_rows, num_cols, width, temperature=10_000.0):
  """Fixed 2D sine-cosine position embedding, (1, rows * cols, width); width divisible by 4."""
  y, x = np.mgrid[:num_rows, :num_cols]
  omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1 if width > 4 else 1))
  y = y.reshape(-1)[:, None] * omega[None]
  x = x.reshape(-1)[:, None] * omega[None]
  return jnp.asarray(np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], 1)[None],
                     jnp.float32)


POOLS = ('cls', 'mean')
POSEMBS = ('learned', 'sincos')
DTYPES = ('float32', 'bfloat16')
REMAT_POLICIES = ('none', 'full', 'dots')


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The ViT's architecture: ``config.model`` plus the training resolution. Checks itself on
  creation (ValueError, one line naming the field); the ViT trusts it."""
  patch_size: int = 16
  width: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  pool: str = 'cls'              # 'cls' or 'mean'
  posemb: str = 'learned'        # 'learned' or 'sincos'
  dtype: str = 'float32'         # compute dtype; params stay float32
  remat: str = 'none'            # 'none', 'full' (recompute each block) or 'dots' (keep matmuls)
  attention: str = 'auto'        # attention.IMPLEMENTATIONS
  drop_path: float = 0.0         # stochastic depth: block i's residual branches dropped per
                                 # example at drop_path * i / (depth - 1), in training passes
  layer_scale: float = 0.0       # LayerScale: residual branches scaled by a learned per-channel
                                 # vector from this value (0: off; CaiT 1e-5, DINOv2 1e-5)
  image_size: Optional[int] = None  # training resolution; other sizes resize the position grid

  def __post_init__(self):
    for name, allowed in (('pool', POOLS), ('posemb', POSEMBS), ('dtype', DTYPES),
                          ('remat', REMAT_POLICIES), ('attention', attention_lib.IMPLEMENTATIONS)):
      if getattr(self, name) not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {getattr(self, name)!r}')
    if self.width % self.num_heads:
      raise ValueError(f'width {self.width} is not divisible by num_heads {self.num_heads}')
    if self.posemb == 'sincos' and self.width % 4:
      raise ValueError(f'width {self.width} must be divisible by 4 for the 2D sincos embedding')
    if self.attention == 'cudnn' and self.dtype != 'bfloat16':
      raise ValueError("attention='cudnn' needs dtype='bfloat16' (cuDNN's flash attention "
                       "takes bf16 or fp16 only)")
    if not 0.0 <= self.drop_path < 1.0:
      raise ValueError(f'drop_path must be in [0, 1), got {self.drop_path}')
    if self.layer_scale < 0:
      raise ValueError(f'layer_scale must be >= 0 (0: off), got {self.layer_scale}')
    if self.image_size is not None and self.image_size % self.patch_size:
      raise ValueError(f'image_size {self.image_size} is not divisible by patch_size '
                       f'{self.patch_size}')

  @classmethod
  def from_dict(cls, fields):
    """From a dict of the fields (an export's encoder_config.json: older ones lack some)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

  def to_dict(self):
    return dataclasses.asdict(self)


def remat_block(block, policy):
  """``block`` rematerialised in the backward pass by ``policy`` (see ``EncoderConfig.remat``)."""
  if policy == 'full':
    return nn.remat(block)
  if policy == 'dots':
    return nn.remat(block, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
  return block


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(1e-6))(x)
    x = nn.gelu(x)
    return nn.Dense(width, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
                    bias_init=nn.initializers.normal(1e-6))(x)


DROP_PATH_RNG = 'drop_path'     # the rng stream of stochastic depth; a pass without it keeps all


class EncoderBlock(nn.Module):
  """Pre-norm transformer block: self-attention then MLP, both residual; optionally each
  residual branch LayerScaled and dropped per example (stochastic depth)."""
  num_heads: int
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32
  attention: str = 'auto'        # attention.IMPLEMENTATIONS
  drop_rate: float = 0.0         # this block's stochastic depth rate
  layer_scale: float = 0.0       # LayerScale's initial value (0: off)

  def _branch(self, y, name):
    """A residual branch's output, LayerScaled and dropped as configured."""
    if self.layer_scale:
      scale = self.param(name, nn.initializers.constant(self.layer_scale), (y.shape[-1],),
                         jnp.float32)
      y = y * scale.astype(y.dtype)
    if self.drop_rate and self.has_rng(DROP_PATH_RNG):
      keep = 1.0 - self.drop_rate
      kept = jax.random.bernoulli(self.make_rng(DROP_PATH_RNG), keep,
                                  (y.shape[0],) + (1,) * (y.ndim - 1))
      y = jnp.where(kept, y / keep, jnp.zeros_like(y))
    return y

  @nn.compact
  def __call__(self, x, mask=None):
    y = layer_norm.LayerNorm(dtype=self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype,
        kernel_init=nn.initializers.xavier_uniform(),
        attention_fn=attention_lib.attention_fn(self.attention))(y, y, mask=mask)
    x = x + self._branch(y, 'layer_scale_attention')
    y = layer_norm.LayerNorm(dtype=self.dtype)(x)
    return x + self._branch(MlpBlock(self.mlp_dim, dtype=self.dtype)(y), 'layer_scale_mlp')


class ViT(nn.Module):
  """ViT encoder of an ``EncoderConfig``.

  Input: images (B, H, W, 3), uint8 in [0, 255] or float already in [-1, 1]; optionally
  ``keep`` (B, K) int, the patches each image keeps (token masking, as MAE and I-JEPA: the
  others are dropped after their position embedding is added, so the kept ones keep theirs),
  and ``kept`` (B, K) bool, which of them are real where images keep different numbers (I-JEPA's
  contexts): the others are padding, which no token attends to and mean pooling leaves out.
  Output: ``(pooled (B, width), patch_tokens (B, N or K, width))`` in float32. Stochastic depth
  acts only in a pass given a ``'drop_path'`` rng (training's online network).
  """
  config: EncoderConfig

  @nn.compact
  def __call__(self, images, keep=None, kept=None):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    if images.dtype == jnp.uint8:
      images = images.astype(jnp.float32) / 127.5 - 1.0
    b, h, w, _ = images.shape
    p = c.patch_size
    if h % p or w % p:
      raise ValueError(f'image size {(h, w)} is not divisible by the patch size {p}')
    x = nn.Conv(c.width, (p, p), strides=(p, p), padding='VALID', dtype=dtype,
                name='embedding')(images.astype(dtype))
    rows, cols = h // p, w // p
    x = x.reshape(b, rows * cols, c.width) + self._position_embedding(rows, cols).astype(dtype)
    if keep is not None:
      x = jnp.take_along_axis(x, keep[..., None], axis=1)
    if c.pool == 'cls':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, c.width), jnp.float32)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (b, 1, c.width)), x], axis=1)
    mask = None
    if kept is not None:
      if c.pool == 'cls':
        kept = jnp.concatenate([jnp.ones((b, 1), bool), kept], axis=1)
      mask = kept[:, None, None, :]                   # (B, heads, queries, keys)
    block = remat_block(EncoderBlock, c.remat)
    for i in range(c.depth):
      x = block(c.num_heads, int(c.width * c.mlp_ratio), dtype=dtype, attention=c.attention,
                drop_rate=c.drop_path * i / max(c.depth - 1, 1), layer_scale=c.layer_scale,
                name=f'block{i}')(x, mask)
    x = layer_norm.LayerNorm(dtype=dtype, name='encoder_norm')(x).astype(jnp.float32)
    if c.pool == 'cls':
      return x[:, 0], x[:, 1:]
    if kept is not None:
      return jnp.sum(x * kept[..., None], 1) / jnp.maximum(kept.sum(1, keepdims=True), 1), x
    return x.mean(axis=1), x

  def _position_embedding(self, rows, cols):
    """(1, rows * cols, width): learned at the training grid (resized for another), or
    fixed sine-cosine."""
    c = self.config
    if c.posemb == 'sincos':
      return sincos_posemb(rows, cols, c.width)
    grid = (c.image_size // c.patch_size,) * 2 if c.image_size else (rows, cols)
    pos = self.param('pos_embedding', nn.initializers.normal(1 / np.sqrt(c.width)),
                     (1, grid[0] * grid[1], c.width), jnp.float32)
    if grid != (rows, cols):   # e.g. DINO's local views
      pos = jax.image.resize(pos.reshape(1, *grid, c.width), (1, rows, cols, c.width),
                             'bilinear').reshape(1, rows * cols, c.width)
    return pos

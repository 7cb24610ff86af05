"""I-JEPA: predicting the EMA target encoder's features of image blocks from a context block
(Assran et al. 2023), one of the paper's baselines, with its public code's recipe.

Each step draws, as the public code's mask collator does, one target block size and one context
block size for the whole batch (one uniform number sets both a block's scale and its aspect
ratio), then for each image ``num_targets`` target blocks (scale 0.15-0.2 of the patch grid,
aspect ratio 0.75-1.5) and one context block (scale 0.85-1, square) at random places; the context
keeps its patches outside every target block. The context encoder (the online ViT) sees the
context's patches only (token masking); the EMA target encoder sees the whole image, its patch
tokens layer-normalised (no affine); a narrow predictor reads the context tokens with mask tokens
at one target block's positions and predicts their target tokens. The loss is the smooth L1
(beta 1) of the public code over every target token and feature (the paper's text says L2:
``distance='l2'``).

Shapes are static under jit: contexts differ in length per image, so each is padded to the
largest a context can be and the padding is masked out of attention (``vit.ViT``'s ``kept``);
target blocks share their size within a step and are padded to the largest size the scale and
aspect ranges allow. Two departures from the public collator follow from that: it cuts every
image's context to the batch's shortest, in raster order; here each image keeps its whole
context. Where a context block leaves ``min_context`` patches or fewer, the public code draws
again (20 times, then relaxes); here the first of ``context_tries`` places drawn at once that
leaves more is taken, else the place that leaves most. The public collator also redraws a
target block of ``min_keep`` patches or fewer (forever, if every size is that small) and cannot
hold a 1-patch block; here target blocks keep the size drawn (a 4 x 4 grid draws 1 x 1 ones).

No AB variant: I-JEPA already predicts the EMA target's features of other blocks from a context
and their positions, a regression on features where AB predicts a distribution over annotations;
a version that regresses features at a box would be I-JEPA again.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from annoprop_jax import errors
from annoprop_jax.models import layer_norm
from annoprop_jax.models import network as network_lib
from annoprop_jax.models import vit
from annoprop_jax.objectives import method

Network = network_lib.Network
MASK_KEY = 100          # the step key folded with this draws the blocks (apart from drop-path's)
DISTANCES = ('smooth_l1', 'l2')


def block_size(u, scale, aspect_ratio, grid, xp=jnp):
  """(h, w) in patches of a block, as the public collator sizes it from one uniform ``u``:
  area floor(grid^2 * scale), scale and aspect ratio both at ``u`` of their ranges, rounded
  (half to even), each side under ``grid``."""
  keep = xp.floor(grid * grid * (scale[0] + u * (scale[1] - scale[0])))
  ratio = aspect_ratio[0] + u * (aspect_ratio[1] - aspect_ratio[0])
  h = xp.round(xp.sqrt(keep * ratio)).astype(np.int32)
  w = xp.round(xp.sqrt(keep / ratio)).astype(np.int32)
  return xp.minimum(h, grid - 1), xp.minimum(w, grid - 1)


def largest_block(scale, aspect_ratio, grid):
  """The most patches ``block_size`` can give over its ranges: a bound, each side at its own
  largest (static: it sizes the padding)."""
  h = min(grid - 1, round(math.sqrt(math.floor(grid * grid * scale[1]) * aspect_ratio[1])))
  w = min(grid - 1, round(math.sqrt(math.floor(grid * grid * scale[1]) / aspect_ratio[0])))
  return h * w


def block_mask(top, left, h, w, grid):
  """(..., grid^2) bool: the patches of the blocks with corners ``top``, ``left`` (any shape)
  and size (h, w), in raster order."""
  rows = jnp.arange(grid)[:, None]
  cols = jnp.arange(grid)[None, :]
  top, left = top[..., None, None], left[..., None, None]
  inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  return inside.reshape(*inside.shape[:-2], grid * grid)


def indices(mask, slots):
  """(..., N) bool -> the indices of its patches in raster order, padded to ``slots``
  (..., slots), and which are real (..., slots) bool."""
  order = jnp.argsort(~mask, axis=-1, stable=True)[..., :slots]
  real = jnp.arange(slots) < mask.sum(-1, keepdims=True)
  return jnp.where(real, order, 0), real


def _corner(rng, shape, grid, size):
  """The public collator's top-left corner: uniform in [0, grid - size)."""
  return jnp.floor(jax.random.uniform(rng, shape) * (grid - size)).astype(jnp.int32)


def place_blocks(target_corners, target_size, context_corners, context_size, grid, min_context):
  """The blocks at given top-left corners: target blocks (B, M, grid^2) of ``target_size``
  (h, w) at ``target_corners`` (B, M, 2), and each image's context (B, grid^2): the first of its
  context blocks (``context_corners`` (B, tries, 2), ``context_size``) that keeps more than
  ``min_context`` patches outside every target block, else the one that keeps most."""
  targets = block_mask(target_corners[..., 0], target_corners[..., 1], *target_size, grid)
  blocks = block_mask(context_corners[..., 0], context_corners[..., 1], *context_size, grid)
  contexts = blocks & ~targets.any(axis=1, keepdims=True)             # (B, tries, N)
  counts = contexts.sum(-1)
  enough = counts > min_context
  choice = jnp.where(enough.any(-1), jnp.argmax(enough, -1), jnp.argmax(counts, -1))
  return targets, jnp.take_along_axis(contexts, choice[:, None, None], axis=1)[:, 0]


def sample_blocks(rng, batch, grid, config):
  """One step's blocks: the target blocks (B, M, grid^2) and the contexts (B, grid^2), bool."""
  size_rng, target_rng, context_rng = jax.random.split(rng, 3)
  u_target, u_context = jax.random.uniform(size_rng, (2,))
  target_size = block_size(u_target, config.target_scale, config.target_aspect_ratio, grid)
  context_size = block_size(u_context, config.context_scale, (1.0, 1.0), grid)
  corners = []
  for blocks_rng, count, (h, w) in ((target_rng, config.num_targets, target_size),
                                    (context_rng, config.context_tries, context_size)):
    rows_rng, cols_rng = jax.random.split(blocks_rng)
    corners.append(jnp.stack([_corner(rows_rng, (batch, count), grid, h),
                              _corner(cols_rng, (batch, count), grid, w)], -1))
  return place_blocks(corners[0], target_size, corners[1], context_size, grid,
                      config.min_context)


class Predictor(nn.Module):
  """The narrow predictor: context tokens (B, K, D) at patches ``context`` (B, K) and mask
  tokens at each target block's patches ``targets`` (B, M, T) -> predicted tokens (B, M, T, D),
  one pass per target block; ``context_real``/``target_real`` mark padding, which no token
  attends to."""
  width: int
  depth: int
  num_heads: int
  grid: int

  @nn.compact
  def __call__(self, tokens, context=None, targets=None, context_real=None, target_real=None):
    b, k, d = tokens.shape
    if context is None:          # init: every token is context, one block of the first patch
      context = jnp.broadcast_to(jnp.arange(k), (b, k))
      targets = jnp.zeros((b, 1, 1), jnp.int32)
    m, t = targets.shape[1:]
    context_real = jnp.ones((b, k), bool) if context_real is None else context_real
    target_real = jnp.ones((b, m, t), bool) if target_real is None else target_real
    position = vit.sincos_posemb(self.grid, self.grid, self.width)[0]          # (N, width)
    x = nn.Dense(self.width, name='embed')(tokens) + position[context]
    mask_token = self.param('mask_token', nn.initializers.normal(0.02), (self.width,))
    queries = mask_token + position[targets]                                     # (B, M, T, w)
    x = jnp.concatenate([jnp.repeat(x[:, None], m, axis=1), queries], axis=2)
    real = jnp.concatenate([jnp.repeat(context_real[:, None], m, axis=1), target_real], axis=2)
    x, real = x.reshape(b * m, k + t, self.width), real.reshape(b * m, 1, 1, k + t)
    for i in range(self.depth):
      x = vit.EncoderBlock(self.num_heads, 4 * self.width, name=f'block{i}')(x, real)
    x = layer_norm.LayerNorm(name='norm')(x[:, k:])
    return nn.Dense(d, name='project')(x).reshape(b, m, t, d)


def normalise(tokens, eps=1e-5):
  """Layer norm over features without affine parameters (the public code's targets)."""
  mean = tokens.mean(-1, keepdims=True)
  return (tokens - mean) / jnp.sqrt(tokens.var(-1, keepdims=True) + eps)


def target_tokens(tokens, targets):
  """The target encoder's patch tokens (B, N, D), normalised, at the target blocks' patches
  ``targets`` (B, M, T) -> (B, M, T, D), without gradient."""
  return jax.lax.stop_gradient(jax.vmap(lambda x, where: x[where])(normalise(tokens), targets))


def ijepa_loss(predicted, targets, real, distance='smooth_l1'):
  """The mean over real target tokens and their features of the smooth L1 (beta 1) or squared
  distance of ``predicted`` to ``targets`` (B, M, T, D); ``real`` (B, M, T)."""
  diff = jnp.abs(predicted.astype(jnp.float32) - targets)
  per = jnp.where(diff < 1.0, 0.5 * diff ** 2, diff - 0.5) if distance == 'smooth_l1' else diff ** 2
  count = jnp.maximum(real.sum(), 1) * predicted.shape[-1]
  return jnp.sum(per * real[..., None]) / count


class IJEPA(method.Method):
  ab_name = None                 # see the module docstring
  probe_params = 'target'        # I-JEPA evaluates its target encoder
  tiny_grid = 4                  # blocks of a 2 x 2 grid would be empty

  @staticmethod
  def default_config():
    return ml_collections.ConfigDict(dict(
        name='ijepa',
        num_targets=4,
        target_scale=(0.15, 0.2),        # of the patch grid, per target block
        target_aspect_ratio=(0.75, 1.5),
        context_scale=(0.85, 1.0),       # the context block (square), before removing targets
        min_context=2,                   # a context keeps more patches than this (public code:
                                         # 10 of 256 at 224 px / 14; 2 of 16-64 here)
        context_tries=20,
        predictor_width=64,              # the public code's ViT-H/14: 384 wide, 12 deep
        predictor_depth=2,
        predictor_num_heads=4,
        distance='smooth_l1',            # the public code's; the paper's text: 'l2'
    ))

  @staticmethod
  def tiny(config):
    config.update(predictor_width=32, predictor_depth=1, predictor_num_heads=2, min_context=2)

  @staticmethod
  def validate(config):
    c = config.objective
    for name in ('target_scale', 'context_scale', 'target_aspect_ratio'):
      low, high = getattr(c, name)
      if not 0 < low <= high or (name != 'target_aspect_ratio' and high > 1):
        raise errors.ConfigError(f'objective.{name} must be (low, high) with 0 < low <= high'
                                 f'{" <= 1" if name != "target_aspect_ratio" else ""}, got '
                                 f'{tuple(getattr(c, name))}')
    if c.num_targets < 1 or c.context_tries < 1:
      raise errors.ConfigError('objective.num_targets and objective.context_tries must be >= 1')
    if c.distance not in DISTANCES:
      raise errors.ConfigError(f'objective.distance must be one of {DISTANCES}, got '
                               f'{c.distance!r}')
    if c.predictor_width % c.predictor_num_heads or c.predictor_width % 4:
      raise errors.ConfigError('objective.predictor_width must be divisible by 4 and by '
                               'objective.predictor_num_heads')
    if config.data.annotation.local_views.num:
      raise errors.ConfigError('ijepa masks whole views: data.annotation.local_views.num must '
                               'be 0')
    grid = config.data.annotation.views.size // config.model.patch_size
    if grid < 3:
      raise errors.ConfigError(f'ijepa needs a patch grid of at least 3 x 3, got {grid} x {grid} '
                               f'(data.annotation.views.size / model.patch_size)')

  def modules(self, bootstrap):
    del bootstrap
    c, e = self.config, self.encoder_config
    return dict(head=Predictor(c.predictor_width, c.predictor_depth, c.predictor_num_heads,
                               grid=e.image_size // e.patch_size),
                head_reads='tokens')

  def base_loss(self, inputs, bootstrap):
    del bootstrap
    c, patch = self.config, self.encoder_config.patch_size
    images = inputs.annotation['images']
    images = images.reshape(-1, *images.shape[2:])                     # every view an image
    grid = images.shape[1] // patch
    target_blocks, contexts = sample_blocks(jax.random.fold_in(inputs.rng, MASK_KEY),
                                            images.shape[0], grid, c)
    targets, target_real = indices(target_blocks,
                                   largest_block(c.target_scale, c.target_aspect_ratio, grid))
    context, context_real = indices(contexts, (grid - 1) ** 2)
    _, full = self.apply(inputs.target_params, Network.encode, images)
    wanted = target_tokens(full, targets)                                 # (B, M, T, D)
    _, tokens = self.apply(inputs.params, Network.encode, images, context, context_real,
                           rng=method.online_rng(inputs, 'annotation'))
    predicted = self.apply(inputs.params, Network.base, tokens, context, targets, context_real,
                           target_real)
    loss = ijepa_loss(predicted, wanted, target_real, c.distance)
    metrics = {'ijepa_loss': loss,
               'context_patches': context_real.sum(-1).mean(),
               'target_patches': target_real[:, 0].sum(-1).mean(),
               'target_feature_std': normalise(full).std(axis=0).mean()}  # 0: collapsed
    return method.BaseResult(loss, metrics, inputs.method_state)

  def ab_log_probs(self, params, phi, candidates):
    raise NotImplementedError('ijepa has no AB variant')

  def target_probs(self, inputs, pooled, candidates):
    raise NotImplementedError('ijepa has no AB variant')

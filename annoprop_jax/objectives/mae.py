"""MAE: masked autoencoding, one of the paper's baselines (He et al. 2022, Table 7's recipe).

Each image's patches are masked at random (``mask_ratio``, 0.75); the encoder sees the visible
patches only (token masking: each keeps its position embedding); a light decoder gets their
tokens back in place with a learned mask token at every masked position, adds a fixed
sine-cosine position embedding and predicts each patch's pixels. The loss is the mean squared
error over the masked patches only, against pixels normalised per patch (``norm_pix_loss``).

MAE has no AB variant: its annotations are the image's own pixels, not a distribution over
semantic annotations that a neighbouring crop could be asked to predict.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax import errors
from annoprop_jax.models import layer_norm
from annoprop_jax.models import network as network_lib
from annoprop_jax.models import vit
from annoprop_jax.objectives import method

Network = network_lib.Network
MASK_KEY = 100          # the step key folded with this draws the masks (apart from drop-path's)


def masks_from_noise(noise, mask_ratio):
  """(keep (B, K) the visible patches in the order drawn, restore (B, N) each patch's place in
  [visible, masked], masked (B, N) bool) from ``noise`` (B, N): the K patches of lowest noise
  are visible, K = floor(N * (1 - mask_ratio)), at least 1 (as the official MAE)."""
  num_keep = max(1, int(noise.shape[1] * (1.0 - mask_ratio)))
  order = jnp.argsort(noise, axis=1)
  restore = jnp.argsort(order, axis=1)
  return order[:, :num_keep], restore, restore >= num_keep


def random_masks(rng, batch, num_patches, mask_ratio):
  """``masks_from_noise`` of uniform noise: a uniform random subset masked per image."""
  return masks_from_noise(jax.random.uniform(rng, (batch, num_patches)), mask_ratio)


def patchify(images, patch):
  """(B, H, W, C) -> (B, N, patch * patch * C), patches in row-major order, pixels (row, col,
  channel) within each, as the ViT's patch embedding reads them."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def mae_loss(predicted, images, masked, patch, norm_pix_loss=True):
  """Mean over masked patches of the per-patch mean squared error of ``predicted`` (B, N, P)
  against the pixels of ``images`` (B, H, W, C, in [-1, 1]), normalised per patch (mean 0,
  unbiased variance 1)."""
  target = patchify(images.astype(jnp.float32), patch)
  if norm_pix_loss:                    # the official MAE's: the unbiased variance
    mean = target.mean(-1, keepdims=True)
    var = target.var(-1, keepdims=True, ddof=1)
    target = (target - mean) / jnp.sqrt(var + 1e-6)
  per_patch = jnp.mean((predicted.astype(jnp.float32) - target) ** 2, axis=-1)
  return jnp.sum(per_patch * masked) / jnp.maximum(masked.sum(), 1)


class PixelDecoder(nn.Module):
  """Visible tokens (B, K, D) and ``restore`` (B, N) -> each patch's pixels (B, N, P)."""
  width: int
  depth: int
  num_heads: int
  grid: int                      # patches per side
  pixels: int                    # patch * patch * 3

  @nn.compact
  def __call__(self, tokens, restore=None):
    b, k, _ = tokens.shape
    n = self.grid * self.grid
    if restore is None:          # nothing masked (init, or a look at the whole image)
      restore = jnp.broadcast_to(jnp.arange(n), (b, n))
    x = nn.Dense(self.width, kernel_init=nn.initializers.xavier_uniform(), name='embed')(tokens)
    mask_token = self.param('mask_token', nn.initializers.normal(0.02), (1, 1, self.width))
    x = jnp.concatenate([x, jnp.broadcast_to(mask_token, (b, n - k, self.width))], axis=1)
    x = jnp.take_along_axis(x, restore[..., None], axis=1)           # back in patch order
    x = x + vit.sincos_posemb(self.grid, self.grid, self.width)
    for i in range(self.depth):
      x = vit.EncoderBlock(self.num_heads, 4 * self.width, name=f'block{i}')(x)
    x = layer_norm.LayerNorm(name='norm')(x)
    return nn.Dense(self.pixels, kernel_init=nn.initializers.xavier_uniform(), name='pixels')(x)


class MAE(method.Method):
  ab_name = None                 # no AB variant (see the module docstring)
  probe_params = 'online'

  @staticmethod
  def default_config():
    return ml_collections.ConfigDict(dict(
        name='mae',
        mask_ratio=0.75,
        norm_pix_loss=True,      # targets: each patch's pixels normalised to mean 0, variance 1
        decoder_width=128,       # the light decoder (MAE's: 512 wide, 8 deep at ViT-B/L)
        decoder_depth=2,
        decoder_num_heads=4,
    ))

  @staticmethod
  def tiny(config):
    config.update(decoder_width=32, decoder_depth=1, decoder_num_heads=2)

  @staticmethod
  def validate(config):
    if not 0.0 < config.objective.mask_ratio < 1.0:
      raise errors.ConfigError(f'objective.mask_ratio must be in (0, 1), got '
                               f'{config.objective.mask_ratio}')
    if config.objective.decoder_width % config.objective.decoder_num_heads:
      raise errors.ConfigError('objective.decoder_width must be divisible by '
                               'objective.decoder_num_heads')
    if config.data.annotation.local_views.num:
      raise errors.ConfigError('mae reconstructs whole views: data.annotation.local_views.num '
                               'must be 0')

  def modules(self, bootstrap):
    del bootstrap
    c, e = self.config, self.encoder_config
    return dict(head=PixelDecoder(c.decoder_width, c.decoder_depth, c.decoder_num_heads,
                                  grid=e.image_size // e.patch_size,
                                  pixels=e.patch_size * e.patch_size * 3),
                head_reads='tokens')

  def base_loss(self, inputs, bootstrap):
    del bootstrap
    params, c, patch = inputs.params, self.config, self.encoder_config.patch_size
    images = inputs.annotation['images']
    images = images.reshape(-1, *images.shape[2:])                     # every view an image
    if images.dtype == jnp.uint8:
      images = images.astype(jnp.float32) / 127.5 - 1.0
    b, n = images.shape[0], (images.shape[1] // patch) * (images.shape[2] // patch)
    keep, restore, masked = random_masks(jax.random.fold_in(inputs.rng, MASK_KEY), b, n,
                                         c.mask_ratio)
    _, tokens = self.apply(params, Network.encode, images, keep,
                           rng=method.online_rng(inputs, 'annotation'))
    predicted = self.apply(params, Network.base, tokens, restore)
    loss = mae_loss(predicted, images, masked, patch, c.norm_pix_loss)
    return method.BaseResult(loss, {'mae_loss': loss}, inputs.method_state)

  def ab_log_probs(self, params, phi, candidates):
    raise NotImplementedError('mae has no AB variant')

  def target_probs(self, inputs, pooled, candidates):
    raise NotImplementedError('mae has no AB variant')

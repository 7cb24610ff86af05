"""CLIP: symmetric InfoNCE between the annotation batch's images and their captions.

p(l_i|x) = softmax_i(t * phi(x) . psi(l_i)) over the batch's captions (METHOD.md), with phi the
ViT encoder + a linear image projection, psi the text tower + a linear text projection, both
L2-normalised in the joint space, and t = exp(logit_scale) a learned fp32 scale clamped to
<= max_logit_scale. Online parameters only; one view per annotation image (view 0 is used).

Params: ``{'encoder', 'image_projection', 'text', 'text_projection', 'logit_scale'}``.
Captions that repeat within a batch (common on the scenes dataset) count as negatives of each
other, as in CLIP.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax.data import tokenizer
from annoprop_jax.models import heads
from annoprop_jax.models import text
from annoprop_jax.models import vit


def default_config():
  return ml_collections.ConfigDict(dict(
      name='clip',
      embed_dim=128,                         # joint image-text space
      text_width=128,
      text_depth=2,
      text_num_heads=4,
      text_mlp_ratio=4.0,
      text_max_len=162,                      # >= data.annotation.max_caption_bytes + 2
      init_logit_scale=math.log(1 / 0.07),   # CLIP's initial temperature 0.07
      max_logit_scale=100.0,                 # clamp on exp(logit_scale), METHOD.md
  ))


def clamped_scale(logit_scale, max_scale):
  """exp(logit_scale) clamped to ``max_scale``, in float32."""
  return jnp.exp(jnp.minimum(logit_scale.astype(jnp.float32), math.log(max_scale)))


def clip_loss(image_emb, text_emb, scale):
  """Symmetric InfoNCE for matching rows of (B, D) normalised embeddings.

  logits = scale * image_emb @ text_emb.T; the loss averages image->text and text->image
  cross-entropy with the diagonal as the positives. Returns (loss, image->text accuracy).
  """
  if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
    raise ValueError(f'embeddings must both be (B, D), got {image_emb.shape} and {text_emb.shape}')
  logits = scale * image_emb.astype(jnp.float32) @ text_emb.astype(jnp.float32).T
  positives = jnp.arange(logits.shape[0])
  i2t = -jnp.diagonal(jax.nn.log_softmax(logits, axis=1)).mean()
  t2i = -jnp.diagonal(jax.nn.log_softmax(logits, axis=0)).mean()
  accuracy = (jnp.argmax(logits, axis=1) == positives).mean()
  return 0.5 * (i2t + t2i), accuracy


class CLIPModel(nn.Module):
  """Image and text towers projected into one normalised space, plus the learned scale."""
  encoder_config: dict         # ViT keyword arguments
  embed_dim: int = 128
  text_width: int = 128
  text_depth: int = 2
  text_num_heads: int = 4
  text_mlp_ratio: float = 4.0
  text_max_len: int = 162
  init_logit_scale: float = math.log(1 / 0.07)
  max_logit_scale: float = 100.0

  def setup(self):
    self.encoder = vit.ViT(**self.encoder_config)
    self.image_projection = nn.Dense(self.embed_dim, use_bias=False)
    self.text = text.TextTransformer(
        width=self.text_width, depth=self.text_depth, num_heads=self.text_num_heads,
        mlp_ratio=self.text_mlp_ratio, max_len=self.text_max_len,
        dtype=self.encoder_config.get('dtype', 'float32'))
    self.text_projection = nn.Dense(self.embed_dim, use_bias=False)
    self.logit_scale = self.param('logit_scale', nn.initializers.constant(self.init_logit_scale),
                                  (), jnp.float32)

  def image_features(self, images):
    """(B, S, S, 3) -> (pooled (B, width), patch tokens (B, N, width)) of the encoder."""
    return self.encoder(images)

  def embed_images(self, images):
    """(B, S, S, 3) -> (B, embed_dim) normalised image embeddings."""
    pooled, _ = self.encoder(images)
    return heads.l2_normalize(self.image_projection(pooled))

  def embed_text(self, tokens):
    """(B, L) tokens -> (B, embed_dim) normalised caption embeddings."""
    pooled, _ = self.text(tokens)
    return heads.l2_normalize(self.text_projection(pooled))

  def scale(self):
    return clamped_scale(self.logit_scale, self.max_logit_scale)

  def __call__(self, images, tokens):
    return self.embed_images(images), self.embed_text(tokens), self.scale()


class CLIP:
  """Objective: pure ``init`` and ``loss`` over parameter pytrees, plus embedding helpers."""
  streams = ('annotation',)

  def __init__(self, config, encoder_config):
    self.config = config
    self.net = CLIPModel(
        encoder_config=dict(encoder_config), embed_dim=config.embed_dim,
        text_width=config.text_width, text_depth=config.text_depth,
        text_num_heads=config.text_num_heads, text_mlp_ratio=config.text_mlp_ratio, text_max_len=config.text_max_len,
        init_logit_scale=config.init_logit_scale, max_logit_scale=config.max_logit_scale)

  def tokens(self, caption):
    """(B, C) uint8 caption bytes -> (B, C + 2) tokens, checked against the text tower."""
    if caption.shape[-1] + 2 > self.config.text_max_len:
      raise ValueError(
          f'captions of {caption.shape[-1]} bytes need objective.text_max_len >= '
          f'{caption.shape[-1] + 2} (BOS and EOS), got {self.config.text_max_len}; raise it or '
          f'lower data.annotation.max_caption_bytes')
    return tokenizer.tokens_from_caption_bytes(caption)

  def init(self, rng, batch):
    data = batch['annotation']
    params = self.net.init(rng, data['images'][:1, 0], self.tokens(data['caption'][:1]))
    return params['params'], {}

  def image_embeddings(self, params, images):
    """(B, S, S, 3) images -> (B, embed_dim) normalised joint-space embeddings."""
    return self.net.apply({'params': params}, images, method=CLIPModel.embed_images)

  def text_embeddings(self, params, tokens):
    """(B, L) tokens -> (B, embed_dim) normalised joint-space embeddings."""
    return self.net.apply({'params': params}, tokens, method=CLIPModel.embed_text)

  def caption_embeddings(self, params, caption):
    """(B, C) uint8 caption bytes -> (B, embed_dim) normalised joint-space embeddings."""
    return self.text_embeddings(params, self.tokens(caption))

  def logit_scale(self, params):
    """The clamped scale exp(logit_scale) (<= max_logit_scale)."""
    return clamped_scale(params['logit_scale'], self.config.max_logit_scale)

  def loss(self, params, target_params, extras, batch, rng, step):
    del target_params, rng, step
    data = batch['annotation']
    images = data['images'][:, 0]                   # (B, S, S, 3): one view per image
    image_emb, text_emb, scale = self.net.apply(
        {'params': params}, images, self.tokens(data['caption']))
    loss, accuracy = clip_loss(image_emb, text_emb, scale)
    return loss, ({'clip_loss': loss, 'clip_i2t_accuracy': accuracy,
                   'clip_logit_scale': scale}, extras)

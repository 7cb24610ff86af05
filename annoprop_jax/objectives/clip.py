"""CLIP: symmetric InfoNCE between the annotation batch's images and their captions.

p(l_i|x) = softmax_i(t * phi(x) . psi(l_i)) over the batch's captions (docs/method.md), with phi the
ViT encoder + a linear image projection, psi the text tower + a linear text projection, both
L2-normalised in the joint space, and t = exp(logit_scale) a learned fp32 scale clamped to
<= max_logit_scale. Online parameters only; one view per annotation image (view 0 is used).
Captions that repeat within a batch (common on the scenes dataset) count as negatives of each
other, as in CLIP.

Params: ``{'encoder', 'head': {'projection'}, 'annotation_encoder': {'text', 'projection',
'logit_scale'}}``. With annotation bootstrapping the candidates are the batch's captions:
p(l | x) is the target network's image->text softmax, and Q_AB scores psi_AB(l), a second
projection of the same text features (``ab_candidate_head``).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax import errors
from annoprop_jax.data import tokenizer
from annoprop_jax.models import heads
from annoprop_jax.models import network as network_lib
from annoprop_jax.models import text
from annoprop_jax.objectives import method

Network = network_lib.Network


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


class CaptionTower(nn.Module):
  """Caption tokens -> (psi(l) normalised, the text features, the clamped logit scale)."""
  dim: int
  text_kwargs: dict             # TextTransformer keyword arguments
  init_logit_scale: float
  max_logit_scale: float

  @nn.compact
  def __call__(self, tokens):
    features, _ = text.TextTransformer(**self.text_kwargs, name='text')(tokens)
    log_scale = self.param('logit_scale', nn.initializers.constant(self.init_logit_scale), (),
                           jnp.float32)
    return (heads.Projection(self.dim, name='projection')(features), features,
            clamped_scale(log_scale, self.max_logit_scale))


class CLIP(method.Method):
  ab_name = 'ab_clip'
  probe_params = 'online'

  @staticmethod
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
        max_logit_scale=100.0,                 # clamp on exp(logit_scale), docs/method.md
    ))

  @staticmethod
  def tiny(config):
    config.update(embed_dim=32, text_width=32, text_depth=1, text_num_heads=2)

  @staticmethod
  def validate(config):
    need = config.data.annotation.max_caption_bytes + 2
    if config.objective.text_max_len < need:
      raise errors.ConfigError(
          f'objective.text_max_len={config.objective.text_max_len} is too small for '
          f'data.annotation.max_caption_bytes={need - 2} (BOS and EOS): set it to >= {need}')

  def modules(self, bootstrap):
    c = self.config
    tower = CaptionTower(c.embed_dim, dict(
        width=c.text_width, depth=c.text_depth, num_heads=c.text_num_heads,
        mlp_ratio=c.text_mlp_ratio, max_len=c.text_max_len,
        dtype=self.encoder_config.dtype, attention=self.encoder_config.attention),
                         c.init_logit_scale, c.max_logit_scale)
    modules = dict(head=heads.Projection(c.embed_dim), annotation_encoder=tower)
    if bootstrap:
      modules.update(ab_head=heads.ScaledQueryHead(c.embed_dim, math.exp(c.init_logit_scale),
                                                   c.max_logit_scale),
                     ab_candidate_head=heads.Projection(c.embed_dim))
    return modules

  def tokens(self, caption):
    """(B, C) uint8 caption bytes -> (B, C + 2) tokens, checked against the text tower."""
    if caption.shape[-1] + 2 > self.config.text_max_len:
      raise ValueError(
          f'captions of {caption.shape[-1]} bytes need objective.text_max_len >= '
          f'{caption.shape[-1] + 2} (BOS and EOS), got {self.config.text_max_len}; raise it or '
          f'lower data.annotation.max_caption_bytes')
    return tokenizer.tokens_from_caption_bytes(caption)

  def init_inputs(self, annotation):
    tokens = self.tokens(annotation['caption'][:1])
    return dict(annotations=tokens)

  def base_loss(self, inputs, bootstrap):
    annotation, params = inputs.annotation, inputs.params
    tokens = self.tokens(annotation['caption'])
    pooled = self.encode_views(params, annotation['images'][:, :1],
                               method.online_rng(inputs, 'annotation'))[0][:, 0]
    image = self.image_embedding(params, pooled)
    captions, features, scale = self.apply(params, Network.embed_annotations, tokens)
    loss, accuracy = clip_loss(image, captions, scale)
    metrics = {'clip_loss': loss, 'clip_i2t_accuracy': accuracy, 'clip_logit_scale': scale}
    if not bootstrap:
      return method.BaseResult(loss, metrics, inputs.method_state)
    target = jax.lax.stop_gradient(
        self.apply(inputs.target_params, Network.embed_annotations, tokens))
    return method.BaseResult(loss, metrics, inputs.method_state,
                             candidates=self._candidates(params, captions, features, scale),
                             target_candidates=self._candidates(inputs.target_params, *target))

  def image_embedding(self, params, pooled):
    """Pooled features (..., D) -> the image's normalised embedding in the joint space."""
    return self.apply(params, Network.base, pooled)

  def embed_images(self, params, images):
    """(B, S, S, 3) uint8 images -> normalised embeddings (B, E) (zero-shot, retrieval)."""
    return self.image_embedding(params, self.encode_views(params, images[:, None])[0][:, 0])

  def embed_captions(self, params, caption):
    """(B, C) uint8 caption bytes -> normalised embeddings (B, E) (zero-shot, retrieval)."""
    return self.apply(params, Network.embed_annotations, self.tokens(caption))[0]

  def _candidates(self, params, captions, features, scale):
    return method.Candidates(base=captions, scale=scale,
                             ab=self.apply(params, Network.ab_candidates, features))

  ab_log_probs = method.contrastive_ab_log_probs

  def target_probs(self, inputs, pooled, candidates):
    z = self.apply(inputs.target_params, Network.base, pooled)
    return jax.nn.softmax(candidates.scale * z @ candidates.base.T, axis=-1)

"""The base methods as AB variants: how each builds candidates, p(l|x) and Q_AB (METHOD.md).

A variant supplies the heads of ``bootstrap.BootstrapNet`` and four pure functions:
``base`` (base loss on the annotation batch with online parameters, plus the candidate
annotations for the AB heads, online and target), ``ab_log_probs`` (log Q_AB over the
candidates), ``target_probs`` (the target network's p(l | x_j)), and the initial method state.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from annoprop_jax.data import tokenizer
from annoprop_jax.models import heads
from annoprop_jax.models import text
from annoprop_jax.objectives import bootstrap
from annoprop_jax.objectives import clip
from annoprop_jax.objectives import dino
from annoprop_jax.objectives import simclr
from annoprop_jax.objectives import supervised


class ScaledQueryHead(nn.Module):
  """phi_AB -> L2-normalised query and its learned logit scale (fp32, clamped <= max_scale)."""
  dim: int
  init_scale: float = 10.0
  max_scale: float = 100.0

  @nn.compact
  def __call__(self, phi):
    query = heads.l2_normalize(nn.Dense(self.dim, name='projection')(phi))
    log_scale = self.param('logit_scale', lambda _: jnp.log(jnp.float32(self.init_scale)))
    return query, jnp.minimum(jnp.exp(log_scale), self.max_scale)


def _pooled(net, params, images):
  return bootstrap.encode_views(net, params, images)[0]


def _apply(net, params, x, method):
  return net.apply({'params': params}, x, method=method)


class Variant:
  """Defaults: no method state; the candidate head (if any) takes pooled image features."""

  def __init__(self, config):
    self.config = config

  def init_extras(self):
    return {}

  def candidate_example(self, annotation):
    """An input for initialising the candidate head; None means the pooled images."""
    del annotation
    return None


class SimCLRVariant(Variant):
  """Candidates: the annotation batch's augmented views. p = EMA softmax over those views."""

  def modules(self):
    c = self.config
    projection = dict(hidden_dim=c.head_hidden_dim, out_dim=c.head_dim, num_layers=c.head_layers)
    return dict(head=heads.ProjectionHead(**projection),
                ab_head=ScaledQueryHead(c.head_dim, init_scale=1 / c.temperature),
                ab_candidate_head=heads.ProjectionHead(**projection))

  def base(self, net, params, target_params, extras, ann, step):
    del step
    pooled = _pooled(net, params, ann['images'])                       # (B, 2, D)
    z = _apply(net, params, pooled, bootstrap.BootstrapNet.base)
    loss, accuracy = simclr.nt_xent(z, self.config.temperature)
    target_pooled = jax.lax.stop_gradient(_pooled(net, target_params, ann['images']))
    flat = lambda x: x.reshape(-1, x.shape[-1])
    cands = {
        'online': flat(_apply(net, params, pooled, bootstrap.BootstrapNet.ab_candidates)),
        'target': {
            'base': flat(_apply(net, target_params, target_pooled, bootstrap.BootstrapNet.base)),
            'ab': flat(_apply(net, target_params, target_pooled,
                              bootstrap.BootstrapNet.ab_candidates)),
        },
    }
    return loss, {'simclr_loss': loss, 'simclr_accuracy': accuracy}, extras, cands

  def ab_log_probs(self, net, params, phi, cands, target=False):
    query, scale = _apply(net, params, phi, bootstrap.BootstrapNet.ab)
    psi = cands['ab'] if target else cands
    return jax.nn.log_softmax(scale * query @ psi.T, axis=-1)

  def target_probs(self, net, target_params, pooled, cands, extras, step):
    del extras, step
    z = _apply(net, target_params, pooled, bootstrap.BootstrapNet.base)
    return jax.nn.softmax(z @ cands['base'].T / self.config.temperature, axis=-1)


class DINOVariant(Variant):
  """Candidates: the K prototypes. p = the EMA teacher's centred, sharpened distribution."""

  def modules(self):
    c = self.config
    kwargs = dict(num_prototypes=c.num_prototypes, hidden_dim=c.head_hidden_dim,
                  bottleneck_dim=c.head_bottleneck_dim, num_layers=c.head_layers)
    return dict(head=heads.PrototypeHead(**kwargs), ab_head=heads.PrototypeHead(**kwargs))

  def init_extras(self):
    return {'center': jnp.zeros((self.config.num_prototypes,), jnp.float32)}

  def base(self, net, params, target_params, extras, ann, step):
    cfg = self.config
    frozen = step < cfg.freeze_prototypes_steps
    for head in ('head', 'ab_head'):
      p = params[head]['prototypes']
      params = {**params, head: {**params[head], 'prototypes': jnp.where(
          frozen, jax.lax.stop_gradient(p), p)}}
    teacher = jax.lax.stop_gradient(_apply(net, target_params, _pooled(
        net, target_params, ann['images']), bootstrap.BootstrapNet.base))
    student = _apply(net, params, _pooled(net, params, ann['images']),
                     bootstrap.BootstrapNet.base)
    if 'local_images' in ann:
      local = _apply(net, params, _pooled(net, params, ann['local_images']),
                     bootstrap.BootstrapNet.base)
      student = jnp.concatenate([student, local], axis=1)
    tau_t = dino.teacher_temperature(cfg, step)
    loss, p = dino.dino_loss(student, teacher, extras['center'], cfg.student_temperature, tau_t)
    center = (cfg.center_momentum * extras['center']
              + (1 - cfg.center_momentum) * teacher.mean(axis=(0, 1)))   # base teacher only
    metrics = {'dino_loss': loss, 'teacher_entropy': dino.entropy(p).mean(),
               'teacher_temperature': tau_t}
    return loss, metrics, {'center': center}, {'online': None, 'target': None}

  def ab_log_probs(self, net, params, phi, cands, target=False):
    del cands, target
    logits = _apply(net, params, phi, bootstrap.BootstrapNet.ab)
    return jax.nn.log_softmax(logits / self.config.student_temperature, axis=-1)

  def target_probs(self, net, target_params, pooled, cands, extras, step):
    del cands
    g = _apply(net, target_params, pooled, bootstrap.BootstrapNet.base)
    return dino.teacher_distribution(g, extras['center'], dino.teacher_temperature(
        self.config, step))


class SupervisedVariant(Variant):
  """Candidates: the class list. p = the EMA classifier's softmax."""

  def modules(self):
    k = self.config.num_classes
    return dict(head=nn.Dense(k, kernel_init=nn.initializers.zeros),
                ab_head=nn.Dense(k, kernel_init=nn.initializers.zeros))

  def base(self, net, params, target_params, extras, ann, step):
    del target_params, step
    logits = _apply(net, params, _pooled(net, params, ann['images']),
                    bootstrap.BootstrapNet.base)                         # (B, V, K)
    targets = supervised.label_targets(ann['labels'], self.config.num_classes,
                                       self.config.multi_label)
    loss = -jnp.einsum('bk,bvk->bv', targets, jax.nn.log_softmax(logits, -1)).mean()
    accuracy = (jnp.argmax(logits, -1) == jnp.argmax(targets, -1)[:, None]).mean()
    return loss, {'supervised_loss': loss, 'train_accuracy': accuracy}, extras, {
        'online': None, 'target': None}

  def ab_log_probs(self, net, params, phi, cands, target=False):
    del cands, target
    return jax.nn.log_softmax(_apply(net, params, phi, bootstrap.BootstrapNet.ab), axis=-1)

  def target_probs(self, net, target_params, pooled, cands, extras, step):
    del cands, extras, step
    return jax.nn.softmax(_apply(net, target_params, pooled, bootstrap.BootstrapNet.base), -1)


class ImageProjection(nn.Module):
  """Pooled image features -> normalised joint image-text embedding."""
  dim: int

  @nn.compact
  def __call__(self, pooled):
    return heads.l2_normalize(nn.Dense(self.dim, use_bias=False, name='projection')(pooled))


class CaptionTower(nn.Module):
  """Caption tokens -> (psi(l), psi_AB(l), CLIP scale): one text tower, two projections."""
  dim: int
  text_kwargs: dict
  init_logit_scale: float
  max_logit_scale: float

  @nn.compact
  def __call__(self, tokens):
    pooled, _ = text.TextTransformer(**self.text_kwargs, name='text')(tokens)
    base = heads.l2_normalize(nn.Dense(self.dim, use_bias=False, name='text_projection')(pooled))
    ab = heads.l2_normalize(nn.Dense(self.dim, use_bias=False, name='ab_text_projection')(pooled))
    log_scale = self.param('logit_scale', nn.initializers.constant(self.init_logit_scale), (),
                           jnp.float32)
    return base, ab, clip.clamped_scale(log_scale, self.max_logit_scale)


class CLIPVariant(SimCLRVariant):
  """Candidates: the annotation batch's captions. p = EMA image->text softmax over them."""

  def modules(self):
    c = self.config
    text_kwargs = dict(width=c.text_width, depth=c.text_depth, num_heads=c.text_num_heads,
                       mlp_ratio=c.text_mlp_ratio, max_len=c.text_max_len)
    return dict(head=ImageProjection(c.embed_dim),
                ab_head=ScaledQueryHead(c.embed_dim, init_scale=float(np.exp(c.init_logit_scale)),
                                        max_scale=c.max_logit_scale),
                ab_candidate_head=CaptionTower(c.embed_dim, text_kwargs, c.init_logit_scale,
                                               c.max_logit_scale))

  def candidate_example(self, annotation):
    return self.tokens(annotation['caption'][:1])

  def tokens(self, caption):
    if caption.shape[-1] + 2 > self.config.text_max_len:
      raise ValueError(f'captions of {caption.shape[-1]} bytes need objective.text_max_len >= '
                       f'{caption.shape[-1] + 2}, got {self.config.text_max_len}')
    return tokenizer.tokens_from_caption_bytes(caption)

  def base(self, net, params, target_params, extras, ann, step):
    del step
    tokens = self.tokens(ann['caption'])
    images = ann['images'][:, :1]                                       # one view per image
    image = _apply(net, params, _pooled(net, params, images)[:, 0], bootstrap.BootstrapNet.base)
    captions, ab_captions, scale = _apply(net, params, tokens,
                                          bootstrap.BootstrapNet.ab_candidates)
    loss, accuracy = clip.clip_loss(image, captions, scale)
    target_captions, target_ab, target_scale = jax.lax.stop_gradient(
        _apply(net, target_params, tokens, bootstrap.BootstrapNet.ab_candidates))
    cands = {'online': ab_captions,
             'target': {'base': target_captions, 'ab': target_ab, 'scale': target_scale}}
    metrics = {'clip_loss': loss, 'clip_i2t_accuracy': accuracy, 'clip_logit_scale': scale}
    return loss, metrics, extras, cands

  def target_probs(self, net, target_params, pooled, cands, extras, step):
    del extras, step
    z = _apply(net, target_params, pooled, bootstrap.BootstrapNet.base)
    return jax.nn.softmax(cands['scale'] * z @ cands['base'].T, axis=-1)


VARIANTS = {'ab_simclr': SimCLRVariant, 'ab_dino': DINOVariant, 'ab_sup': SupervisedVariant,
            'ab_clip': CLIPVariant}

"""AdamW with warm-up + cosine learning rate, scheduled weight decay, a decay mask and gradient
clipping (over all gradients, per parameter, or per loss)."""
import re

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from annoprop_jax import errors

# Parameters that never get weight decay: biases, norms, position embeddings, cls token,
# learned scales (matched against the '/'-joined parameter path).
NO_DECAY_PATTERN = r'(^|/)(bias|scale|pos_embedding|cls|logit_scale)$'
# What ``grad_clip_norm`` bounds: the norm of all gradients together, of each parameter's
# gradient on its own (official DINO), or of each loss's gradient (base, AB) before they add up.
CLIP_MODES = ('global', 'per_parameter', 'per_loss')


def default_config():
  return ml_collections.ConfigDict(dict(
      learning_rate=1e-3,
      warmup_steps=100,
      min_learning_rate=1e-6,
      b1=0.9,
      b2=0.999,
      weight_decay=0.04,
      weight_decay_end=0.04,   # cosine schedule from weight_decay to this (DINO: 0.04 -> 0.4)
      grad_clip_norm=0.0,      # gradient clipping to this norm, 0 = off ...
      # ... of what: 'global' (all gradients together), 'per_parameter' (each parameter's own
      # gradient, as official DINO clips) or 'per_loss' (each loss's gradient on its own before
      # they add up, so that the AB loss cannot shrink the base loss's update; one backward pass
      # per loss)
      grad_clip_mode='global',
  ))


def validate(config):
  """One-line errors for the ``optimizer`` block."""
  if config.grad_clip_mode not in CLIP_MODES:
    raise errors.ConfigError(f'optimizer.grad_clip_mode must be one of {CLIP_MODES}, got '
                             f'{config.grad_clip_mode!r}')
  if config.grad_clip_norm < 0:
    raise errors.ConfigError(f'optimizer.grad_clip_norm must be >= 0 (0: off), got '
                             f'{config.grad_clip_norm}')


def clip_to_norm(grads, max_norm):
  """``grads`` (a pytree) scaled down to a norm of at most ``max_norm`` (unchanged below)."""
  scale = jnp.minimum(1.0, max_norm / optax.tree.norm(grads))
  return jax.tree.map(lambda g: (g * scale).astype(g.dtype), grads)


def clip_each_parameter(max_norm):
  """A transformation that clips each parameter's gradient to norm ``max_norm`` on its own."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda g: clip_to_norm(g, max_norm), updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def clip_each_loss(term_grads, max_norm):
  """The gradient of a sum of losses from each loss's gradient ({loss: grads}), each clipped to
  norm ``max_norm`` on its own."""
  clipped = [clip_to_norm(g, max_norm) for g in term_grads.values()]
  return jax.tree.map(lambda *g: sum(g[1:], g[0]), *clipped)


def learning_rate_schedule(config, total_steps):
  warmup = min(config.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=config.min_learning_rate)


def weight_decay_schedule(config, total_steps):
  start, end = config.weight_decay, config.weight_decay_end

  def schedule(step):
    frac = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
    return end + (start - end) * 0.5 * (1 + jnp.cos(jnp.pi * frac))
  return schedule


def decay_mask(params):
  """True for parameters that get weight decay."""
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  return flax.traverse_util.unflatten_dict(
      {k: re.search(NO_DECAY_PATTERN, k) is None for k in flat}, sep='/')


def make(config, total_steps):
  """Returns (optax transformation, {name: schedule}) for logging."""
  lr = learning_rate_schedule(config, total_steps)
  wd = weight_decay_schedule(config, total_steps)
  adamw = optax.inject_hyperparams(optax.adamw, static_args=('mask',))(
      learning_rate=lr, b1=config.b1, b2=config.b2, weight_decay=wd, mask=decay_mask)
  parts = []         # 'per_loss' clips in the train step, where the losses are apart
  if config.grad_clip_norm > 0 and config.grad_clip_mode == 'global':
    parts = [optax.clip_by_global_norm(config.grad_clip_norm)]
  elif config.grad_clip_norm > 0 and config.grad_clip_mode == 'per_parameter':
    parts = [clip_each_parameter(config.grad_clip_norm)]
  return optax.chain(*parts, adamw), {'learning_rate': lr, 'weight_decay': wd}

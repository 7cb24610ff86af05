"""AdamW with warm-up + cosine learning rate, scheduled weight decay and a decay mask."""
import re

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

# Parameters that never get weight decay: biases, norms, position embeddings, cls token,
# learned scales (matched against the '/'-joined parameter path).
NO_DECAY_PATTERN = r'(^|/)(bias|scale|pos_embedding|cls|logit_scale)$'


def default_config():
  return ml_collections.ConfigDict(dict(
      learning_rate=1e-3,
      warmup_steps=100,
      min_learning_rate=1e-6,
      b1=0.9,
      b2=0.999,
      weight_decay=0.04,
      weight_decay_end=0.04,   # cosine schedule from weight_decay to this (DINO: 0.04 -> 0.4)
      grad_clip_norm=0.0,      # global-norm clipping, 0 = off
  ))


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
  parts = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 else []
  return optax.chain(*parts, adamw), {'learning_rate': lr, 'weight_decay': wd}

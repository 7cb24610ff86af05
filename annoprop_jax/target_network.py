"""The EMA target network: an exponential moving average of every online parameter.

``rate`` is 1 - momentum (METHOD.md: rate 0.004 = momentum 0.996). With ``schedule='cosine'``
the momentum follows a cosine from ``1 - rate`` to 1 over the optimizer steps ("0.004 -> 0").
"""
import jax
import jax.numpy as jnp
import ml_collections


def default_config():
  return ml_collections.ConfigDict(dict(rate=0.004, schedule='constant'))


def momentum(config, step, total_steps):
  """EMA momentum at optimizer step ``step``."""
  base = 1.0 - config.rate
  if config.schedule == 'constant':
    return jnp.float32(base)
  if config.schedule == 'cosine':
    frac = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  raise ValueError(f'unknown target_network.schedule {config.schedule!r}: constant or cosine')


def update(target_params, online_params, m):
  """target <- m * target + (1 - m) * online, leaf by leaf."""
  return jax.tree.map(lambda t, o: m * t + (1.0 - m) * o, target_params, online_params)

"""The EMA target network: an exponential moving average of every online parameter.

``rate`` is 1 - momentum (docs/method.md: rate 0.004 = momentum 0.996). With ``schedule='cosine'``
the momentum follows a cosine from ``1 - rate`` to 1 over the optimizer steps ("0.004 -> 0").

The target lags the online network by about 1 / rate steps: 0.3% of the paper's ~100k-step
runs, but most of a 1,500-step CPU run, whose target then stays largely its random
initialisation. ``horizon`` > 0 sets that lag as a fraction of the run instead:
rate = 1 / (horizon x total_steps) (the paper's recipe is horizon ~0.0025).
"""
import jax
import jax.numpy as jnp
import ml_collections

from annoprop_jax import errors

SCHEDULES = ('constant', 'cosine')


def default_config():
  return ml_collections.ConfigDict(dict(
      rate=0.004,            # 1 - momentum (unless horizon is set)
      schedule='constant',   # or 'cosine': the rate decays to 0 over the run
      horizon=0.0,           # > 0: rate = 1 / (horizon x total_steps), a lag sized to the run
  ))


def validate(config):
  """One-line errors for the ``target_network`` block."""
  if config.schedule not in SCHEDULES:
    raise errors.ConfigError(f'target_network.schedule must be one of {SCHEDULES}, got '
                             f'{config.schedule!r}')
  if not 0 <= config.rate <= 1:
    raise errors.ConfigError(f'target_network.rate must be in [0, 1], got {config.rate}')
  if config.horizon < 0:
    raise errors.ConfigError(f'target_network.horizon must be >= 0, got {config.horizon}')


def rate(config, total_steps):
  """The starting EMA rate of a run of ``total_steps``."""
  if config.horizon > 0:
    return 1.0 / max(config.horizon * total_steps, 1.0)
  return config.rate


def momentum(config, step, total_steps):
  """EMA momentum at optimizer step ``step``."""
  base = 1.0 - rate(config, total_steps)
  if config.schedule == 'constant':
    return jnp.float32(base)
  frac = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)                  # 'cosine'
  return 1.0 - (1.0 - base) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


def update(target_params, online_params, m):
  """target <- m * target + (1 - m) * online, leaf by leaf."""
  return jax.tree.map(lambda t, o: m * t + (1.0 - m) * o, target_params, online_params)

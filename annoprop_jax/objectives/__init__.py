"""One module per method; each exposes ``default_config()`` and an objective class with pure
``init(rng, batch) -> (params, extras)`` and
``loss(params, target_params, extras, batch, rng, step) -> (loss, (metrics, extras))``."""
from annoprop_jax.objectives import dino
from annoprop_jax.objectives import simclr
from annoprop_jax.objectives import supervised

OBJECTIVES = {
    'simclr': (simclr.default_config, simclr.SimCLR),
    'dino': (dino.default_config, dino.DINO),
    'supervised': (supervised.default_config, supervised.Supervised),
}


def default_config(name):
  if name not in OBJECTIVES:
    raise ValueError(f'unknown objective {name!r}; known: {sorted(OBJECTIVES)}')
  return OBJECTIVES[name][0]()


def build(objective_config, encoder_config):
  return OBJECTIVES[objective_config.name][1](objective_config, encoder_config)

"""One module per method; each exposes ``default_config()`` and an objective class with pure
``init(rng, batch) -> (params, extras)`` and
``loss(params, target_params, extras, batch, rng, step) -> (loss, (metrics, extras))``.
The AB variants (``ab_*``) wrap a base method's config with a ``bootstrap`` block."""
import functools

from annoprop_jax.objectives import ab_variants
from annoprop_jax.objectives import bootstrap
from annoprop_jax.objectives import clip
from annoprop_jax.objectives import dino
from annoprop_jax.objectives import simclr
from annoprop_jax.objectives import supervised

OBJECTIVES = {
    'simclr': (simclr.default_config, simclr.SimCLR),
    'dino': (dino.default_config, dino.DINO),
    'supervised': (supervised.default_config, supervised.Supervised),
    'clip': (clip.default_config, clip.CLIP),
}
AB_BASES = {'ab_simclr': 'simclr', 'ab_dino': 'dino', 'ab_sup': 'supervised', 'ab_clip': 'clip'}


def _ab_default_config(name):
  config = OBJECTIVES[AB_BASES[name]][0]()
  config.name = name
  config.bootstrap = bootstrap.default_config()
  return config


def _ab_objective(config, encoder_config):
  return bootstrap.AnnotationBootstrapping(config, encoder_config,
                                           ab_variants.VARIANTS[config.name](config))


for _name in AB_BASES:
  OBJECTIVES[_name] = (functools.partial(_ab_default_config, _name), _ab_objective)


def default_config(name):
  if name not in OBJECTIVES:
    raise ValueError(f'unknown objective {name!r}; known: {sorted(OBJECTIVES)}')
  return OBJECTIVES[name][0]()


def build(objective_config, encoder_config):
  return OBJECTIVES[objective_config.name][1](objective_config, encoder_config)

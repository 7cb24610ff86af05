"""The objectives: each base method once (``method.Method``), plain or with annotation
bootstrapping. ``METHODS`` is the registry; a method ``NAME`` gives the objective ``NAME`` and
its AB variant (``ab_simclr``, ``ab_dino``, ``ab_sup``, ``ab_clip``; MAE, I-JEPA, SLIP, SiLC have none),
which adds the ``objective.bootstrap`` block (``bootstrap.default_config``) to the method's
config.
"""
from annoprop_jax import errors
from annoprop_jax.objectives import bootstrap
from annoprop_jax.objectives import clip
from annoprop_jax.objectives import dino
from annoprop_jax.objectives import ijepa
from annoprop_jax.objectives import mae
from annoprop_jax.objectives import method as method_lib
from annoprop_jax.objectives import silc
from annoprop_jax.objectives import simclr
from annoprop_jax.objectives import slip
from annoprop_jax.objectives import supervised

METHODS = {
    'simclr': simclr.SimCLR,
    'dino': dino.DINO,
    'supervised': supervised.Supervised,
    'clip': clip.CLIP,
    'mae': mae.MAE,
    'ijepa': ijepa.IJEPA,
    'slip': slip.SLIP,
    'silc': silc.SiLC,
}
AB_VARIANTS = {cls.ab_name: name for name, cls in METHODS.items()   # 'ab_dino' -> 'dino'
               if cls.ab_name}
LossInputs = method_lib.LossInputs     # what an objective's loss reads
NAMES = tuple(METHODS) + tuple(AB_VARIANTS)


def base_method(name):
  """The ``Method`` class of an objective name (the base method of an AB variant)."""
  if name not in NAMES:
    raise errors.ConfigError(f'objective.name {name!r} is unknown; known: {sorted(NAMES)}')
  return METHODS[AB_VARIANTS.get(name, name)]


def is_bootstrapped(name):
  return name in AB_VARIANTS


def streams(name):
  """The streams an objective reads: ('annotation',), and 'bootstrap' with AB."""
  base_method(name)
  return (bootstrap.AnnotationBootstrapping.streams if is_bootstrapped(name)
          else method_lib.PlainObjective.streams)


def default_config(name):
  config = base_method(name).default_config()
  if is_bootstrapped(name):
    config.name = name
    config.bootstrap = bootstrap.default_config()
  return config


def tiny(objective_config):
  """Shrinks an ``objective`` block for the ``:tiny`` config variant."""
  base_method(objective_config.name).tiny(objective_config)
  if is_bootstrapped(objective_config.name):
    objective_config.bootstrap.decoder.update(width=32, depth=1, num_heads=2)


def validate(config):
  """The method's checks of the experiment ``config`` (errors.ConfigError)."""
  base_method(config.objective.name).validate(config)
  if is_bootstrapped(config.objective.name):
    bootstrap.validate(config)


def probe_params(objective_config, choice='auto'):
  """'target' or 'online': the encoder that ``evaluation.params`` = ``choice`` picks."""
  return base_method(objective_config.name).probe_params if choice == 'auto' else choice


def build(objective_config, encoder_config) -> method_lib.Objective:
  """The objective of ``objective_config`` on a ViT of ``encoder_config``."""
  cls = base_method(objective_config.name)
  if is_bootstrapped(objective_config.name):
    decoder = bootstrap.decoder_kwargs(objective_config.bootstrap, encoder_config)
    return bootstrap.AnnotationBootstrapping(cls(objective_config, encoder_config, decoder))
  return method_lib.PlainObjective(cls(objective_config, encoder_config))

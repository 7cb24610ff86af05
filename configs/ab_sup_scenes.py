"""AB_Sup (our extension) in the decoupled setting: supervised base loss on the single-object
``objects`` split, annotation bootstrapping over the class list on multi-object scenes.

  python -m annoprop_jax.main train --config=configs/ab_sup_scenes.py --workdir=workdirs/ab_sup

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed, control=weight0|noaction.
"""
import os

from annoprop_jax import configuration

supervised_objects = configuration.config_module(os.path.join(os.path.dirname(__file__),
                                                              'supervised_objects.py'))


def get_config(variant=''):
  config = supervised_objects.recipe('ab_sup')
  config.data.annotation.batch_size = 64
  config.total_steps = 2000
  config.data.bootstrap.update(dataset='scenes', split='train', batch_size=16)
  config.data.bootstrap.views.update(num=4, size=32, scale=(0.05, 1.0))
  return configuration.apply_variant(config, variant)

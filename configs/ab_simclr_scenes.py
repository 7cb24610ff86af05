"""AB_SimCLR on the embedded scenes dataset, CPU size.

SimCLR's base loss on the annotation stream (64 images x 2 views) plus annotation bootstrapping
on 32 images x 4 views: 256 views per step, as configs/simclr_scenes.py, split half and half.

  python -m annoprop_jax.main train --config=configs/ab_simclr_scenes.py --workdir=workdirs/ab_simclr

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed, control=weight0|noaction.
"""
import os

from annoprop_jax import configuration

simclr_scenes = configuration.config_module(os.path.join(os.path.dirname(__file__),
                                                         'simclr_scenes.py'))


def get_config(variant=''):
  config = simclr_scenes.recipe('ab_simclr')
  config.data.annotation.batch_size = 64
  config.data.bootstrap.update(batch_size=32)
  config.data.bootstrap.views.update(num=4, size=32, scale=(0.05, 1.0))
  config.objective.bootstrap.update(weight=1.0, gamma=0.0, aggregate='max')
  # Only AB reads the EMA here: rate 0.03, constant, chosen on validation by AB_SimCLR's score
  # (RESULTS.md, issue 33: 0.287; 0.01 0.286, 0.1 0.283, level; the target's staleness
  # KL(p_target || p_online) 0.010 nats at 0.01, under 0.0005 at 0.03).
  config.target_network.update(rate=0.03, schedule='constant')
  return configuration.apply_variant(config, variant)

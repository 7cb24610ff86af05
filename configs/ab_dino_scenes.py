"""AB_DINO on the embedded scenes dataset, CPU size (the README's main job).

DINO's base loss on the annotation stream (32 images x 2 views) plus annotation bootstrapping
on the bootstrap stream (16 images x 4 views of RandomResizedCrop 0.05-1, no colour jitter):
128 views per step, the same as configs/dino_scenes.py, split half and half as in the paper.

  python -m annoprop_jax.main train --config=configs/ab_dino_scenes.py --workdir=workdirs/ab_dino

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed, control=weight0|noaction.
"""
import os

from annoprop_jax import configuration

dino_scenes = configuration.config_module(os.path.join(os.path.dirname(__file__),
                                                       'dino_scenes.py'))


def get_config(variant=''):
  config = dino_scenes.recipe('ab_dino')
  config.data.annotation.batch_size = 32
  config.data.bootstrap.update(batch_size=16)
  config.data.bootstrap.views.update(num=4, size=32, scale=(0.05, 1.0))
  # AB weight 0.5 and each loss's gradient clipped on its own: chosen on validation by AB_DINO's
  # score (RESULTS.md, issue 33: per-loss clipping 0.254 against 0.243-0.244 for one clip of
  # the sum, which lets AB's gradient shrink DINO's update; weight 0.5 and 1.0 level).
  config.objective.bootstrap.update(weight=0.5, gamma=0.0, aggregate='max')
  config.optimizer.grad_clip_mode = 'per_loss'
  config.objective.bootstrap.decoder.update(width=128, depth=2, num_heads=4)
  return configuration.apply_variant(config, variant)

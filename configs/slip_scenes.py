"""SLIP on the embedded scenes dataset's captions, CPU size (a baseline of the paper; no AB
variant): CLIP's recipe (configs/clip_scenes.py) plus SimCLR on two more views of each image.

42 images x (1 CLIP view + 2 SimCLR views) = 126 views per step (CLIP's 128 as near as three
views a image allow): the CLIP view with CLIP's mild crops and no colour jitter or flips, the
SimCLR views (the stream's `local_views`) with SimCLR's crops and colour augmentations
(configs/simclr_scenes.py); the losses added at ratio 1.0 (Table 7).

  python -m annoprop_jax.main train --config=configs/slip_scenes.py --workdir=workdirs/slip

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
import os

from annoprop_jax import configuration

clip_scenes = configuration.config_module(os.path.join(os.path.dirname(__file__),
                                                       'clip_scenes.py'))


def get_config(variant=''):
  config = clip_scenes.recipe('slip')
  config.data.annotation.batch_size = 42
  config.data.annotation.local_views.update(num=2, size=32, scale=(0.2, 1.0), flip=True,
                                            colour_jitter=0.4, hue_jitter=0.5, grayscale=0.2)
  return configuration.apply_variant(config, variant)

"""SLIP on the embedded scenes dataset's captions, CPU size (a baseline of the paper; no AB
variant): CLIP's recipe (configs/clip_scenes.py) plus SimCLR on two more views of half the
images, Table 7's shape (CLIP 4,096 images, SimCLR 2,048).

64 images x 1 CLIP view + 32 of them x 2 SimCLR views = 128 views per step, as CLIP's 128: the
CLIP view with CLIP's mild crops and no colour jitter or flips, the SimCLR views (the stream's
`local_views`, read for every other image: objective.simclr_images) with SimCLR's crops and
colour augmentations (configs/simclr_scenes.py); the losses added at ratio 1.0 (Table 7).
Measured (benchmarks/RESULTS.md, the paper's baselines; one seed, 192k views): this shape
0.314 against 0.304 for SimCLR on every image of a 42-image batch (126 views a step).

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
  config.data.annotation.batch_size = 64
  config.objective.simclr_images = 32
  config.data.annotation.local_views.update(num=2, size=32, scale=(0.2, 1.0), flip=True,
                                            colour_jitter=0.4, hue_jitter=0.5, grayscale=0.2)
  return configuration.apply_variant(config, variant)

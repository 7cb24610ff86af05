"""SiLC on the embedded scenes dataset's captions, CPU size (a baseline of the paper; no AB
variant): CLIP's recipe (configs/clip_scenes.py) plus DINO's self-distillation from the EMA
teacher (configs/dino_scenes.py's head and temperatures) on a quarter of the images, ratio 1.0,
EMA rate 0.004 fixed; Table 7's shape (CLIP on every image, DINO on a few: 4,096 and 512).

64 images x 1 CLIP view + 16 of them x (1 more global view of 32 px + 2 local views of 16 px)
= 112 views per step. The global views keep CLIP's augmentations (no colour jitter: captions
name colours; no flips: they say left and right); the local views, seen by DINO's student
only, get DINO's colour jitter and flips. CLIP reads the first global view of every image, the
self-distillation every fourth image's views (objective.distillation_images). Measured
(benchmarks/RESULTS.md, the paper's baselines; one seed, 192k views): this shape 0.292 against
0.280 for both losses on every image of a 32-image batch.

  python -m annoprop_jax.main train --config=configs/silc_scenes.py --workdir=workdirs/silc

Variants (`configs/FILE.py:KEY=VALUE,...`, configuration.VARIANTS): tiny, model=SIZE/PATCH, res,
views, local, batch, steps, seed.
"""
import os

from annoprop_jax import configuration

clip_scenes = configuration.config_module(os.path.join(os.path.dirname(__file__),
                                                       'clip_scenes.py'))


def get_config(variant=''):
  config = clip_scenes.recipe('silc')
  annotation = config.data.annotation
  annotation.batch_size = 64
  annotation.views.update(num=2, scale=(0.4, 1.0))
  annotation.local_views.update(num=2, size=16, scale=(0.05, 0.4), flip=True, colour_jitter=0.4,
                                hue_jitter=0.5, grayscale=0.2)
  config.objective.update(num_prototypes=256, teacher_temperature=0.04, head_hidden_dim=512,
                          head_bottleneck_dim=128, freeze_prototypes_steps=100,
                          distillation_images=16)
  return configuration.apply_variant(config, variant)
